"""``txlake report``: where the data landed -- rows per stream and day, a DuckDB query, a warehouse query."""

from __future__ import annotations

from pathlib import Path

import pymysql

from app.feeds import Feed
from app.settings import Settings

__all__ = ["lake_glob", "print_report"]


def lake_glob(root: Path, feed: Feed) -> str:
    """The glob a reader uses for a feed's dataset (hive partitioning on)."""
    return str(Path(root).resolve() / feed.dataset / "**" / "*.parquet")


def print_report(settings: Settings, feeds: tuple[Feed, ...]) -> None:
    try:
        import duckdb
    except ImportError as exc:  # duckdb is a dev/demo extra, not a worker dependency
        raise SystemExit("txlake report needs duckdb: pip install 'txlake[dev]'") from exc

    root = settings.lake.root
    print(f"== Lake: {Path(root).resolve()}")
    con = duckdb.connect()
    for feed in feeds:
        glob = lake_glob(root, feed)
        if not list((Path(root) / feed.dataset).glob("year=*/month=*/day=*/*.parquet")):
            print(f"-- {feed.dataset}: no files yet")
            continue
        rows = con.execute(
            f"SELECT year, month, day, count(*) AS rows, count(DISTINCT filename) AS files "
            f"FROM read_parquet('{glob}', hive_partitioning = true, filename = true) "
            f"GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        total = sum(r[3] for r in rows)
        print(f"-- {feed.dataset}: {total:,} rows")
        for year, month, day, count, files in rows:
            print(f"   year={year}/month={month:02d}/day={day:02d}  {count:>9,} rows  {files:>4} files")

    transactions = next((f for f in feeds if f.record == "transaction" and f.warehouse), None)
    if transactions is not None and (Path(root) / transactions.dataset).exists():
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
    finally:
        connection.close()
