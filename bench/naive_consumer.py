"""Reference (a): a consumer written the way the original scripts worked.

consumer_datalake.py / consumer_warehouse.py polled Kafka in batches of 1000, decoded each
message with ``json.loads``, built a pandas DataFrame per batch (``pd.json_normalize``),
wrote one Parquet file per batch with ``df.to_parquet``, upserted the users one row at a time
(``INSERT … ON DUPLICATE KEY UPDATE`` per row, commit per batch) and committed the Kafka offsets
after each batch. This module reproduces that shape faithfully, no more optimised than that, so
the benchmark can state how much faster txlake is than what it replaces.

Run standalone (on an existing topic)::

    python -m bench.naive_consumer --topic transactions --max-messages 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiomysql
import pandas as pd
from aiokafka import AIOKafkaConsumer

__all__ = ["NaiveResult", "run_naive"]

_UPSERT_USER = (
    "INSERT INTO dim_users (user_id, user_name, user_email, user_country, user_city) "
    "VALUES (%s, %s, %s, %s, %s) "
    "ON DUPLICATE KEY UPDATE user_name = VALUES(user_name), user_email = VALUES(user_email), "
    "user_country = VALUES(user_country), user_city = VALUES(user_city)"
)


@dataclass
class NaiveResult:
    """What the naive consumer did: messages, wall time (with and without start-up), why it stopped."""

    messages: int
    batches: int
    parquet_files: int
    rows_upserted: int
    elapsed_s: float  # from consumer start to the last committed batch
    elapsed_from_first_batch_s: float  # from the first batch received to the last committed batch
    stopped_by: str  # "messages" | "time" | "end"
    msg_per_s: float
    msg_per_s_from_first_batch: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def run_naive(
    *,
    bootstrap_servers: str,
    topic: str,
    group_id: str,
    out_dir: Path,
    mysql: dict[str, Any],
    max_messages: int = 100_000,
    max_seconds: float = 60.0,
    batch_size: int = 1000,
) -> NaiveResult:
    """Consume ``topic`` from the beginning until ``max_messages`` or ``max_seconds``, whichever first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    connection = await aiomysql.connect(charset="utf8mb4", autocommit=False, **mysql)
    started = time.monotonic()
    first_batch: float | None = None
    finished = started
    messages = batches = files = upserted = 0
    idle_polls = 0
    stopped_by = "end"
    await consumer.start()
    try:
        while True:
            if messages >= max_messages:
                stopped_by = "messages"
                break
            if time.monotonic() - started >= max_seconds:
                stopped_by = "time"
                break
            polled = await consumer.getmany(timeout_ms=1000, max_records=min(batch_size, max_messages - messages))
            records = [message for partition_messages in polled.values() for message in partition_messages]
            if not records:
                idle_polls += 1
                if first_batch is not None and idle_polls >= 5:
                    break  # the topic is exhausted
                continue
            idle_polls = 0
            if first_batch is None:
                first_batch = time.monotonic()
            # consumer_datalake.py: json per message, a DataFrame per batch, a Parquet file per batch.
            rows = [json.loads(message.value) for message in records]
            frame = pd.json_normalize(rows)
            frame.to_parquet(out_dir / f"batch-{batches:06d}-{uuid.uuid4().hex[:8]}.parquet", index=False)
            files += 1
            # consumer_warehouse.py: one upsert per row, commit per batch.
            async with connection.cursor() as cursor:
                for row in rows:
                    user = row["USER"]
                    await cursor.execute(
                        _UPSERT_USER, (user["ID"], user["NAME"], user["EMAIL"], user["COUNTRY"], user["CITY"])
                    )
                    upserted += 1
            await connection.commit()
            await consumer.commit()
            messages += len(records)
            batches += 1
            finished = time.monotonic()
    finally:
        await consumer.stop()
        connection.close()
    elapsed = finished - started
    from_first = finished - first_batch if first_batch is not None else 0.0
    return NaiveResult(
        messages=messages,
        batches=batches,
        parquet_files=files,
        rows_upserted=upserted,
        elapsed_s=elapsed,
        elapsed_from_first_batch_s=from_first,
        stopped_by=stopped_by,
        msg_per_s=messages / elapsed if elapsed > 0 else 0.0,
        msg_per_s_from_first_batch=messages / from_first if from_first > 0 else 0.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", default=f"bench-naive-{uuid.uuid4().hex[:8]}")
    parser.add_argument("--out-dir", type=Path, default=Path(f"/tmp/txlake-naive-{uuid.uuid4().hex[:8]}"))  # noqa: S108 - uuid-named, fresh
    parser.add_argument("--mysql-host", default="127.0.0.1")
    parser.add_argument("--mysql-port", type=int, default=3307)
    parser.add_argument("--mysql-user", default="txlake")
    parser.add_argument("--mysql-password", default="txlake-local")
    parser.add_argument("--mysql-database", default="txlake")
    parser.add_argument("--max-messages", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()
    result = asyncio.run(
        run_naive(
            bootstrap_servers=args.bootstrap_servers,
            topic=args.topic,
            group_id=args.group,
            out_dir=args.out_dir,
            mysql={
                "host": args.mysql_host,
                "port": args.mysql_port,
                "user": args.mysql_user,
                "password": args.mysql_password,
                "db": args.mysql_database,
            },
            max_messages=args.max_messages,
            max_seconds=args.max_seconds,
        )
    )
    print(json.dumps(result.as_dict(), indent=2))


if __name__ == "__main__":
    main()
