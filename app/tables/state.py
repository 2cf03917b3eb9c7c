"""The table derivation's state stores: their names, shared by the agent and the topic tooling.

Each name is a state table of the table agent (:mod:`agents.tables`, :mod:`app.tables.store`) whose
compacted changelog topic is ``<app id>-<name>-changelog`` (the names the earlier Faust tables had):
one per ksqlDB table, the product buyers (for ``unique_buyers``), and the per-partition progress of
the deltas applied.
"""

from __future__ import annotations

from models.tables import TABLES

__all__ = ["BUYERS_TABLE", "PROGRESS_TABLE", "state_table_names"]

BUYERS_TABLE = "product_buyers"
PROGRESS_TABLE = "deltas_progress"


def state_table_names() -> list[str]:
    """The state tables the agent keeps (their changelogs are ``<app id>-<name>-changelog``)."""
    return [*TABLES, BUYERS_TABLE, PROGRESS_TABLE]
