"""``txlake lake ls`` and ``txlake lake describe <dataset>``: the catalog, read from the lake alone."""

from __future__ import annotations

import argparse
import json
from typing import Any

from app.core.settings import Settings
from app.lake.catalog import describe_dataset, list_datasets
from app.lake.render import human_bytes, table
from app.lake.storage import open_lake_storage

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add the ``lake`` subcommand to the CLI's subparsers."""
    lake = commands.add_parser("lake", help="the lake's catalog: datasets, versions, partitions, files")
    actions = lake.add_subparsers(dest="lake_command", required=True)
    ls = actions.add_parser("ls", help="every dataset with its files and bytes")
    ls.add_argument("--json", action="store_true")
    describe = actions.add_parser("describe", help="schema, versions or day partitions of one dataset")
    describe.add_argument("dataset", help="streams/<stream> or tables/<table>")
    describe.add_argument("--json", action="store_true")
    lake.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    storage = open_lake_storage(settings.lake)
    if args.lake_command == "ls":
        datasets = list_datasets(storage)
        if args.json:
            print(json.dumps(datasets, indent=2))
            return 0
        rows = [
            (
                d["dataset"],
                d["kind"],
                d["file_count"],
                human_bytes(d["bytes"]),
                f"{d['partitions']} day partitions" if d["kind"] == "stream" else f"{d['versions']} versions",
                d.get("latest_version"),
            )
            for d in datasets
        ]
        print(table(("dataset", "kind", "files", "size", "contents", "latest"), rows))
        print(f"{len(datasets)} datasets in {storage.uri}")
        return 0
    try:
        description = describe_dataset(storage, args.dataset)
    except KeyError as exc:
        print(f"txlake: {exc.args[0]}")
        return 1
    if args.json:
        print(json.dumps(description, indent=2, default=str))
        return 0
    _print_description(description)
    return 0


def _print_description(d: dict[str, Any]) -> None:
    print(f"{d['dataset']} ({d['kind']}): {d['file_count']} files, {human_bytes(d['bytes'])}")
    print("\nschema")
    print(table(("column", "type", "nullable"), [(f["name"], f["type"], f["nullable"]) for f in d["schema"]]))
    if d["kind"] == "stream":
        print("\nday partitions")
        rows = [(p, v["files"], human_bytes(v["bytes"])) for p, v in sorted(d["partitions"].items())]
        print(table(("partition", "files", "size"), rows))
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
