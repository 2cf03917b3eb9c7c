#!/usr/bin/env bash
# The test command: install, check, run the fast lane, start the real Kafka and MariaDB, run the rest.
#
#   1. fast lane (no services): `make check` (ruff, layer contracts, mypy) and the unit tests;
#   2. the services (scripts/infra/up.sh) and the deploy checks (image and Helm chart);
#   3. integration and fuzz suites against the real services on two processes, then the fault
#      suite and the tests that stop a service or bound a latency, one at a time.
# Extra arguments go to both pytest runs against the services (e.g. `make test ARGS="-x"` or `bash scripts/test.sh -k worker`).
set -euo pipefail
REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
bash scripts/bootstrap.sh
echo "[test] fast lane: checks and unit tests"
bash scripts/check.sh
.venv/bin/pytest -q tests/unit
echo "[test] services and deploy checks"
bash scripts/infra/up.sh
bash scripts/deploy-check.sh   # lints the image and the Helm chart; installs helm on first run
# Two parts; each names its slowest tests and every failure at the end. Every test has its own
# topics, consumer groups, database, lake and ports, so most run on two processes beside the
# services; the `faults` and `serial` ones stop a shared service or bound a latency, so they run
# alone afterwards. Both parts run even if the first fails.
echo "[test] integration and fuzz against the real services, two at a time"
status=0 ran=0
part() {  # pytest's 5 is "nothing selected" (e.g. -k names tests of the other part only)
  local rc=0
  .venv/bin/pytest -q -rfE --durations=15 --ignore=tests/unit "$@" || rc=$?
  if [[ $rc -eq 0 ]]; then ran=1; elif [[ $rc -ne 5 ]]; then ran=1; status=$rc; fi
}
part -n 2 -m "not (faults or serial)" "$@"
echo "[test] faults and serial tests, one at a time"
part -m "faults or serial" "$@"
[[ $ran -eq 1 ]] || { echo "[test] no test selected" >&2; exit 5; }
exit "$status"
