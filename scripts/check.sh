#!/usr/bin/env bash
# The checks of `make check` and of the test command's fast lane (docs/development.md): lint, the
# layer contracts, types. Needs the .venv of scripts/bootstrap.sh; no services.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
echo "[check] ruff"
.venv/bin/ruff check .
echo "[check] layer contracts"
.venv/bin/lint-imports
echo "[check] mypy"
.venv/bin/mypy
