"""The command line starts quickly: building its parser (``--help``, ``--version``, a usage error)
and ``txlake feeds`` import no heavy library.

The lake, the warehouse, Kafka and the worker are imported by the command handlers that use them
(``cmd_worker`` in :mod:`app.ops.cli`, ``run`` in :mod:`app.lake.commands`, ...), and a package's
``__init__`` imports its heavy names on first use (``app.snapshots``, ``app.ksqldb``). Each case runs
in a fresh interpreter: the test run itself has imported everything long before. To find what
pulled a module in: ``python -X importtime -c "import app.ops.cli"``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

HEAVY = (
    "aiohttp",
    "aiokafka",
    "aiomysql",
    "deltalake",
    "duckdb",
    "faust",
    "httpx",
    "numpy",
    "pandas",
    "polars",
    "pyarrow",
    "pymysql",
)
"""Libraries that cost the command line hundreds of milliseconds before it does anything."""

CASES = {
    "build the parser": "import app.ops.cli; app.ops.cli.build_parser()",
    "txlake feeds": "import app.ops.cli; app.ops.cli.main(['feeds'])",
}


@pytest.mark.parametrize("code", CASES.values(), ids=CASES.keys())
def test_the_command_line_imports_no_heavy_library(code: str) -> None:
    report = "import json, sys; print(json.dumps(sorted({name.partition('.')[0] for name in sys.modules})))"
    clean = {name: value for name, value in os.environ.items() if not name.upper().startswith("TXLAKE_")}
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"],
        cwd=REPO_ROOT,
        env={**clean, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    imported = set(json.loads(done.stdout.splitlines()[-1]))
    assert not imported & set(HEAVY), f"imported {sorted(imported & set(HEAVY))}"
