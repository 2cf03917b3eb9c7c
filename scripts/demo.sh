#!/usr/bin/env bash
# The main job end to end on local real services:
# install, start Kafka + MariaDB, create topics, produce a demo load, run the worker until
# everything has landed, stop it, and show where the data landed.
set -euo pipefail
REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
COUNT="${DEMO_COUNT:-20000}"

bash scripts/bootstrap.sh
bash scripts/infra/up.sh

export TXLAKE_LAKE__ROOT="${TXLAKE_LAKE__ROOT:-$REPO_ROOT/lake}"
export TXLAKE_DATADIR="${TXLAKE_DATADIR:-$REPO_ROOT/.infra/worker}"
export TXLAKE_BATCHING__ROTATE_INTERVAL_MS="${TXLAKE_BATCHING__ROTATE_INTERVAL_MS:-2000}"
export TXLAKE_LOG_FORMAT="${TXLAKE_LOG_FORMAT:-text}"
# A demo blacklist so the blacklisted stream has content.
export TXLAKE_BLACKLIST__COUNTRIES="${TXLAKE_BLACKLIST__COUNTRIES:-[\"RU\"]}"
export TXLAKE_BLACKLIST__PAYMENT_METHODS="${TXLAKE_BLACKLIST__PAYMENT_METHODS:-[\"PM-AMEX\"]}"
txlake=.venv/bin/txlake

$txlake feeds
$txlake topics --partitions 4
echo "[demo] producing $COUNT transactions (plus their derived streams) and one garbage message"
$txlake produce --count "$COUNT"
printf 'this is not json' | .venv/bin/python -c "
import asyncio, sys
from aiokafka import AIOKafkaProducer
from app.core.settings import Settings
from app.core.feeds import load_feeds
async def main():
    s = Settings(); topic = load_feeds(s)[0].topic
    p = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers); await p.start()
    await p.send_and_wait(topic, sys.stdin.buffer.read()); await p.stop()
asyncio.run(main())"

echo "[demo] starting the worker (log: .infra/worker.log)"
mkdir -p .infra
$txlake worker > .infra/worker.log 2>&1 &
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
echo "[demo] dead letters: $(grep -c 'dead-lettering' .infra/worker.log || true) (topic $dlq, reason in headers)"
echo "[demo] Kafka and MariaDB keep running; stop them with: make down"
