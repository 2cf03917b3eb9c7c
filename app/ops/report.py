"""``txlake report``: where the data landed -- rows per stream and day, a query over the lake, a warehouse query.

A local lake is read with DuckDB; an S3 lake with :mod:`pyarrow.dataset` over the lake's own
S3 settings (DuckDB would need its httpfs extension, downloaded at run time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pymysql

from app.core.feeds import Feed
from app.core.settings import LakeSettings, Settings

__all__ = ["lake_glob", "lake_rows_per_day", "print_report"]


def lake_glob(root: Path | str, feed: Feed) -> str:
    """The glob a reader uses for a feed's dataset (hive partitioning on)."""
    if isinstance(root, str) and root.lower().startswith("s3://"):
        return f"{root.rstrip('/')}/{feed.dataset}/**/*.parquet"
    return str(Path(root).resolve() / feed.dataset / "**" / "*.parquet")


def _s3_dataset(lake: LakeSettings, feed: Feed) -> Any:
    """The feed's dataset over S3 (hive partitioning) or its Delta table's version, or None when it holds no file yet."""
    import pyarrow.dataset as ds

    from app.lake.delta import open_table, to_dataset
    from app.lake.storage import ObjectStorage, open_lake_storage

    if lake.format == "delta":  # never a glob: it would also read replaced and uncommitted files
        table = open_table(lake, feed.dataset)
        dataset = None if table is None else to_dataset(table)
        return dataset if dataset is not None and dataset.files else None

    storage = open_lake_storage(lake)
    assert isinstance(storage, ObjectStorage)
    try:
        dataset = ds.dataset(
            storage.key(feed.dataset), filesystem=storage.filesystem, format="parquet", partitioning="hive"
        )
    except FileNotFoundError:
        return None
    return dataset if dataset.files else None


def lake_rows_per_day(lake: LakeSettings, feed: Feed, con: Any = None) -> list[tuple[int, int, int, int, int]]:
    """``(year, month, day, rows, files)`` of a feed's dataset, by day; empty when nothing landed yet."""
    if lake.is_s3 or lake.format == "delta":
        import pyarrow.dataset as ds

        dataset = _s3_dataset(lake, feed)
        if dataset is None:
            return []
        days: dict[tuple[int, int, int], list[int]] = {}
        for fragment in dataset.get_fragments():  # row counts come from the Parquet footers
            keys = ds.get_partition_keys(fragment.partition_expression)
            entry = days.setdefault((int(keys["year"]), int(keys["month"]), int(keys["day"])), [0, 0])
            entry[0] += fragment.count_rows()
            entry[1] += 1
        return [(*day, rows, files) for day, (rows, files) in sorted(days.items())]

    root = Path(lake.root)
    if not list((root / feed.dataset).glob("year=*/month=*/day=*/*.parquet")):
        return []
    if con is None:
        import duckdb

        con = duckdb.connect()
    return con.execute(
        # DuckDB types a hive key by its values: month=02 stays the text '02' (leading zero), month=11 a number.
        f"SELECT CAST(year AS INTEGER), CAST(month AS INTEGER), CAST(day AS INTEGER), count(*) AS rows, "
        f"count(DISTINCT filename) AS files "
        f"FROM read_parquet('{lake_glob(root, feed)}', hive_partitioning = true, filename = true) "
        f"GROUP BY ALL ORDER BY ALL"
    ).fetchall()


def _s3_transactions_summary(lake: LakeSettings, feed: Feed) -> str | None:
    """Transactions by currency over an S3 lake (the DuckDB query of a local lake, in pyarrow)."""
    dataset = _s3_dataset(lake, feed)
    if dataset is None:
        return None
    table = dataset.to_table(columns=["currency", "amount", "event_timestamp"])
    frame = (
        table.group_by("currency")
        .aggregate([("amount", "count"), ("amount", "sum"), ("event_timestamp", "min"), ("event_timestamp", "max")])
        .to_pandas()
        .rename(
            columns={
                "amount_count": "transactions",
                "amount_sum": "amount",
                "event_timestamp_min": "first_event",
                "event_timestamp_max": "last_event",
            }
        )
    )
    frame["amount"] = frame["amount"].astype(float).round(2)
    frame = frame[["currency", "transactions", "amount", "first_event", "last_event"]]
    return frame.sort_values("transactions", ascending=False).to_string(index=False)


def print_report(settings: Settings, feeds: tuple[Feed, ...]) -> None:
    lake = settings.lake
    con = None
    glob_readable = not lake.is_s3 and lake.format == "hive"
    if glob_readable:
        try:
            import duckdb
        except ImportError as exc:  # duckdb is a dev/demo extra, not a worker dependency
            raise SystemExit("txlake report needs duckdb: pip install 'txlake[dev]'") from exc
        con = duckdb.connect()

    root = lake.root
    print(f"== Lake: {root if lake.is_s3 else Path(root).resolve()}")
    for feed in (feed for feed in feeds if not feed.is_table):
        rows = lake_rows_per_day(lake, feed, con)
        if not rows:
            print(f"-- {feed.dataset}: no files yet")
            continue
        total = sum(r[3] for r in rows)
        print(f"-- {feed.dataset}: {total:,} rows")
        for year, month, day, count, files in rows:
            print(f"   year={year}/month={month:02d}/day={day:02d}  {count:>9,} rows  {files:>4} files")

    transactions = next((f for f in feeds if f.record == "transaction" and f.warehouse), None)
    if transactions is not None and not glob_readable:
        summary = _s3_transactions_summary(lake, transactions)
        if summary is not None:
            source = f"the Delta table {transactions.dataset}" if lake.format == "delta" else lake_glob(root, transactions)
            print(f"\n== pyarrow.dataset over {source}, by currency:")
            print(summary)
    elif transactions is not None and (Path(root) / transactions.dataset).exists():
        query = (
            "SELECT currency, count(*) AS transactions, round(sum(amount), 2) AS amount, "
            "min(event_timestamp) AS first_event, max(event_timestamp) AS last_event "
            f"FROM read_parquet('{lake_glob(root, transactions)}', hive_partitioning = true) "
            "GROUP BY currency ORDER BY transactions DESC"
        )
        print(f"\n== DuckDB over the lake:\n{query}")
        print(con.execute(query).df().to_string(index=False))

    s = settings.mysql
    query = (
        "SELECT user_country, count(*) AS users, sum(is_inferred) AS inferred, max(last_event_at) AS freshest "
        "FROM dim_users GROUP BY user_country ORDER BY users DESC LIMIT 10"
    )
    print(f"\n== Warehouse {s.host}:{s.port}/{s.database}:\n{query}")
    connection = pymysql.connect(
        host=s.host, port=s.port, user=s.user, password=s.password.get_secret_value(), database=s.database, charset="utf8mb4"
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(query)
            print(f"{'user_country':<16} {'users':>6} {'inferred':>8}  freshest")
            for country, users, inferred, freshest in cursor.fetchall():
                print(f"{country:<16} {users:>6} {int(inferred or 0):>8}  {freshest}")
            cursor.execute("SELECT count(*) FROM dim_users")
            users = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM dim_payment_methods")
            methods = cursor.fetchone()[0]
            print(f"dim_users: {users:,} rows, dim_payment_methods: {methods:,} rows")
            _print_live_facts(cursor, feeds)
    finally:
        connection.close()


_PAYMENT_TOTALS = (
    "SELECT f.payment_method_id, d.payment_method_name, f.total_amount AS net_eur, f.transaction_count, "
    "d.is_inferred FROM fact_payment_method_totals f JOIN dim_payment_methods d USING (payment_method_id) "
    "WHERE f.snapshot_version = 0 ORDER BY f.total_amount DESC"
)


def _print_live_facts(cursor: Any, feeds: tuple[Feed, ...]) -> None:
    """Live rows per fact table, and the payment method totals as a BI tool would query them."""
    tables = [feed.table_spec.fact_table for feed in feeds if feed.is_table]
    if not tables:
        return
    print("\n== Live facts (snapshot_version = 0):")
    for table in tables:
        cursor.execute(f"SELECT count(*), max(updated_at) FROM {table} WHERE snapshot_version = 0")
        count, freshest = cursor.fetchone()
        print(f"   {table:<36} {count:>7,} rows  updated {freshest}")
    print(f"\n{_PAYMENT_TOTALS}")
    cursor.execute(_PAYMENT_TOTALS)
    print(f"{'payment_method_id':<18} {'name':<22} {'net_eur':>14} {'transactions':>12}")
    for method, name, total, count, _inferred in cursor.fetchall():
        print(f"{method:<18} {(name or '?'):<22} {total:>14,.2f} {count:>12,}")
