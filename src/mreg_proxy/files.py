"""Crash-safe file replacement and the lock that serialises read-modify-write cycles."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Iterator


def signature(path: Path) -> tuple[int, ...] | None:
    """What changes when a file is replaced or edited (identity, size, times); None when absent.

    Cheap enough to take on every request: a file is re-read only when this changes.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: readers see the old file or the new one, never half of it.

    The temporary file lives in the same folder so that the rename stays on one filesystem.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        keep_owner(fd, path)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def keep_owner(fd: int, reference: Path) -> None:
    """Root (``podman exec --user 0``) writes files that the proxy's user can still read: the
    new file takes the owner of the one it replaces, else of its folder (the auth volume)."""
    if os.geteuid() != 0:
        return
    try:
        st = os.stat(reference)
    except FileNotFoundError:
        st = os.stat(reference.parent)
    os.fchown(fd, st.st_uid, st.st_gid)


def remove(path: Path) -> bool:
    """Delete ``path`` durably; False when there was nothing to delete."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    _fsync_dir(path.parent)
    return True


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock tied to ``path`` for a read-modify-write cycle.

    The lock is a sibling file (``.NAME.lock``): locking ``path`` itself would not work, because
    atomic_write replaces that inode.
    """
    lock_path = path.with_name(f".{path.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        keep_owner(fd, path.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
