"""ksqlDB's REST API: an async streaming client, its errors, type mapping and Parquet output."""

from app.ksqldb.client import KsqlDBClient, Query, rows_to_batch
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
