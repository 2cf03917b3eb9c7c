"""``txlake lake …``: the catalog (``ls``, ``describe``, ``files``) and maintenance (``compact``, ``vacuum``).

``ls``/``describe``/``files`` read the lake alone. ``compact`` and ``vacuum`` go through the lake
format's :class:`~app.lake.maintenance.LakeMaintenance`, each unit of work under its lease in the
warehouse (``txlake_lake_leases``), so they can run beside the workers' schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.core.errors import ConfigurationError
from app.core.settings import Settings
from app.lake.render import human_bytes, table

if TYPE_CHECKING:
    from app.lake.compaction import DayResult
    from app.lake.sink import DayPartition
    from app.lake.storage import LakeStorage

# The lake's modules (pyarrow, pandas, polars) are imported by the commands that use them, not
# here: building the CLI's parser imports this module, and `txlake --help` stays quick.

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add the ``lake`` subcommand to the CLI's subparsers."""
    lake = commands.add_parser("lake", help="the lake's catalog: datasets, versions, partitions, files")
    actions = lake.add_subparsers(dest="lake_command", required=True)
    ls = actions.add_parser("ls", help="every dataset with its files and bytes")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    describe = actions.add_parser("describe", help="schema, versions or day partitions of one dataset")
    describe.add_argument("dataset", help="streams/<stream> or tables/<table>")
    describe.add_argument("--json", action="store_true", help="machine-readable output")
    files = actions.add_parser(
        "files", help="the files (and row filter) a consistent read of a stream dataset uses: all of a batch or none"
    )
    files.add_argument("dataset", help="streams/<stream> (or just <stream>)")
    files.add_argument("--day", action="append", type=_day, default=None, help="only this day (YYYY-MM-DD); repeatable")
    shape = files.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="the whole view: files, positions, filter")
    shape.add_argument("--sql", action="store_true", help="a DuckDB query that reads exactly this view")
    compact = actions.add_parser("compact", help="rewrite day partitions with many small files into sorted files of the target size")
    compact.add_argument("dataset", nargs="?", help="streams/<stream> (or just <stream>); default: every stream dataset")
    compact.add_argument("--day", type=_day, default=None, help="only this day (YYYY-MM-DD)")
    compact.add_argument("--closed", action="store_true",
                         help="only closed days (lake.compaction.close_idle_ms / close_lateness_ms): what the worker's schedule runs")
    compact.add_argument("--vacuum", action="store_true", help="vacuum the datasets afterwards")
    compact.add_argument("--json", action="store_true", help="one JSON result per line")
    vacuum = actions.add_parser("vacuum", help="finish interrupted compactions and remove what crashed writers left behind")
    vacuum.add_argument("dataset", nargs="?", help="streams/<stream> (or just <stream>); default: every stream dataset")
    vacuum.add_argument("--json", action="store_true", help="one JSON result per line")
    lake.set_defaults(run=run)


def _day(text: str) -> DayPartition:
    from app.lake.sink import DayPartition

    try:
        return DayPartition.parse(text)
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {text!r}") from None


def _dataset(name: str | None) -> str | None:
    if name is None or "/" in name:
        return name
    return f"streams/{name}"


def require_lake(storage: LakeStorage) -> None:
    """Raise :class:`ConfigurationError` unless the lake root exists (a local directory, an S3 bucket).

    A reader pointed at nothing must say so: an empty listing would look like an empty lake.
    """
    from app.lake.storage import LocalStorage, ObjectStorage

    if isinstance(storage, LocalStorage):
        if not storage.root.is_dir():
            raise ConfigurationError(
                f"the lake root {storage.root} does not exist: check TXLAKE_LAKE__ROOT (is it the worker's?), "
                f"or land something first"
            )
    elif isinstance(storage, ObjectStorage):
        try:
            storage.initialize()  # checks the bucket
        except FileNotFoundError as exc:
            raise ConfigurationError(f"the lake root {storage.uri}: {exc}: check TXLAKE_LAKE__ROOT") from None


def run(settings: Settings, args: argparse.Namespace) -> int:
    from app.lake.catalog import list_datasets
    from app.lake.storage import open_lake_storage

    if args.lake_command in ("compact", "vacuum"):
        return _maintain(settings, args)
    storage = open_lake_storage(settings.lake)
    require_lake(storage)
    if args.lake_command == "files" and settings.lake.format == "delta":
        return _delta_files(settings, args)
    if args.lake_command == "files":
        from app.lake.view import stream_view

        view = stream_view(storage, _dataset(args.dataset) or "", set(args.day) if args.day else None)
        if args.json:
            print(json.dumps(view.to_json(storage), indent=2))
        elif args.sql:
            print(view.sql(storage))
        else:
            print("\n".join(view.uris(storage)))
            if view.pending:
                print(f"# rows above {view.sql_filter()!r} are not visible yet (a batch still being moved in)",
                      file=sys.stderr)
        return 0
    describe = _describer(settings)
    if args.lake_command == "ls":
        datasets = list_datasets(storage, describe)
        if args.json:
            print(json.dumps(datasets, indent=2))
            return 0
        rows = [
            (
                d["dataset"],
                d["kind"],
                d["file_count"],
                human_bytes(d["bytes"]),
                f"{d['partitions']} day partitions ({d['compacted_days']} compacted)" if d["kind"] == "stream"
                else f"{d['versions']} versions",
                d.get("latest_version"),
            )
            for d in datasets
        ]
        print(table(("dataset", "kind", "files", "size", "contents", "latest"), rows))
        print(f"{len(datasets)} datasets in {storage.uri}")
        return 0
    try:
        description = describe(storage, _dataset(args.dataset) or "")
    except KeyError as exc:
        print(f"txlake: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(description, indent=2, default=str))
        return 0
    _print_description(description)
    return 0


def _delta_files(settings: Settings, args: argparse.Namespace) -> int:
    """``lake files`` of a Delta table: the data files of its latest version (all of a commit or none)."""
    from app.lake.delta import open_table

    dataset = _dataset(args.dataset) or ""
    table = open_table(settings.lake, dataset)
    if table is None:
        print(f"txlake: no Delta table {dataset!r} under {settings.lake.root}", file=sys.stderr)
        return 1
    days = {(f"{d.year:04d}", f"{d.month:02d}", f"{d.day:02d}") for d in args.day} if args.day else None
    uris = [
        uri for uri in table.file_uris()
        if days is None or tuple(part.split("=", 1)[1] for part in uri.split("/")[-4:-1]) in days
    ]
    if args.json:
        print(json.dumps({"dataset": dataset, "format": "delta", "version": table.version(), "files": uris}, indent=2))
    elif args.sql:
        listed = ", ".join(f"'{uri}'" for uri in uris)
        query = f"SELECT * FROM read_parquet([{listed}], hive_partitioning = true)"  # noqa: S608 - printed, not run
        print(f"{query}  -- version {table.version()} of {dataset}")
    else:
        print("\n".join(uris))
    return 0


def _describer(settings: Settings) -> Callable[[LakeStorage, str], dict[str, Any]]:
    """How a dataset is described: a listing (hive), or a stream dataset's Delta log (lake.format = delta)."""
    from app.lake.catalog import describe_dataset

    if settings.lake.format != "delta":
        return describe_dataset
    from app.core.feeds import load_feeds
    from app.lake.delta_catalog import describe_delta_dataset

    topics: dict[str, list[str]] = {}
    for feed in load_feeds(settings):
        topics.setdefault(feed.dataset, []).append(feed.topic)

    def describe(storage: LakeStorage, dataset: str) -> dict[str, Any]:
        if dataset.startswith("streams/"):
            return describe_delta_dataset(settings.lake, dataset, topics.get(dataset, ()))
        return describe_dataset(storage, dataset)

    return describe


def _files(count: int, size: int) -> str:
    return f"{count} file{'' if count == 1 else 's'} {human_bytes(size)}"


def _maintain(settings: Settings, args: argparse.Namespace) -> int:
    from app.lake.formats import maintenance_for
    from app.lake.maintenance import run_maintenance

    maintenance = maintenance_for(settings)
    compact = args.lake_command == "compact"

    def show(result: DayResult) -> None:
        if args.json:
            print(json.dumps({"kind": "compact", **result.to_json()}), flush=True)
            return
        change = f"{_files(result.files_before, result.bytes_before)} -> {_files(result.files_after, result.bytes_after)}"
        detail = f"{change}, {result.rows:,} rows, {result.seconds:.2f} s" if result.status == "compacted" else result.reason
        print(f"{result.dataset}  {result.day}  {result.status:<9}  {detail}", flush=True)

    def show_vacuum(dataset: str, counts: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps({"kind": "vacuum", "dataset": dataset, **counts}), flush=True)
        else:
            print(f"{dataset}  vacuum  " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()), flush=True)

    report = asyncio.run(run_maintenance(
        settings, maintenance, dataset=_dataset(args.dataset), day=getattr(args, "day", None),
        closed_only=getattr(args, "closed", False), compact=compact, vacuum=not compact or args.vacuum,
        on_result=show, on_vacuum=show_vacuum,
    ))
    if not args.json and compact:
        done = [r for r in report.results if r.status == "compacted"]
        rows = sum(r.rows for r in done)
        print(f"{len(done)} day(s) compacted, {rows:,} rows; {sum(r.status == 'busy' for r in report.results)} busy, "
              f"{sum(r.status == 'failed' for r in report.results)} failed")
    return 0 if report.ok else 1


def _print_description(d: dict[str, Any]) -> None:
    print(f"{d['dataset']} ({d['kind']}): {d['file_count']} files, {human_bytes(d['bytes'])}")
    if d.get("format") == "delta":
        positions = ", ".join(f"{k}@{v}" for k, v in d["positions"].items()) or "-"
        print(f"Delta table version {d['version']}, {d['rows']:,} rows, checkpoint every {d['checkpoint_interval']} commits")
        print(f"Kafka positions (app transactions): {positions}")
    print("\nschema")
    print(table(("column", "type", "nullable"), [(f["name"], f["type"], f["nullable"]) for f in d["schema"]]))
    if d["kind"] == "stream":
        print("\nday partitions (last compaction: files and size before -> after)")
        rows = []
        for p, v in sorted(d["partitions"].items()):
            last = v.get("last_compaction")
            change = None
            if last:
                before, after = last["before"], last["after"]
                change = f"{_files(before['files'], before['bytes'])} -> {_files(after['files'], after['bytes'])}"
            rows.append((p, v["files"], v.get("compacted_files", 0), human_bytes(v["bytes"]),
                         last["finished_at"] if last else None, change))
        print(table(("partition", "files", "compacted", "size", "last compacted (UTC)", "before -> after"), rows))
        return
    print(f"\nversions (latest complete: {d['latest_version'] or '-'})")
    rows = [
        (
            f"v{v['version']}",
            v["status"],
            v["triggered_by"],
            v["snapshot_date"],
            v["created_at"],
            v["row_count"],
            v.get("file_count"),
            human_bytes(v.get("bytes")),
            json.dumps(v["source_offsets"], separators=(",", ":")) if v["source_offsets"] else None,
        )
        for v in d["versions"]
    ]
    print(table(("version", "status", "trigger", "date", "created at (UTC)", "rows", "files", "size", "source offsets"), rows))
