"""txlake's exceptions: one root, and two markers that decide what happens next.

* :class:`TransientError` -- the world is temporarily broken (MySQL down, disk
  full, broker unreachable). The batch is retried with backoff, never skipped,
  never dead-lettered.
* :class:`TerminalError` -- this *record* can never land (not JSON, not a valid
  transaction). It goes to the dead-letter topic and the rest of its batch lands.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DerivedStreamError",
    "LakeSinkError",
    "TerminalError",
    "TransientError",
    "TxlakeError",
    "WarehouseSinkError",
]


class TxlakeError(Exception):
    """Root of every error txlake raises on purpose."""


class TransientError(TxlakeError):
    """Retry later: the same call may succeed once the outside world recovers."""


class TerminalError(TxlakeError):
    """Give up on this record: no retry can make it land."""


class ConfigurationError(TxlakeError):
    """The settings or the feeds file are wrong; the worker refuses to start."""


class LakeSinkError(TransientError):
    """Writing a batch to the lake failed (I/O error, disk full, permissions)."""


class WarehouseSinkError(TransientError):
    """Writing a batch to the warehouse failed (connection lost, lock timeout, deadlock)."""


class DerivedStreamError(TransientError):
    """Deriving a batch into the derived streams failed (broker unreachable, transaction aborted or fenced)."""
