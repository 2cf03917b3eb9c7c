#!/usr/bin/env bash
# Stop the local txlake infrastructure (Kafka + MariaDB). Data in .infra/ is kept.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"

bash "$SCRIPT_DIR/kafka.sh" stop & kafka_pid=$!
bash "$SCRIPT_DIR/mariadb.sh" stop & mariadb_pid=$!
rc=0
wait "$kafka_pid" || rc=1
wait "$mariadb_pid" || rc=1
exit "$rc"
