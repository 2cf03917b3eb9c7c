"""The tables that have snapshot versions: the four tables of :data:`models.tables.TABLES`.

A version's rows have exactly the columns of the table's :attr:`~models.tables.TableSpec.arrow_schema`
(the fact table's business columns; no surrogate key, no ``snapshot_*`` bookkeeping), derived from
the one description of each table in :mod:`models.tables`. Money is ``decimal128`` with the fact
table's precision and scale (:mod:`models.money`: totals ``decimal128(38, 2)``, averages
``decimal128(38, 4)``, rates ``decimal128(18, 8)``), so a version read from the lake equals the
warehouse's rows to the cent. Versions written before the money columns were widened keep their
``decimal128(18, x)`` files; a reader of several versions casts them to these types.
"""

from __future__ import annotations

from app.core.errors import ConfigurationError
from models.tables import TABLES, TableSpec

__all__ = ["TABLES", "TableSpec", "table_spec"]


def table_spec(name: str) -> TableSpec:
    """The spec of a snapshot table; :class:`ConfigurationError` for an unknown name."""
    try:
        return TABLES[name]
    except KeyError:
        raise ConfigurationError(f"no snapshot table {name!r}; known: {', '.join(TABLES)}") from None
