"""txlake's exceptions: one root, and the marker that decides what happens next.

* :class:`TransientError` -- the world is temporarily broken (MySQL down, disk
  full, broker unreachable). The batch is retried with backoff, never skipped,
  never dead-lettered.
* A *record* that can never land (not JSON, not a valid transaction) is a
  :class:`models.transaction.InvalidRecord` carrying its typed
  :class:`~models.transaction.Rejection`: it goes to the dead-letter topic and the
  rest of its batch lands.
* :class:`ConfigurationError` -- the settings or the feeds file are wrong: the command exits 2.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "LakeSinkError",
    "TransientError",
    "TxlakeError",
    "WarehouseSinkError",
]


class TxlakeError(Exception):
    """Root of every error txlake raises on purpose."""


class TransientError(TxlakeError):
    """Retry later: the same call may succeed once the outside world recovers."""


class ConfigurationError(TxlakeError):
    """The settings or the feeds file are wrong; the worker refuses to start."""


class LakeSinkError(TransientError):
    """Writing a batch to the lake failed (I/O error, disk full, permissions)."""


class WarehouseSinkError(TransientError):
    """Writing a batch to the warehouse failed (connection lost, lock timeout, deadlock)."""
