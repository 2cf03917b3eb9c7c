#!/usr/bin/env bash
# The test command: install, check, run the fast lane, start the real Kafka and MariaDB, run the rest.
#
#   1. fast lane (no services): `make check` (ruff, layer contracts, mypy) and the unit tests;
#   2. the services (scripts/infra/up.sh) and the deploy checks (image and Helm chart);
#   3. integration, fault and fuzz suites against the real services.
# Extra arguments go to the last pytest run (e.g. `make test ARGS="-x"` or `bash scripts/test.sh -k worker`).
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
echo "[test] integration, faults and fuzz against the real services"
.venv/bin/pytest -q -rfE --durations=25 --ignore=tests/unit "$@"  # the slowest tests and every failure named at the end
