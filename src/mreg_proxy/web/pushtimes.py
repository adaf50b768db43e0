"""When each tag was last pushed, from the audit log: registry 2.8's API tells no push time.

Every push by tag through mreg is audited (``manifest_pushed`` with repository, tag and time), and
every tag deletion (``manifest_deleted``), so the log is the record of pushes. It is read
incrementally (from where the last read stopped; from the start again after a rotation), and only
when a page sorts by push time. Tags pushed before the log existed, or straight to the registry,
have no push time: pages fall back to the image's creation time for them. With the registry's
storage mounted (``MREG_REGISTRY_ROOT``) the pages read the tag links' times instead, as
retention does (pages.py ``note_push_times``), and this log is not read.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..auth.audit import rotated

log = logging.getLogger("mreg.web")

MAX_TAGS = 200_000  # (repository, tag) pairs remembered: a few tens of MiB at most
TIME_LENGTH = 19  # YYYY-MM-DDTHH:MM:SS: the audit log's times and the configs' compare alike


class PushTimes:
    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: the audit log goes to standard output, nothing to read
        self._times: dict[tuple[str, str], str] = {}
        self._inode: int | None = None
        self._offset = 0
        self._full = False

    def of(self, repository: str, tag: str) -> str:
        return self._times.get((repository, tag), "")

    def refresh(self) -> None:
        """Read what the log gained since the last call (blocking: run it in a thread)."""
        if self.path is None:
            return
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return
        if status.st_ino != self._inode or status.st_size < self._offset:  # rotated or replaced
            self._times, self._offset, self._inode = {}, 0, status.st_ino
            self._read(rotated(self.path), 0)
        self._offset = self._read(self.path, self._offset)

    def _read(self, path: Path, offset: int) -> int:
        """Apply the whole lines of ``path`` from ``offset``; returns the offset after them."""
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                for line in handle:
                    if not line.endswith(b"\n"):
                        break  # a line being written: read it next time
                    offset += len(line)
                    if b'"manifest_' in line:
                        self._apply(line)
        except FileNotFoundError:
            pass
        return offset

    def _apply(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
        except ValueError:
            return
        if not isinstance(entry, dict):
            return
        repository, tag, moment = entry.get("repository"), entry.get("tag"), entry.get("time")
        if not (isinstance(repository, str) and isinstance(tag, str) and isinstance(moment, str)):
            return
        if entry.get("event") == "manifest_deleted":
            self._times.pop((repository, tag), None)
        elif entry.get("event") == "manifest_pushed":
            if len(self._times) >= MAX_TAGS and (repository, tag) not in self._times:
                if not self._full:
                    log.warning("push times: more than %d tags in the audit log; newer ones sort by creation time", MAX_TAGS)
                    self._full = True
                return
            self._times[(repository, tag)] = moment[:TIME_LENGTH]
