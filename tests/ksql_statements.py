"""The ``ksql/`` statements as the tests read them: a named statement and its SELECT list.

Convention of the files in ``ksql/``: ``CREATE STREAM|TABLE IF NOT EXISTS <NAME>`` starts a
statement, it ends with ``;`` at the end of a line, full-line or trailing ``--`` comments, and a select item that
renames its expression says so with a trailing ``AS <NAME>``.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["KSQL_DIR", "SelectItem", "select_list", "statement"]

KSQL_DIR = Path(__file__).resolve().parents[1] / "ksql"

SelectItem = tuple[str, str]
"""(output column name, expression)."""


def statement(text: str, name: str) -> str:
    """The ``CREATE STREAM|TABLE IF NOT EXISTS <name>`` statement of ``text`` (comments removed), up to its ``;``."""
    found = re.search(rf"CREATE (?:STREAM|TABLE) IF NOT EXISTS {name}\b.*?;[ \t]*$", _without_comments(text), re.S | re.M)
    assert found, f"no CREATE STREAM|TABLE {name}"
    return found.group(0)


def select_list(text: str, name: str) -> list[SelectItem]:
    """The output columns of ``name``'s ``AS SELECT … FROM``, in order, with their expressions."""
    body = re.search(r"\bSELECT\b(.*?)\bFROM\b", statement(text, name), re.S)
    assert body, f"{name} has no SELECT … FROM"
    items, depth, current = [], 0, ""
    for char in body.group(1):
        depth += 1 if char in "([" else -1 if char in ")]" else 0
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [_named(item.strip()) for item in items if item.strip()]


def _named(item: str) -> SelectItem:
    alias = re.search(r"\bAS\s+([A-Z_]+)\s*$", item)
    if alias:
        return alias.group(1), item[: alias.start()].strip()
    return item, item


def _without_comments(text: str) -> str:
    return re.sub(r"--[^\n]*", "", text)
