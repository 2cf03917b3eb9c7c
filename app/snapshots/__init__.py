"""Snapshot versions of the four tables: immutable copies in the lake and the warehouse.

Entry point: :class:`Snapshotter` (see :mod:`app.snapshots.service` for the protocol).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.snapshots.errors import SnapshotError, VersionLost
from app.snapshots.registry import Trigger, VersionInfo
from app.snapshots.tables import TABLES, TableSpec, table_spec

if TYPE_CHECKING:
    from app.snapshots.service import Snapshotter

__all__ = ["TABLES", "SnapshotError", "Snapshotter", "TableSpec", "Trigger", "VersionInfo", "VersionLost", "table_spec"]


def __getattr__(name: str) -> Any:
    """``Snapshotter``, imported on first use (PEP 562).

    The service pulls aiomysql and pyarrow; importing a light submodule (errors, registry, tables:
    the CLI's parser does) runs this package first, and must not pay for them.
    """
    if name == "Snapshotter":
        from app.snapshots.service import Snapshotter

        globals()["Snapshotter"] = Snapshotter  # found directly from now on
        return Snapshotter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
