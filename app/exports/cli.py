"""``txlake export``: run one export from a shell or cron, without a worker.

    txlake export table payment_method_totals
    txlake export stream transaction_stream --from-day 2026-11-20 --to-day 2026-11-22

Progress goes to stderr (a one-line bar on a terminal, or ``--progress json``: one JSON status
per line on stdout, how the worker follows the subprocess it starts). Exit status: 0 succeeded,
1 failed, 2 bad arguments, 75 another export of the dataset is running, 130 cancelled
(SIGTERM/SIGINT before anything became visible).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import uuid
from datetime import date

from pydantic import ValidationError

from app.core.settings import Settings
from app.exports.request import ExportRequest
from app.exports.status import ExportStatus

__all__ = ["register"]

EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 130}
EXIT_BUSY = 75


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("export", help="re-export a ksqlDB table (new version) or stream days")
    parser.add_argument("kind", choices=("table", "stream"), help="a table (a new snapshot version) or stream days")
    parser.add_argument("source", help="ksqlDB table or stream name")
    parser.add_argument("--from-day", type=date.fromisoformat, help="first UTC day (streams)")
    parser.add_argument("--to-day", type=date.fromisoformat, help="last UTC day, included (streams)")
    parser.add_argument("--id", default=None, help="export id (default: a new uuid)")
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                        help="progress on stderr as a one-line bar (default), JSON lines on stdout, or none")
    parser.set_defaults(run=cmd_export)


def _bar(status: ExportStatus) -> None:
    line = (f"\r{status.source} [{status.phase}] {status.rows:,} rows  {status.bytes / 1e6:,.1f} MB  "
            f"{status.elapsed_s:,.1f}s")
    print(line.ljust(72), end="", file=sys.stderr, flush=True)


def _json_line(status: ExportStatus) -> None:
    print(json.dumps(status.to_json()), flush=True)


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    day_range = None
    if args.from_day or args.to_day:
        day_range = {"from_day": args.from_day, "to_day": args.to_day or args.from_day}
    try:
        request = ExportRequest(source=args.source, kind=args.kind, range=day_range)
    except ValidationError as exc:
        print(f"txlake export: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    from app.exports.run import run_export  # pyarrow, httpx: only when an export runs (txlake --help stays quick)

    export_id = args.id or uuid.uuid4().hex
    show = {"bar": _bar, "json": _json_line, "none": lambda status: None}[args.progress]

    async def main() -> ExportStatus:
        cancel = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, cancel.set)
        return await run_export(settings, request, export_id, show, cancel)

    status = asyncio.run(main())
    if args.progress == "bar":
        print(file=sys.stderr)
    if status.state != "succeeded":
        print(f"txlake export: {status.state}: {'; '.join(status.errors)}", file=sys.stderr)
    elif args.progress != "json":
        print(json.dumps(status.result, indent=2, default=str))
    if status.phase == "busy":
        return EXIT_BUSY
    return EXIT_CODES[status.state]
