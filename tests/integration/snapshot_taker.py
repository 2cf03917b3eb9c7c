"""A snapshot taker in its own process, for the SIGKILL test: stages rows, then hangs before the commit.

    python -m tests.integration.snapshot_taker <table>

Settings come from the TXLAKE_* environment. Prints ``staged <version>`` once the first Parquet
file of the version is written, then waits for more rows that never come.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pyarrow as pa

from app.settings import Settings
from app.snapshots import Snapshotter, table_spec


async def main(table: str) -> None:
    spec = table_spec(table)
    snapshotter = Snapshotter(Settings())

    def batch(first: int) -> pa.RecordBatch:
        keys = [f"k{i}" for i in range(first, first + 50)]
        columns = [pa.array(keys) if f.name in spec.key else pa.nulls(50, f.type) for f in spec.schema]
        return pa.RecordBatch.from_arrays(columns, schema=spec.schema)

    async def rows() -> AsyncIterator[pa.RecordBatch]:
        yield batch(0)
        yield batch(50)
        staging = [v for v in await snapshotter.versions(table) if v.status == "building"]
        print(f"staged {staging[-1].version}", flush=True)
        await asyncio.Event().wait()

    await snapshotter.create_version(table, rows(), source={"kind": "test"})


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
