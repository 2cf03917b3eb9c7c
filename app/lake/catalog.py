"""The lake catalog: per dataset, metadata a reader can trust.

Two kinds of dataset live under the lake root:

* ``streams/<stream>`` -- day partitions written by the stream sink; described by listing
  (partitions, files, bytes) and the schema in a file's Parquet footer.
* ``tables/<table>`` -- snapshot versions ``version=v<N>/``; described by the catalog document
  ``_txlake/catalog/tables/<table>.json`` that the snapshot publisher rewrites (atomically) from
  the warehouse's ``txlake_snapshot_versions`` after each publish or expiry, plus a listing.
  The pointer ``tables/<table>/_latest`` names the newest complete, published version.

On S3 a version directory appears object by object; a reader that wants a complete version
follows ``_latest`` (or the catalog), whose file list is written only after every file is in place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from app.lake.compaction import is_compacted_file
from app.lake.files import LakeFile, list_dirs, list_tree, native
from app.lake.storage import CONTROL_DIR, LakeStorage

__all__ = [
    "catalog_is_current",
    "catalog_path",
    "describe_dataset",
    "latest_pointer_path",
    "list_datasets",
    "read_latest",
    "schema_fields",
    "version_dir",
    "write_table_catalog",
]

KINDS = ("streams", "tables")


def version_dir(table: str, version: int) -> str:
    return f"tables/{table}/version=v{version}"


def latest_pointer_path(table: str) -> str:
    return f"tables/{table}/_latest"


def catalog_path(dataset: str) -> str:
    return f"{CONTROL_DIR}/catalog/{dataset}.json"


def schema_fields(schema: pa.Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _write_json(storage: LakeStorage, path: str, document: dict[str, Any]) -> None:
    storage.makedirs(path.rsplit("/", 1)[0])
    storage.write_atomic(path, json.dumps(document, indent=2, sort_keys=True, default=str).encode())


def _read_json(storage: LakeStorage, path: str) -> dict[str, Any] | None:
    data = storage.read(path)
    return None if data is None else json.loads(data)


def write_table_catalog(storage: LakeStorage, table: str, schema: pa.Schema, versions: Iterable[Any]) -> dict[str, Any]:
    """Rewrite ``tables/<table>``'s catalog document and ``_latest`` pointer from its version rows.

    ``versions`` are :class:`app.snapshots.registry.VersionInfo` rows. Only ``complete`` and
    published versions count as readable; the newest of them is ``latest``. Returns the document.
    """
    entries, latest = [], None
    for info in versions:
        entry = {k: v for k, v in info.to_json().items() if k not in ("owner", "lake_staging_path", "table")}
        if info.status == "complete" and info.published:
            files = list_tree(storage, info.lake_path)
            entry["files"] = [f.path for f in files]
            entry["file_count"] = len(files)
            entry["bytes"] = sum(f.size for f in files)
            latest = entry
        entries.append(entry)
    document = {
        "dataset": f"tables/{table}",
        "kind": "table",
        "schema": schema_fields(schema),
        "versions": entries,
        "latest_version": None if latest is None else latest["version"],
        "updated_at": _now(),
    }
    _write_json(storage, catalog_path(f"tables/{table}"), document)
    pointer = latest_pointer_path(table)
    if latest is None:
        storage.delete(pointer)
    else:
        _write_json(
            storage,
            pointer,
            {
                "table": table,
                "version": latest["version"],
                "path": latest["lake_path"],
                "files": latest["files"],
                "row_count": latest["row_count"],
                "snapshot_date": latest["snapshot_date"],
                "created_at": latest["created_at"],
                "source_offsets": latest["source_offsets"],
            },
        )
    return document


def _fingerprint(entries: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["version"], e["status"], e["published_at"], e["lake_path"]) for e in entries]


def catalog_is_current(storage: LakeStorage, table: str, versions: Iterable[Any]) -> bool:
    """Whether the stored catalog of ``table`` already shows these version rows (states and paths)."""
    stored = _read_json(storage, catalog_path(f"tables/{table}"))
    if stored is None:
        return False
    return _fingerprint(stored["versions"]) == _fingerprint(v.to_json() for v in versions)


def read_latest(storage: LakeStorage, table: str) -> dict[str, Any] | None:
    """The ``_latest`` pointer of a table (``None``: no readable version yet)."""
    return _read_json(storage, latest_pointer_path(table))


def _partition_of(dataset: str, path: str) -> str:
    """``year=2026/month=11/day=25`` (or ``version=v3``) of a file under ``dataset``."""
    inner = path[len(dataset) + 1 :].split("/")[:-1]
    return "/".join(inner) or "."


def _partitions(dataset: str, files: list[LakeFile]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for f in files:
        part = out.setdefault(_partition_of(dataset, f.path), {"files": 0, "bytes": 0})
        part["files"] += 1
        part["bytes"] += f.size
    return out


def _compaction_records(storage: LakeStorage, dataset: str) -> dict[str, dict[str, Any]]:
    """``{"year=…/month=…/day=…": last run}`` from the compaction day records of a stream dataset."""
    prefix = f"{CONTROL_DIR}/compaction/days/{dataset}"
    records = {}
    for entry in list_tree(storage, prefix):
        if entry.path.endswith(".json"):
            data = _read_json(storage, entry.path)
            if data and data.get("last"):
                records[entry.path[len(prefix) + 1:-len(".json")]] = data["last"]
    return records


def _footer_schema(storage: LakeStorage, path: str) -> list[dict[str, Any]]:
    filesystem, source = native(storage, path)
    with filesystem.open_input_file(source) as handle:
        return schema_fields(pq.read_schema(handle))


def describe_dataset(storage: LakeStorage, dataset: str) -> dict[str, Any]:
    """Everything known about ``streams/<name>`` or ``tables/<name>``; KeyError if it does not exist."""
    kind = dataset.split("/", 1)[0]
    if kind not in KINDS or "/" not in dataset:
        raise KeyError(f"datasets are streams/<name> or tables/<name>, not {dataset!r}")
    files = [f for f in list_tree(storage, dataset) if f.path.endswith(".parquet")]
    stored = _read_json(storage, catalog_path(dataset))
    if not files and stored is None:
        raise KeyError(f"no dataset {dataset!r} in {storage.uri}")
    description: dict[str, Any] = {
        "dataset": dataset,
        "kind": "stream" if kind == "streams" else "table",
        "file_count": len(files),
        "bytes": sum(f.size for f in files),
    }
    if kind == "streams":
        description["schema"] = _footer_schema(storage, files[-1].path) if files else []
        description["partitions"] = partitions = _partitions(dataset, files)
        for f in files:
            if is_compacted_file(f.path.rsplit("/", 1)[1]):
                part = partitions[_partition_of(dataset, f.path)]
                part["compacted_files"] = part.get("compacted_files", 0) + 1
        for day, last in _compaction_records(storage, dataset).items():
            if day in partitions:
                partitions[day]["last_compaction"] = {
                    k: last.get(k) for k in ("generation", "finished_at", "rows", "before", "after", "replaced_files")
                }
        description["compacted_days"] = sum(1 for p in partitions.values() if p.get("compacted_files"))
    else:
        stored = stored or {}
        description["schema"] = stored.get("schema") or (_footer_schema(storage, files[-1].path) if files else [])
        description["versions"] = stored.get("versions", [])
        description["latest_version"] = stored.get("latest_version")
        description["catalog_updated_at"] = stored.get("updated_at")
        description["version_dirs"] = _partitions(dataset, files)
    return description


def list_datasets(
    storage: LakeStorage, describe: Callable[[LakeStorage, str], dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """A one-line summary of every dataset in the lake (``describe``: how one is described, default a listing)."""
    describe = describe or describe_dataset
    out = []
    for kind in KINDS:
        for name in list_dirs(storage, kind):
            dataset = f"{kind}/{name}"
            try:
                d = describe(storage, dataset)
            except KeyError:
                continue
            summary = {k: d[k] for k in ("dataset", "kind", "file_count", "bytes")}
            if kind == "streams":
                summary["partitions"] = len(d["partitions"])
                summary["compacted_days"] = d["compacted_days"]
            else:
                summary["versions"] = sum(1 for v in d["versions"] if v.get("status") == "complete")
                summary["latest_version"] = d["latest_version"]
            out.append(summary)
    return out
