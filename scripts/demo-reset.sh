#!/usr/bin/env bash
# Remove everything a demo run made, so the next run starts from a clean state:
#   Kafka    the feed topics, the dead-letter and deltas topics, the worker's Faust topics (table
#            state changelogs) and its consumer groups             (python -m tools.demo reset-kafka)
#   MariaDB  the demo database, dropped and created again empty (schema + grants, as `make up` does)
#   files    the lake, the worker's Faust datadir and the worker log
# `make demo` runs it before every run (then a second run prints the same figures as the first);
# `make clean` runs it alone. Only local services are touched (tools/demo.py refuses others), and
# a running worker stops it. A stopped service is skipped with a note: its data stays until the
# next reset (or `make up` + `make clean`).
set -euo pipefail
REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
source scripts/demo-env.sh
DB="${TXLAKE_MYSQL__DATABASE:-txlake}"

echo "[demo] resetting the demo state: its topics and consumer groups, database $DB, lake $TXLAKE_LAKE__ROOT, worker state $TXLAKE_DATADIR"
if [[ -x .venv/bin/python ]]; then
  .venv/bin/python -m tools.demo reset-kafka --if-running
else
  echo "[demo] no .venv yet (make install): Kafka's demo topics, if any, stay"
fi
if bash scripts/infra/mariadb.sh status 2>/dev/null; then
  bash scripts/infra/mariadb.sh sql -e "DROP DATABASE IF EXISTS \`${DB//\`/\`\`}\`"
  bash scripts/infra/mariadb.sh init 2>/dev/null
  echo "[demo] database $DB dropped and created again (empty)"
else
  echo "[demo] MariaDB is not running: database $DB stays (start it with make up and reset again to empty it)"
fi
rm -rf -- "$TXLAKE_LAKE__ROOT" "$TXLAKE_DATADIR" "$DEMO_WORKER_LOG"
echo "[demo] removed the lake, the worker state and the worker log"
