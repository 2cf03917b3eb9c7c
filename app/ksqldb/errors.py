"""What can go wrong talking to ksqlDB, as typed exceptions that carry ksqlDB's own error body.

ksqlDB answers an error with ``{"@type": "generic_error"|"statement_error", "error_code": N,
"message": "…"}`` (statement errors add ``statementText`` and ``entities``). The first three
digits of ``error_code`` are the HTTP status (40001 → 400). :func:`error_from_body` maps a body
to the most specific class below; every class keeps ``error_code``, ``message`` and the HTTP
``status``.

:class:`KsqlDBUnavailable` is a :class:`~app.core.errors.TransientError` (connection refused, 5xx,
timeouts before a response started): the client retries it with backoff. Everything that fails
*after* rows started to flow is a :class:`KsqlDBStreamError` and is never retried silently --
the caller decides (an export aborts and leaves the previous state current).
"""

from __future__ import annotations

from typing import Any

from app.core.errors import TransientError, TxlakeError

__all__ = [
    "KsqlDBAuthError",
    "KsqlDBBadStatement",
    "KsqlDBError",
    "KsqlDBNotFound",
    "KsqlDBProtocolError",
    "KsqlDBStalled",
    "KsqlDBStreamError",
    "KsqlDBUnavailable",
    "error_from_body",
]


class KsqlDBError(TxlakeError):
    """An error reported by (or about) a ksqlDB server."""

    def __init__(self, message: str, *, error_code: int | None = None, status: int | None = None,
                 statement: str | None = None) -> None:
        self.message = message
        self.error_code = error_code
        self.status = status
        self.statement = statement
        code = f" [{error_code}]" if error_code is not None else ""
        super().__init__(f"ksqlDB{code}: {message}")


class KsqlDBBadStatement(KsqlDBError):
    """The statement was refused (400xx: bad request, bad statement, a SELECT sent to /ksql)."""


class KsqlDBAuthError(KsqlDBError):
    """Missing or wrong credentials (40100), or not allowed (40300)."""


class KsqlDBNotFound(KsqlDBError):
    """The endpoint, stream, table or query does not exist (40400)."""


class KsqlDBUnavailable(KsqlDBError, TransientError):
    """The server could not be reached or answered 5xx before any row: worth retrying."""


class KsqlDBStreamError(KsqlDBError):
    """A query failed after its response started: an ``errorMessage`` row, a dropped connection,
    a truncated body. The rows received so far are incomplete; nothing was retried."""


class KsqlDBStalled(KsqlDBStreamError):
    """A query's response made no progress (no row) for longer than the stall timeout."""


class KsqlDBProtocolError(KsqlDBStreamError):
    """The response does not follow the documented wire format."""


def error_from_body(body: Any, status: int, *, mid_stream: bool = False) -> KsqlDBError:
    """The exception for an error body (a dict as ksqlDB sends it; anything else is tolerated)."""
    if isinstance(body, dict):
        code = body.get("error_code")
        message = str(body.get("message") or body)
        statement = body.get("statementText")
    else:
        code, message, statement = None, str(body)[:500] or f"HTTP {status}", None
    code = int(code) if isinstance(code, int) else None
    kwargs: dict[str, Any] = {"error_code": code, "status": status, "statement": statement}
    if mid_stream:
        return KsqlDBStreamError(message, **kwargs)
    family = code // 100 if code is not None else status
    if family in (401, 403):
        return KsqlDBAuthError(message, **kwargs)
    if family == 404:
        return KsqlDBNotFound(message, **kwargs)
    if family >= 500 or status >= 500:
        return KsqlDBUnavailable(message, **kwargs)
    return KsqlDBBadStatement(message, **kwargs)
