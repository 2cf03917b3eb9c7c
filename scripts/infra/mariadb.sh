#!/usr/bin/env bash
# Local MariaDB instance for the txlake warehouse (own datadir, socket and port; never the system service).
#
#   scripts/infra/mariadb.sh start        # install packages if needed, init datadir once, start, wait ready
#   scripts/infra/mariadb.sh stop         # clean shutdown (mariadb-admin shutdown)
#   scripts/infra/mariadb.sh status       # exit 0 iff the server answers a ping
#   scripts/infra/mariadb.sh init         # apply sql/01..03 and 05, create/refresh the application user
#   scripts/infra/mariadb.sh sql [ARGS]   # root client over the unix socket (extra args passed through)
#
# Environment: TXLAKE_MYSQL__PORT (3307), TXLAKE_MYSQL__DATABASE (txlake),
#              TXLAKE_MYSQL__USER (txlake), TXLAKE_MYSQL__PASSWORD (txlake-local).
# State lives in <repo>/.infra/mariadb: data/, mysqld.sock, mariadbd.pid, mariadbd.log.
# root@localhost authenticates with unix_socket only (OS user root); the app user uses a password over TCP.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/../.." && pwd)"
STATE="$REPO_ROOT/.infra/mariadb"
DATADIR="$STATE/data"
SOCKET="$STATE/mysqld.sock"
PIDFILE="$STATE/mariadbd.pid"
LOGFILE="$STATE/mariadbd.log"
SQL_DIR="$REPO_ROOT/sql"

PORT="${TXLAKE_MYSQL__PORT:-3307}"
DB="${TXLAKE_MYSQL__DATABASE:-txlake}"
APP_USER="${TXLAKE_MYSQL__USER:-txlake}"
APP_PASSWORD="${TXLAKE_MYSQL__PASSWORD:-txlake-local}"
READY_TIMEOUT=60

log() { printf '[mariadb] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --no-defaults: ignore /etc/mysql/*.cnf so the system configuration never leaks into our instance.
client() { mariadb --no-defaults --socket="$SOCKET" --user=root --default-character-set=utf8mb4 "$@"; }
admin() { mariadb-admin --no-defaults --socket="$SOCKET" --user=root "$@"; }

ensure_installed() {
  if command -v mariadbd >/dev/null && command -v mariadb >/dev/null && command -v mariadb-install-db >/dev/null; then
    return 0
  fi
  log "installing mariadb-server and mariadb-client (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq mariadb-server mariadb-client >&2
  command -v mariadbd >/dev/null || die "mariadbd still missing after apt-get install"
}

# The pid file, or else the mariadbd serving our datadir: a mariadbd that fails to start (e.g. a second
# start racing the first) deletes the pid file on its way out, even though it belongs to the running one.
read_pid() {
  if [[ -s "$PIDFILE" ]]; then tr -dc '0-9' <"$PIDFILE"; return 0; fi
  pgrep -o -f -- "--datadir=$DATADIR( |$)" || true
}
is_running() {
  local pid; pid="$(read_pid)"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}
pingable() { [[ -S "$SOCKET" ]] && admin --connect-timeout=2 ping >/dev/null 2>&1; }

init_datadir() {
  [[ -d "$DATADIR/mysql" ]] && return 0
  log "initialising datadir $DATADIR (one-time)"
  rm -rf "$DATADIR"; mkdir -p "$DATADIR"
  mariadb-install-db --no-defaults --user=root --datadir="$DATADIR" \
    --auth-root-authentication-method=socket --skip-test-db >"$STATE/install-db.log" 2>&1 \
    || { tail -n 30 "$STATE/install-db.log" >&2; die "mariadb-install-db failed"; }
}

cmd_start() {
  mkdir -p "$STATE"
  if is_running && pingable; then
    log "already running (pid $(read_pid)) on 127.0.0.1:$PORT, socket $SOCKET"
    return 0
  fi
  ensure_installed
  if is_running; then
    log "pid $(read_pid) is alive but not answering yet; waiting"
  else
    rm -f "$PIDFILE"
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then die "port $PORT is already in use by another process"; fi
    init_datadir
    rm -f "$SOCKET"
    log "starting mariadbd on 127.0.0.1:$PORT"
    setsid nohup mariadbd --no-defaults --user=root \
      --datadir="$DATADIR" --socket="$SOCKET" --pid-file="$PIDFILE" --log-error="$LOGFILE" \
      --port="$PORT" --bind-address=127.0.0.1 --skip-name-resolve \
      --local-infile=1 --max-connections=500 --innodb-flush-log-at-trx-commit=1 \
      --innodb-buffer-pool-size=256M \
      --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
      >>"$STATE/mariadbd.out" 2>&1 </dev/null &
    echo $! >"$PIDFILE"   # mariadbd rewrites the same pid once it is up
  fi
  local t0=$SECONDS
  until pingable; do
    if ! is_running; then
      log "mariadbd exited during startup; last log lines:"
      tail -n 50 "$LOGFILE" "$STATE/mariadbd.out" 2>/dev/null >&2 || true
      rm -f "$PIDFILE"
      exit 1
    fi
    if (( SECONDS - t0 >= READY_TIMEOUT )); then
      log "not ready after ${READY_TIMEOUT} s; last log lines:"
      tail -n 50 "$LOGFILE" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  log "ready on 127.0.0.1:$PORT after $((SECONDS - t0)) s (pid $(read_pid), socket $SOCKET)"
}

cmd_stop() {
  local pid; pid="$(read_pid)"
  if ! is_running; then
    log "not running"
    rm -f "$PIDFILE"
    return 0
  fi
  log "shutting down pid $pid"
  admin shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "still alive after 30 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
  log "stopped"
}

cmd_status() {
  if is_running && pingable; then
    log "running (pid $(read_pid)) on 127.0.0.1:$PORT, socket $SOCKET"
    return 0
  fi
  log "not running"
  return 1
}

# SQL string literal / identifier quoting for values taken from the environment.
sql_str() { local s=${1//\\/\\\\}; s=${s//\'/\'\'}; printf "'%s'" "$s"; }
sql_ident() { local s=${1//\`/\`\`}; printf '`%s`' "$s"; }

cmd_init() {
  pingable || die "server not running: run '$0 start' first"
  local db_id; db_id="$(sql_ident "$DB")"
  log "applying sql/01..03, 05, 06 to database $DB"
  # 01 names `txlake`; substitute the configured database name.
  sed "s/\`txlake\`/$(printf '%s' "$db_id" | sed 's/[&/\]/\\&/g')/g" "$SQL_DIR/01_create_database.sql" | client
  client --database="$DB" <"$SQL_DIR/02_create_dimension_tables.sql"
  client --database="$DB" <"$SQL_DIR/03_create_fact_tables.sql"
  client --database="$DB" <"$SQL_DIR/05_create_snapshot_versions.sql"
  client --database="$DB" <"$SQL_DIR/07_create_lake_leases.sql"

  log "creating/refreshing application user $APP_USER@127.0.0.1 and $APP_USER@localhost"
  # Least privilege for the application (the sinks and the HTTP re-export endpoint):
  #   GRANT SELECT, INSERT, UPDATE, DELETE ON <db>.* TO <user>@127.0.0.1 / <user>@localhost
  # No DDL (CREATE/ALTER/DROP), no FILE, no global privileges: the schema is owned by root via sql/0*.sql.
  # Both hosts: 127.0.0.1 for TCP clients (skip-name-resolve), localhost for socket clients.
  local host user pw
  user="$(sql_str "$APP_USER")"; pw="$(sql_str "$APP_PASSWORD")"
  {
    for host in 127.0.0.1 localhost; do
      printf "CREATE USER IF NOT EXISTS %s@'%s' IDENTIFIED BY %s;\n" "$user" "$host" "$pw"
      printf "ALTER USER %s@'%s' IDENTIFIED BY %s;\n" "$user" "$host" "$pw"
      printf "GRANT SELECT, INSERT, UPDATE, DELETE ON %s.* TO %s@'%s';\n" "$db_id" "$user" "$host"
    done
    printf "FLUSH PRIVILEGES;\n"
  } | client
  log "database $DB ready; app user $APP_USER"
}

cmd_sql() {
  pingable || die "server not running: run '$0 start' first"
  exec mariadb --no-defaults --socket="$SOCKET" --user=root --default-character-set=utf8mb4 "$@"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  init) cmd_init ;;
  sql) shift; cmd_sql "$@" ;;
  *) echo "usage: $0 start|stop|status|init|sql [mariadb client args]" >&2; exit 2 ;;
esac
