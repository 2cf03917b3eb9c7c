"""The warehouse's numbered SQL scripts (``sql/``) as statements, for tools that apply them."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SQL_DIR", "WAREHOUSE_SCRIPTS", "read_sql", "split_sql"]

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"

# The scripts that build a warehouse in the current database (they never name a database).
WAREHOUSE_SCRIPTS = ("02_create_dimension_tables.sql", "03_create_fact_tables.sql", "05_create_snapshot_versions.sql",
                     "07_create_lake_leases.sql")


def split_sql(text: str) -> list[str]:
    """Split a script into statements.

    Convention of the files in sql/: full-line ``--`` comments, and every statement ends with ``;``
    at the end of a line (no ``;`` inside string literals at a line end, no DELIMITER blocks).
    """
    statements: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        current.append(line)
        if stripped.endswith(";"):
            statement = "\n".join(current).strip().rstrip(";").strip()
            if statement:
                statements.append(statement)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


def read_sql(name: str) -> list[str]:
    """Statements of ``sql/<name>``."""
    return split_sql((SQL_DIR / name).read_text(encoding="utf-8"))
