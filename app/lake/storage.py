"""Where the lake's bytes live: a local directory or an S3 bucket, behind one small interface.

The lake sink's commit protocol (see :mod:`app.lake.sink`) needs only a few storage
operations, and what makes each of them atomic differs by store:

=====================  ======================================  ========================================
operation              local directory (:class:`LocalStorage`)  S3 (:class:`ObjectStorage`)
=====================  ======================================  ========================================
``write_parquet``      write (+ fsync)                         one upload; the object appears whole
``write_atomic``       temp file, fsync, rename, dir fsync     a single PUT (atomic on S3)
``move``               ``os.replace`` (atomic rename)          server-side copy, then delete the source
``read``               read the file, ``None`` if missing      GET, ``None`` if missing
``list_files``         ``iterdir``                             LIST (strongly consistent since 2020)
=====================  ======================================  ========================================

S3 has no rename: a ``move`` is a copy (the target object appears atomically, complete)
followed by a delete of the source. A crash between the two leaves both; replaying the
move copies the same bytes again and deletes the source, so moves are idempotent.

Paths given to a storage are relative to the lake root, ``/``-separated
(``streams/x/year=2026/month=11/day=25/tx+0+….parquet``).

The local implementation uses plain ``os`` calls on purpose: exactly the syscalls the lake
sink made before storages existed (same fsyncs, same renames). The S3 one uses
:class:`pyarrow.fs.S3FileSystem`, whose credentials default to the standard AWS chain
(environment variables, web identity / IRSA, instance profile) unless keys are configured.
"""

from __future__ import annotations

import abc
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from pyarrow import fs as pafs

    from app.core.settings import LakeSettings

__all__ = ["CONTROL_DIR", "LakeStorage", "LocalStorage", "ObjectStorage", "is_s3_uri", "open_lake_storage"]

CONTROL_DIR = "_txlake"


def is_s3_uri(root: object) -> bool:
    """Whether a lake root names an S3 location (``s3://bucket/prefix``) rather than a local path."""
    return isinstance(root, str) and root.lower().startswith("s3://")


class LakeStorage(abc.ABC):
    """The storage operations the lake sink's commit protocol is built on (paths relative to the root)."""

    #: True when ``move`` is an atomic rename and directories exist (a local file system).
    local: bool

    @property
    @abc.abstractmethod
    def uri(self) -> str:
        """The lake root, for messages and for readers (a path or ``s3://bucket/prefix``)."""

    @abc.abstractmethod
    def initialize(self) -> None:
        """Make sure the lake root can be used (create the control directory; check the bucket)."""

    @abc.abstractmethod
    def makedirs(self, path: str) -> None:
        """Create directory ``path`` and its parents (no-op on object storage)."""

    @abc.abstractmethod
    def write_parquet(self, path: str, table: pa.Table, compression: str | None) -> None:
        """Write ``table`` as a Parquet file at ``path`` (the parent directory exists)."""

    @abc.abstractmethod
    def write_atomic(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data`` so that a reader sees the old or the new bytes, never a mix."""

    @abc.abstractmethod
    def exists(self, path: str) -> bool:
        """Whether a file is at ``path``."""

    @abc.abstractmethod
    def read(self, path: str) -> bytes | None:
        """The bytes at ``path``; ``None`` if there is nothing there."""

    @abc.abstractmethod
    def move(self, source: str, target: str) -> bool:
        """Make ``source`` visible as ``target`` (complete, atomically) and remove ``source``.

        Returns False when ``source`` does not exist (already moved). Idempotent.
        """

    @abc.abstractmethod
    def list_files(self, directory: str) -> list[str]:
        """The files directly in ``directory`` (relative to the root); empty if it does not exist."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Remove the file ``path`` (missing is fine)."""

    @abc.abstractmethod
    def age_s(self, path: str) -> float:
        """Seconds since the file ``path`` was last written (0 if it vanished meanwhile)."""

    def sync_directory(self, directory: str) -> None:  # noqa: B027 - nothing to do on an object store
        """Make the entries created in ``directory`` durable (a local fsync; nothing on S3)."""

    def probe(self) -> None:
        """Raise unless a small object can be written and removed under the lake root."""
        path = f"{CONTROL_DIR}/.probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.write_atomic_quick(path, b"ok")
        self.delete(path)

    def write_atomic_quick(self, path: str, data: bytes) -> None:
        """Like :meth:`write_atomic`, without durability (probes)."""
        self.write_atomic(path, data)


class LocalStorage(LakeStorage):
    """A lake in a local (or network-mounted, ReadWriteMany) directory."""

    local = True

    def __init__(self, root: Path | str, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync

    @property
    def uri(self) -> str:
        return str(self.root)

    def initialize(self) -> None:
        (self.root / CONTROL_DIR).mkdir(parents=True, exist_ok=True)

    def makedirs(self, path: str) -> None:
        (self.root / path).mkdir(parents=True, exist_ok=True)

    def write_parquet(self, path: str, table: pa.Table, compression: str | None) -> None:
        # A path, not a Python file object: pyarrow then writes through its own C++ file and
        # never takes the GIL back per chunk (this runs in a worker thread beside the loop).
        target = str(self.root / path)
        pq.write_table(table, target, compression=compression)
        if self.fsync:
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def sync_directory(self, directory: str) -> None:
        if self.fsync:
            _fsync_dir(self.root / directory)

    def write_atomic(self, path: str, data: bytes) -> None:
        """Temp file, (fsync,) rename over ``path``, (fsync the directory)."""
        target = self.root / path
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            if self.fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
        if self.fsync:
            _fsync_dir(target.parent)

    def write_atomic_quick(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def exists(self, path: str) -> bool:
        return (self.root / path).exists()

    def read(self, path: str) -> bytes | None:
        try:
            return (self.root / path).read_bytes()
        except FileNotFoundError:
            return None

    def move(self, source: str, target: str) -> bool:
        # No directory fsync: a rename lost to a power failure leaves the source in place,
        # and recovery replays the move.
        src, dst = self.root / source, self.root / target
        if not src.exists():
            return False
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        return True

    def list_files(self, directory: str) -> list[str]:
        path = self.root / directory
        if not path.exists():
            return []
        return [f"{directory}/{child.name}" for child in path.iterdir() if not child.is_dir()]

    def delete(self, path: str) -> None:
        (self.root / path).unlink(missing_ok=True)

    def age_s(self, path: str) -> float:
        try:
            return max(0.0, time.time() - (self.root / path).stat().st_mtime)
        except FileNotFoundError:
            return 0.0


class ObjectStorage(LakeStorage):
    """A lake under ``s3://bucket/prefix`` (AWS S3 or any S3-compatible store: MinIO, Ceph, moto…)."""

    local = False

    def __init__(self, uri: str, filesystem: pafs.FileSystem) -> None:
        parts = urlsplit(uri)
        if parts.scheme.lower() != "s3" or not parts.netloc:
            raise ValueError(f"not an S3 URI (s3://bucket/prefix): {uri!r}")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.base = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        self.filesystem = filesystem
        self._uri = f"s3://{self.base}"

    @property
    def uri(self) -> str:
        return self._uri

    def key(self, path: str) -> str:
        """The pyarrow path (``bucket/prefix/path``) of a lake-relative path."""
        return f"{self.base}/{path}" if path else self.base

    def initialize(self) -> None:
        from pyarrow import fs as pafs

        info = self.filesystem.get_file_info(self.bucket)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"bucket {self.bucket!r} does not exist")

    def makedirs(self, path: str) -> None:
        """Object stores have no directories: nothing to create."""

    def write_parquet(self, path: str, table: pa.Table, compression: str | None) -> None:
        with self.filesystem.open_output_stream(self.key(path)) as stream:
            pq.write_table(table, stream, compression=compression)

    def write_atomic(self, path: str, data: bytes) -> None:
        # One upload: S3 makes the object visible only once it is complete (PUT is atomic).
        with self.filesystem.open_output_stream(self.key(path)) as stream:
            stream.write(data)

    def exists(self, path: str) -> bool:
        from pyarrow import fs as pafs

        return self.filesystem.get_file_info(self.key(path)).type != pafs.FileType.NotFound

    def read(self, path: str) -> bytes | None:
        try:
            with self.filesystem.open_input_stream(self.key(path)) as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def move(self, source: str, target: str) -> bool:
        # No rename on S3: copy (server side; the target appears atomically, whole), then delete.
        # A crash in between leaves both objects; the next move of the pair copies again.
        from pyarrow import fs as pafs

        try:
            self.filesystem.copy_file(self.key(source), self.key(target))
        except OSError:
            # pyarrow reports a missing source as a plain OSError (NO_SUCH_KEY): look before failing.
            if self.filesystem.get_file_info(self.key(source)).type == pafs.FileType.NotFound:
                return False
            raise
        self.filesystem.delete_file(self.key(source))
        return True

    def list_files(self, directory: str) -> list[str]:
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self.key(directory), recursive=False, allow_not_found=True)
        base = self.base + "/"
        return [
            info.path[len(base):]
            for info in self.filesystem.get_file_info(selector)
            if info.type == pafs.FileType.File and info.path.startswith(base)
        ]

    def delete(self, path: str) -> None:
        try:
            self.filesystem.delete_file(self.key(path))
        except FileNotFoundError:
            pass

    def age_s(self, path: str) -> float:
        info = self.filesystem.get_file_info(self.key(path))
        if info.mtime is None:
            return 0.0
        return max(0.0, time.time() - info.mtime.timestamp())


def s3_filesystem(settings: LakeSettings) -> pafs.S3FileSystem:
    """A pyarrow S3 file system from the lake settings (unset options: the AWS SDK's defaults)."""
    from pyarrow import fs as pafs

    # allow_delayed_open: an upload smaller than one part (a ledger, most data files) is a single
    # PutObject instead of a multipart upload (create + part + complete).
    options: dict[str, object] = {"allow_delayed_open": True}
    if settings.s3_endpoint_url:
        endpoint = urlsplit(settings.s3_endpoint_url)
        if endpoint.scheme:
            options["scheme"] = endpoint.scheme
            options["endpoint_override"] = endpoint.netloc + endpoint.path.rstrip("/")
        else:
            options["endpoint_override"] = settings.s3_endpoint_url
    if settings.s3_region:
        options["region"] = settings.s3_region
    if settings.s3_access_key_id or settings.s3_secret_access_key:
        if not (settings.s3_access_key_id and settings.s3_secret_access_key):
            raise ValueError("lake.s3_access_key_id and lake.s3_secret_access_key go together")
        options["access_key"] = settings.s3_access_key_id
        options["secret_key"] = settings.s3_secret_access_key.get_secret_value()
    return pafs.S3FileSystem(**options)


def open_lake_storage(settings: LakeSettings) -> LakeStorage:
    """The storage of ``settings.root``: :class:`ObjectStorage` for ``s3://…``, else :class:`LocalStorage`."""
    if is_s3_uri(settings.root):
        return ObjectStorage(str(settings.root), s3_filesystem(settings))
    return LocalStorage(settings.root, settings.fsync)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
