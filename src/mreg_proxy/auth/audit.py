"""The audit log: security events as JSON lines, in one file shared by the proxy and the CLIs.

Each line is one object: ``time`` (UTC, whole seconds), ``event`` and the event's fields (who,
client address, repository, reference, ...). Strings go through ``json.dumps`` with
``ensure_ascii``, so no client can write a line break, or a fake line, into the log.

The file is bounded: a write that would take it past ``max_bytes`` first renames it to ``.1``
(replacing the previous ``.1``), so the log never holds more than twice ``max_bytes`` on the
auth volume. Append and rotation happen under the file's exclusive lock, so the proxy and any
number of CLIs write whole lines and never rotate over each other. ``-`` means standard output
(for a container whose logs are collected).

Only security events are written (failed logins, denials, pushes, deletes, changes made by the
CLIs), never one line per request: the access log is for that.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..files import exclusive_lock, keep_owner
from .tokens import parse_utc, utc_text

log = logging.getLogger("mreg.audit")

STDOUT = "-"
MAX_LINE = 8192  # a field a client controls (a user name, a tag) cannot make a line huge


@dataclass(frozen=True, slots=True)
class AuditLog:
    target: str  # a path, or "-" for standard output
    max_bytes: int

    def record(self, event: str, **fields: Any) -> None:
        """Append one event. Never raises: a full or read-only volume costs the line and one
        log message, not the request (or the CLI change) that caused it."""
        line = format_line(event, datetime.datetime.now(datetime.timezone.utc), fields)
        try:
            if self.target == STDOUT:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                self._append(Path(self.target), line.encode("utf-8"))
        except OSError as exc:
            log.error("cannot write the audit log %s: %s; lost: %s", self.target, exc, line.rstrip())

    def _append(self, path: Path, data: bytes) -> None:
        with exclusive_lock(path):
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(data) > self.max_bytes:
                os.replace(path, rotated(path))
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                keep_owner(fd, path.parent)  # a file root creates stays writable by the proxy
                os.write(fd, data)
            finally:
                os.close(fd)


def rotated(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def format_line(event: str, moment: datetime.datetime, fields: dict[str, Any]) -> str:
    entry = {"time": utc_text(moment), "event": event}
    entry.update({key: value for key, value in fields.items() if value is not None})
    line = json.dumps(entry, ensure_ascii=True, separators=(",", ":"), default=str)
    if len(line) > MAX_LINE:
        line = json.dumps({"time": entry["time"], "event": event, "truncated": line[:MAX_LINE]})
    return line + "\n"


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """Every event still on disk, oldest first (the rotated file, then the current one).
    Lines that do not parse (a file edited by hand) are skipped."""
    for part in (rotated(path), path):
        try:
            with part.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(entry, dict) and "time" in entry and "event" in entry:
                        yield entry
        except FileNotFoundError:
            continue


def selected(
    events: Iterator[dict[str, Any]], since: datetime.datetime | None, user: str | None
) -> Iterator[dict[str, Any]]:
    """The events at or after ``since`` that concern ``user``: made by it (``user`` in the proxy's
    events, ``by`` in the CLIs') or about it (``user`` or ``token`` in the CLIs')."""
    for entry in events:
        if since is not None:
            try:
                if parse_utc(entry["time"]) < since:
                    continue
            except ValueError:
                continue
        if user is not None and user not in (entry.get("user"), entry.get("token"), entry.get("by")):
            continue
        yield entry
