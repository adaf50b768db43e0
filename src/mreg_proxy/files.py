"""Crash-safe file replacement and the lock that serialises read-modify-write cycles."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


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


class LiveFile(Generic[T]):
    """A file the proxy follows while it runs (the users file, the policy file).

    ``latest()`` (on the event loop) and ``snapshot()`` (anywhere else) stat the file (cheap) and
    re-read it only when its identity, size or times changed, so edits take effect on the next
    request. ``latest()`` reads and parses in a thread, one read at a time, so that no file stalls
    the loop. A broken edit is logged once and the last good copy stays in force; a missing file
    is ``empty``. Subclasses say how to read the file and how to describe what they hold.
    """

    kind = "file"  # for the log: "users file"
    when_gone = "it is empty"  # what a missing file means, for the log
    error: type[Exception] = ValueError  # what ``read`` raises for a broken file

    def __init__(self, path: Path, empty: T, log: logging.Logger) -> None:
        self.path = path
        self._empty = empty
        self._value = empty
        self._log = log
        self._signature: tuple[int, ...] | None = None
        self._loading: asyncio.Future[None] | None = None

    def read(self, path: Path) -> T:
        raise NotImplementedError

    def describe(self, value: T) -> str:
        """What a loaded copy holds, for the log: "3 users and 1 token"."""
        return self.kind

    def snapshot(self) -> T:
        if self._stale():
            self._apply(self._outcome())
        return self._value

    async def latest(self) -> T:
        if self._loading is None and self._stale():
            outcome = asyncio.ensure_future(asyncio.to_thread(self._outcome))
            self._loading = asyncio.ensure_future(self._finish(outcome))
        if self._loading is not None:
            await asyncio.shield(self._loading)  # a client hanging up does not cancel the read
        return self._value

    async def _finish(self, outcome: asyncio.Future[T | Exception]) -> None:
        try:
            self._apply(await outcome)
        finally:
            self._loading = None

    def _outcome(self) -> T | Exception:
        try:
            return self.read(self.path)
        except self.error as exc:
            return exc

    def _stale(self) -> bool:
        """True when the file must be (re-)read; a file that is gone empties the copy here."""
        try:
            current = signature(self.path)
        except OSError as exc:
            self._log.error("cannot stat %s %s: %s; keeping the last good copy", self.kind, self.path, exc)
            return False
        if current is None:
            if self._signature != ():
                if self._signature is not None:
                    self._log.warning("%s %s is gone: %s", self.kind, self.path, self.when_gone)
                self._signature = ()
                self._value = self._empty
            return False
        if current == self._signature:
            return False
        self._signature = current  # a broken file is reported once, not on every request
        return True

    def _apply(self, outcome: T | Exception) -> None:
        if isinstance(outcome, Exception):
            self._log.error(
                "rejected %s: %s; keeping the last good copy (%s)", self.kind, outcome, self.describe(self._value)
            )
            return
        self._value = outcome
        self._log.info("loaded %s from %s", self.describe(outcome), self.path)


def read_limited(path: Path, limit: int, error: type[ValueError]) -> str | None:
    """The UTF-8 text of the regular file ``path``, at most ``limit`` bytes; None when missing."""
    try:
        # O_NONBLOCK: a FIFO put in the file's place must not hang the reader; fstat refuses it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise error(f"cannot read {path}: not a regular file")
    with open(fd, "rb") as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{path}: larger than {limit // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 (byte {exc.start})") from None
