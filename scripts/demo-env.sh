# The demo's settings, sourced by scripts/demo.sh and scripts/demo-reset.sh (so both mean the same
# lake, worker state, topics and database). Each can be overridden from the environment.
# shellcheck shell=bash
export TXLAKE_LAKE__ROOT="${TXLAKE_LAKE__ROOT:-$REPO_ROOT/lake}"
export TXLAKE_DATADIR="${TXLAKE_DATADIR:-$REPO_ROOT/.infra/worker}"
export TXLAKE_BATCHING__ROTATE_INTERVAL_MS="${TXLAKE_BATCHING__ROTATE_INTERVAL_MS:-2000}"
export TXLAKE_LOG_FORMAT="${TXLAKE_LOG_FORMAT:-text}"
# A demo blacklist so the blacklisted stream has content (list settings take comma-separated values).
export TXLAKE_BLACKLIST__COUNTRIES="${TXLAKE_BLACKLIST__COUNTRIES:-RU}"
export TXLAKE_BLACKLIST__PAYMENT_METHODS="${TXLAKE_BLACKLIST__PAYMENT_METHODS:-PM-3}"  # PM-3 is AMEX in the demo data
DEMO_WORKER_LOG="${DEMO_WORKER_LOG:-$REPO_ROOT/.infra/worker.log}"
