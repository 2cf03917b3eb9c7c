"""Errors of snapshot versions."""

from __future__ import annotations

from app.core.errors import TxlakeError

__all__ = ["SnapshotError", "VersionLost"]


class SnapshotError(TxlakeError):
    """A version could not be taken (its row says ``failed`` with the reason)."""


class VersionLost(SnapshotError):
    """The taker's version is no longer ``building`` under its name (recovery failed it: lease expired)."""
