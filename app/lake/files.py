"""File-tree operations on a lake storage that the sinks' small interface does not need.

Snapshot versions and the catalog work on whole directories: list a tree with sizes, stream a
Parquet file in or out, move or remove a directory. Both storages are reached through a pyarrow
file system, so one code path serves a local lake and an S3 lake.

``move_tree`` is atomic only on a local file system (one ``rename`` of the directory); on S3 it
moves object by object (each copy is atomic and idempotent, the whole is not): publish readers
through a pointer written after the move, never by listing a half-moved prefix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pyarrow import fs as pafs

from app.lake.storage import LakeStorage, LocalStorage, ObjectStorage

__all__ = ["LakeFile", "list_tree", "list_dirs", "move_tree", "native", "remove_tree", "sync_tree"]


@dataclass(frozen=True)
class LakeFile:
    path: str  # relative to the lake root, "/"-separated
    size: int


def native(storage: LakeStorage, path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system and native path of a lake-relative ``path``."""
    if isinstance(storage, LocalStorage):
        return pafs.LocalFileSystem(), str(storage.root / path) if path else str(storage.root)
    if isinstance(storage, ObjectStorage):
        return storage.filesystem, storage.key(path)
    raise TypeError(f"unsupported lake storage {type(storage).__name__}")


def _relative(storage: LakeStorage, native_path: str) -> str:
    base = str(storage.root) if isinstance(storage, LocalStorage) else storage.key("")
    return native_path[len(base):].lstrip("/")


def list_tree(storage: LakeStorage, directory: str) -> list[LakeFile]:
    """Every file under ``directory`` (recursively), sorted by path; empty if there is none."""
    filesystem, root = native(storage, directory)
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    files = [
        LakeFile(_relative(storage, info.path), info.size or 0)
        for info in filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File
    ]
    return sorted(files, key=lambda f: f.path)


def list_dirs(storage: LakeStorage, directory: str) -> list[str]:
    """Names of the sub-directories directly under ``directory`` (S3: common prefixes)."""
    filesystem, root = native(storage, directory)
    selector = pafs.FileSelector(root, recursive=False, allow_not_found=True)
    return sorted(
        info.base_name for info in filesystem.get_file_info(selector) if info.type == pafs.FileType.Directory
    )


def remove_tree(storage: LakeStorage, directory: str) -> None:
    """Remove ``directory`` and everything under it; missing is fine."""
    filesystem, root = native(storage, directory)
    if filesystem.get_file_info(root).type == pafs.FileType.NotFound:
        return
    filesystem.delete_dir(root)


def move_tree(storage: LakeStorage, source: str, target: str) -> int:
    """Move the files of ``source`` under ``target``; returns how many were moved.

    Local: one atomic ``rename`` of the directory (``target`` must not exist). S3: file by file
    with :meth:`ObjectStorage.move`; replaying an interrupted move finishes it.
    """
    if isinstance(storage, LocalStorage):
        src, dst = storage.root / source, storage.root / target
        if not src.exists():
            return 0
        dst.parent.mkdir(parents=True, exist_ok=True)
        count = sum(1 for _ in src.iterdir())
        os.replace(src, dst)
        if storage.fsync:
            sync_tree(storage, os.path.dirname(target))
        return count
    moved = 0
    for entry in list_tree(storage, source):
        moved += storage.move(entry.path, target + entry.path[len(source):])
    return moved


def sync_tree(storage: LakeStorage, directory: str) -> None:
    """fsync a local directory (its entries become durable); nothing on S3."""
    if isinstance(storage, LocalStorage) and storage.fsync:
        fd = os.open(storage.root / directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
