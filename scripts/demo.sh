#!/usr/bin/env bash
# The main job end to end on local real services, without ksqlDB:
# install, start Kafka + MariaDB, reset what a previous demo made (scripts/demo-reset.sh), create
# topics, produce a demo load of transactions, run the worker until everything has landed -- the
# transaction stream, the three streams and the four tables it derives itself
# (docs/derived-streams.md) -- stop it, and show where the data landed. Every run starts from the
# same clean state and produces the same transactions (seed 42, event times ending at today's UTC
# midnight), so two runs print the same figures.
#   DEMO_COUNT   transactions to produce (20000)
#   DEMO_NOW     end of the event-time window, ISO 8601 (today 00:00 UTC)
set -euo pipefail
REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
COUNT="${DEMO_COUNT:-20000}"
NOW="${DEMO_NOW:-$(date -u +%Y-%m-%dT00:00:00+00:00)}"

bash scripts/bootstrap.sh
bash scripts/infra/up.sh
source scripts/demo-env.sh
bash scripts/demo-reset.sh
txlake=.venv/bin/txlake

$txlake feeds
$txlake topics --partitions 4
echo "[demo] producing $COUNT transactions dated up to $NOW and one garbage message (the worker derives the other streams and the tables)"
$txlake produce --count "$COUNT" --now "$NOW"
printf 'this is not json' | .venv/bin/python -c "
import asyncio, sys
from aiokafka import AIOKafkaProducer
from app.core.settings import Settings
from app.core.feeds import load_feeds
from app.core.security import kafka_client_options
async def main():
    s = Settings(); topic = load_feeds(s)[0].topic
    p = AIOKafkaProducer(**kafka_client_options(s.kafka)); await p.start()
    await p.send_and_wait(topic, sys.stdin.buffer.read(), key=b'garbage'); await p.stop()  # keyed: same partition every run
asyncio.run(main())"

echo "[demo] starting the worker (log: $DEMO_WORKER_LOG)"
mkdir -p "$(dirname -- "$DEMO_WORKER_LOG")"
$txlake worker > "$DEMO_WORKER_LOG" 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null || true' EXIT
t0=$SECONDS
$txlake progress --wait --timeout 600
echo "[demo] everything landed in $((SECONDS - t0)) s (worker start-up included)"
kill -TERM $worker; wait $worker 2>/dev/null || true
trap - EXIT
echo
$txlake report
echo
echo "[demo] a snapshot version of each table: warehouse rows + lake tables/<table>/version=v<N>/"
$txlake snapshot take --all
echo
echo "[demo] compaction: each day's small files rewritten into one file sorted by event time"
$txlake lake ls
$txlake lake compact
day=$(.venv/bin/python -c "
from app.core.settings import Settings
from app.lake.compaction import list_day_files
from app.lake.storage import open_lake_storage
days = list_day_files(open_lake_storage(Settings().lake), 'streams/transaction_stream')
print(max(days, key=lambda d: sum(f.size for f in days[d])))")
echo
echo "[demo] the catalog after compaction (files and bytes per day, before -> after), and day $day"
$txlake lake ls
$txlake lake describe streams/transaction_stream | sed -n '/day partitions/,$p'
echo "[demo] a consistent read of $day through the catalog: txlake lake files transaction_stream --day $day --sql"
$txlake lake files transaction_stream --day "$day" --sql
dlq=$(.venv/bin/python -c "from app.core.settings import Settings; print(Settings().dead_letter_topic)")
echo
echo "[demo] dead letters: $(grep -c 'dead-lettering' "$DEMO_WORKER_LOG" || true) (topic $dlq, reason in headers)"
.venv/bin/python -m tools.demo figures
echo "[demo] Kafka and MariaDB keep running; stop them with: make down (make clean removes what the demo made)"
