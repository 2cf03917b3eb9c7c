"""Snapshot versions of the four tables: immutable copies in the lake and the warehouse.

Entry point: :class:`Snapshotter` (see :mod:`app.snapshots.service` for the protocol).
"""

from app.snapshots.errors import SnapshotError, VersionLost
from app.snapshots.registry import Trigger, VersionInfo
from app.snapshots.service import Snapshotter
from app.snapshots.tables import TABLES, TableSpec, table_spec

__all__ = ["TABLES", "SnapshotError", "Snapshotter", "TableSpec", "Trigger", "VersionInfo", "VersionLost", "table_spec"]
