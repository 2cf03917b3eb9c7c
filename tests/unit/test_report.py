"""``txlake report``'s rows per day read from a local lake (DuckDB over the hive partitions)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from app.core.feeds import load_feeds
from app.core.settings import LakeSettings, Settings
from app.ops.report import lake_rows_per_day


def test_rows_per_day_in_months_and_days_written_with_a_leading_zero(tmp_path):
    # DuckDB types month=02 as the text '02' (it keeps the leading zero) but month=11 as a number:
    # the report printed a demo dated in February with a ValueError.
    feed = load_feeds(Settings())[0]
    for day, rows in (("month=02/day=05", 3), ("month=02/day=28", 2)):
        directory = tmp_path / feed.dataset / "year=2026" / day
        directory.mkdir(parents=True)
        pq.write_table(pa.table({"transaction_id": [f"t{i}" for i in range(rows)]}), directory / "part-0.parquet")
    assert lake_rows_per_day(LakeSettings(root=tmp_path), feed) == [(2026, 2, 5, 3, 1), (2026, 2, 28, 2, 1)]
