"""A snapshot taker in its own process, for the SIGKILL test: stages rows, then hangs before the commit.

    python -m tests.integration.snapshot_taker <table> staging|commit

Settings come from the TXLAKE_* environment. ``staging``: prints ``staged <version>`` once
Parquet files of the version are written, then waits for more rows that never come. ``commit``:
all rows are staged; inside the commit transaction, after the first chunk of fact rows is
inserted (not committed), prints ``committing <version>`` and waits forever.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pyarrow as pa

import app.snapshots.commit as commit_module
from app.core.settings import Settings
from app.snapshots import Snapshotter, table_spec


async def main(table: str, phase: str) -> None:
    spec = table_spec(table)
    snapshotter = Snapshotter(Settings())

    def batch(first: int) -> pa.RecordBatch:
        keys = [f"k{i}" for i in range(first, first + 50)]
        columns = [pa.array(keys) if f.name in spec.key_columns else pa.nulls(50, f.type) for f in spec.arrow_schema]
        return pa.RecordBatch.from_arrays(columns, schema=spec.arrow_schema)

    async def rows() -> AsyncIterator[pa.RecordBatch]:
        yield batch(0)
        yield batch(50)
        if phase == "staging":
            building = [v for v in await snapshotter.versions(table) if v.status == "building"]
            print(f"staged {building[-1].version}", flush=True)
            await asyncio.Event().wait()

    original = commit_module.insert_inferred_members
    chunks = 0

    async def hang_after_first_chunk(cursor, spec, batch) -> None:
        nonlocal chunks
        chunks += 1
        if chunks == 2:  # the first chunk's fact rows are in the open transaction
            building = [v for v in await snapshotter.versions(table) if v.status == "building"]
            print(f"committing {building[-1].version}", flush=True)
            await asyncio.Event().wait()
        await original(cursor, spec, batch)

    commit_module.insert_inferred_members = hang_after_first_chunk
    await snapshotter.create_version(table, rows(), source={"kind": "test"})


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
