"""Opening, locking and writing the store file: the OS-level steps, with errors that name the path."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from pathlib import Path

from narrative_pipeline.store.errors import StoreError, StoreLockedError

log = logging.getLogger("narrative_pipeline.store.datastore")


def open_file(path: Path, read_only: bool) -> int:
    """Open (creating for writers) with errors that say what is wrong with `path`."""
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a store file")
    if read_only:
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StoreError(
                f"{path}: no such store file (read_only=True does not create one)"
            ) from None
        except PermissionError as exc:
            raise StoreError(f"{path}: permission denied: {exc}") from None
    if path.exists():
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise StoreError(f"{path} is not a regular file")
        if not mode & 0o222:
            # Root could open it anyway; respect the read-only mark rather than append to it.
            raise StoreError(
                f"{path} is read-only on disk (mode {stat.filemode(mode)}); "
                "open it with read_only=True, or make it writable first"
            )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except PermissionError as exc:
        raise StoreError(
            f"{path}: cannot open for writing: {exc}; use read_only=True to read"
        ) from None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise StoreError(f"{path}: read-only file system; use read_only=True") from None
        raise
    if os.fstat(fd).st_size == 0:
        fsync_dir(path.parent)  # a fresh file: make its directory entry durable too
    return fd


def lock_file(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StoreLockedError(
            f"{path} is already open for writing by another process or DataStore "
            "(one writer at a time); open it with read_only=True to read alongside"
        ) from None


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def remove_stale_compaction(path: Path) -> None:
    """A compaction killed before its rename leaves a temporary file; the original is intact."""
    stale = path.with_name(path.name + ".compact-tmp")
    if stale.exists():
        log.warning("%s: removing %s left by an interrupted compaction", path, stale.name)
        stale.unlink(missing_ok=True)
