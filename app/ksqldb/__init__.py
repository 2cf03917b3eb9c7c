"""ksqlDB's REST API: an async streaming client, its errors, type mapping and Parquet output."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.ksqldb.errors import (
    KsqlDBAuthError,
    KsqlDBBadStatement,
    KsqlDBError,
    KsqlDBNotFound,
    KsqlDBProtocolError,
    KsqlDBStalled,
    KsqlDBStreamError,
    KsqlDBUnavailable,
)

if TYPE_CHECKING:
    from app.ksqldb.client import KsqlDBClient, Query, rows_to_batch
    from app.ksqldb.parquet import ParquetProgress, write_parquet

__all__ = [
    "KsqlDBAuthError",
    "KsqlDBBadStatement",
    "KsqlDBClient",
    "KsqlDBError",
    "KsqlDBNotFound",
    "KsqlDBProtocolError",
    "KsqlDBStalled",
    "KsqlDBStreamError",
    "KsqlDBUnavailable",
    "ParquetProgress",
    "Query",
    "rows_to_batch",
    "write_parquet",
]


def __getattr__(name: str) -> Any:
    """The client and the Parquet writer, imported on first use (PEP 562).

    They pull httpx and pyarrow; importing a light submodule (errors, framing) runs this package
    first, and must not pay for them.
    """
    if name in ("KsqlDBClient", "Query", "rows_to_batch"):
        from app.ksqldb import client as module
    elif name in ("ParquetProgress", "write_parquet"):
        from app.ksqldb import parquet as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value  # found directly from now on
    return value
