#!/usr/bin/env bash
# Start the local txlake infrastructure (Kafka + MariaDB, in parallel), apply the warehouse schema
# and print the connection facts. Idempotent: a second run only checks that both are up.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/../.." && pwd)"
mkdir -p "$REPO_ROOT/.infra"
t0=$SECONDS

bash "$SCRIPT_DIR/kafka.sh" start & kafka_pid=$!
bash "$SCRIPT_DIR/mariadb.sh" start & mariadb_pid=$!
rc=0
wait "$kafka_pid" || { echo "[up] Kafka failed to start (see .infra/kafka/server.log)" >&2; rc=1; }
wait "$mariadb_pid" || { echo "[up] MariaDB failed to start (see .infra/mariadb/mariadbd.log)" >&2; rc=1; }
(( rc == 0 )) || exit "$rc"

bash "$SCRIPT_DIR/mariadb.sh" init

KPORT="${TXLAKE_KAFKA_PORT:-9092}"
cat <<FACTS
[up] ready in $((SECONDS - t0)) s
  Kafka     TXLAKE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:$KPORT   (controller 127.0.0.1:$((KPORT + 1)), logs .infra/kafka/server.log)
  MariaDB   TXLAKE_MYSQL__HOST=127.0.0.1 TXLAKE_MYSQL__PORT=${TXLAKE_MYSQL__PORT:-3307}
            TXLAKE_MYSQL__DATABASE=${TXLAKE_MYSQL__DATABASE:-txlake} TXLAKE_MYSQL__USER=${TXLAKE_MYSQL__USER:-txlake} TXLAKE_MYSQL__PASSWORD=${TXLAKE_MYSQL__PASSWORD:-txlake-local}
            root: scripts/infra/mariadb.sh sql   (unix socket $REPO_ROOT/.infra/mariadb/mysqld.sock)
  Stop with scripts/infra/down.sh
FACTS
