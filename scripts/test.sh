#!/usr/bin/env bash
# The test command: install, start the real Kafka and MariaDB, run the whole suite.
set -euo pipefail
REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
bash scripts/bootstrap.sh
bash scripts/infra/up.sh
bash scripts/deploy-check.sh   # lints the image and the Helm chart; installs helm on first run
.venv/bin/pytest -q "$@"
