"""Checking CI tokens in the proxy, and remembering when each was last used.

A token's secret is checked with one keyed hash (tokens.py): no bcrypt, no cache. When each token
was last used is kept in memory and written to ``token-usage.json`` beside the users file at most
once per ``interval`` (a push sends dozens of requests: one file write per request would be
absurd). The file is merged under its lock (the newer time wins), so several replicas, and
``manage-user token rm``, can share it.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from pathlib import Path
from typing import Callable, Mapping

from ..files import atomic_write, exclusive_lock
from .tokens import parse_utc, secret_matches, utc_text
from .users import Token

log = logging.getLogger("mreg.tokens")

USAGE_INTERVAL = 60.0  # seconds between two writes of the usage file, at most one per interval


def check_token(token: Token, secret: str, now: datetime.datetime) -> str | None:
    """Why ``secret`` does not log ``token`` in at ``now`` (for the audit log), None when it does."""
    if not secret_matches(secret, token.secret_hash):
        return "wrong token secret"
    if token.expired(now):
        return "token expired"
    return None


def read_usage(path: Path) -> dict[str, datetime.datetime]:
    """Token name -> last use, from the usage file; {} when missing or unreadable (it is only
    information: a broken file must not stop anything)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the token usage file %s: %s", path, exc)
        return {}
    usage: dict[str, datetime.datetime] = {}
    if isinstance(doc, dict):
        for name, value in doc.items():
            try:
                usage[str(name)] = parse_utc(value)
            except ValueError:
                continue
    return usage


def write_usage(path: Path, update: Mapping[str, datetime.datetime], drop: frozenset[str] = frozenset()) -> None:
    """Merge ``update`` into the usage file (the later time wins) and forget ``drop``, atomically."""
    with exclusive_lock(path):
        usage = read_usage(path)
        for name, moment in update.items():
            if name not in usage or usage[name] < moment:
                usage[name] = moment
        for name in drop:
            usage.pop(name, None)
        text = json.dumps({name: utc_text(moment) for name, moment in sorted(usage.items())}, indent=1)
        atomic_write(path, (text + "\n").encode("utf-8"), mode=0o600)


class TokenUsage:
    """Last uses noted in memory; ``claim()`` says when the pending ones should be written."""

    def __init__(
        self, path: Path, interval: float = USAGE_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self._interval = interval
        self._clock = clock
        self._pending: dict[str, datetime.datetime] = {}
        self._last_write: float | None = None
        self.writes = 0

    def note(self, name: str, now: datetime.datetime) -> None:
        self._pending[name] = now

    def claim(self) -> bool:
        """True when a write is due; the interval starts now, so that the requests arriving while
        that write is scheduled do not schedule more."""
        now = self._clock()
        if not self._pending or (self._last_write is not None and now - self._last_write < self._interval):
            return False
        self._last_write = now
        return True

    def flush(self) -> None:
        """Write what is pending (blocking: run it in a thread from the event loop)."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            write_usage(self.path, pending)
            self.writes += 1
        except OSError as exc:
            log.warning("cannot record token use in %s: %s", self.path, exc)
