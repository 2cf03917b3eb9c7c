"""``txlake snapshot take|ls|recover``: snapshot versions from the command line, no worker needed."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

from app.core.settings import Settings
from app.lake.render import table
from app.snapshots.errors import SnapshotError
from app.snapshots.tables import TABLES

if TYPE_CHECKING:
    from app.snapshots.registry import VersionInfo

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add the ``snapshot`` subcommand to the CLI's subparsers."""
    snapshot = commands.add_parser("snapshot", help="take and list snapshot versions of the tables")
    actions = snapshot.add_subparsers(dest="snapshot_command", required=True)
    take = actions.add_parser("take", help="take a version of a table's live state now")
    which = take.add_mutually_exclusive_group(required=True)
    which.add_argument("table", nargs="?", choices=sorted(TABLES), help="the table")
    which.add_argument("--all", action="store_true", help="every table")
    take.add_argument("--json", action="store_true", help="machine-readable output")
    ls = actions.add_parser("ls", help="list versions (status, rows, source offsets)")
    ls.add_argument("table", nargs="?", choices=sorted(TABLES), help="only this table (default: every table)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    actions.add_parser("recover", help="fail abandoned versions, publish committed ones, apply retention")
    snapshot.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_run(settings, args))


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    from app.snapshots.service import Snapshotter  # aiomysql, pyarrow: only when the command runs

    snapshotter = Snapshotter(settings)
    if args.snapshot_command == "recover":
        report = await snapshotter.maintain()
        print(f"failed {report.failed or 'none'}; published {report.published or 'none'}; cleaned {report.cleaned or 'none'}")
        return 0
    if args.snapshot_command == "ls":
        _print(await snapshotter.versions(args.table), args.json)
        return 0
    taken, status = [], 0
    for name in sorted(TABLES) if args.all else [args.table]:
        try:
            taken.append(await snapshotter.take_live_version(name, trigger="manual"))
        except SnapshotError as exc:
            print(f"txlake: {exc}", file=sys.stderr)
            status = 1
    _print(taken, args.json)
    return status


def _print(versions: list[VersionInfo], as_json: bool) -> None:
    if as_json:
        print(json.dumps([v.to_json() for v in versions], indent=2))
        return
    rows = [
        (
            v.table,
            f"v{v.version}",
            v.status,
            v.triggered_by,
            v.snapshot_date,
            v.row_count,
            v.lake_path,
            json.dumps(v.source_offsets, separators=(",", ":")) if v.source_offsets else None,
        )
        for v in versions
    ]
    print(table(("table", "version", "status", "trigger", "date", "rows", "lake", "source offsets"), rows))
