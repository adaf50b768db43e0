"""When each image was last pulled, per repository and digest, for retention's ``pulled_within``.

The proxy notes every manifest GET that the registry answered 200 in memory and writes the
pending ones at most once per ``interval`` (a pull of a multi-arch image is several manifest
GETs; one file write per request would be absurd), merged under the file's lock with what other
replicas wrote (the later time wins), as CI tokens' last use is (auth/tokencheck.py). The file
is bounded: beyond MAX_ENTRIES, the entries pulled longest ago are dropped (they are the ones no
``pulled_within`` would keep anyway). A broken file is only information: it is read as empty.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Callable, Mapping

from ..files import atomic_write, exclusive_lock, read_limited

log = logging.getLogger("mreg.pulls")

INTERVAL = 60.0  # seconds between two writes of the file
MAX_ENTRIES = 50_000  # about 6 MB of JSON; rewritten at most once a minute
MAX_FILE_BYTES = 16 << 20

Key = str  # "repository@digest"


def key(repository: str, digest: str) -> Key:
    return f"{repository}@{digest}"


def read_pull_times(path: Path) -> dict[Key, float]:
    """``repository@digest`` -> last pull (seconds since the epoch); {} when missing or broken."""
    try:
        text = read_limited(path, MAX_FILE_BYTES, ValueError)  # a FIFO in its place must not hang us
        if text is None:
            return {}
        doc = json.loads(text)
    except ValueError as exc:
        log.warning("ignoring the pull times file %s: %s", path, exc)
        return {}
    if not isinstance(doc, dict):
        return {}
    return {
        str(name): float(moment) for name, moment in doc.items()
        if isinstance(moment, (int, float)) and not isinstance(moment, bool)
    }


def write_pull_times(path: Path, update: Mapping[Key, float], limit: int = MAX_ENTRIES) -> None:
    """Merge ``update`` into the file (the later time wins), keep the ``limit`` latest, atomically."""
    with exclusive_lock(path):
        times = read_pull_times(path)
        for name, moment in update.items():
            if times.get(name, 0.0) < moment:
                times[name] = moment
        if len(times) > limit:
            times = dict(sorted(times.items(), key=lambda item: item[1], reverse=True)[:limit])
        text = json.dumps({name: round(moment, 3) for name, moment in sorted(times.items())}, indent=0)
        atomic_write(path, (text + "\n").encode("utf-8"), mode=0o600)


class PullTimes:
    """Pulls noted in memory; ``claim()`` says when the pending ones should be written."""

    def __init__(self, path: Path, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._interval = interval
        self._clock = clock
        self._pending: dict[Key, float] = {}
        self._writing: dict[Key, float] = {}  # taken by a flush in progress, not yet in the file
        self._last_write: float | None = None
        self.writes = 0
        self._flushes: set[asyncio.Task[None]] = set()

    def note(self, repository: str, digest: str, moment: float) -> None:
        if len(self._pending) < MAX_ENTRIES:  # a flood of distinct digests costs no memory beyond this
            self._pending[key(repository, digest)] = moment

    def noted(self, repository: str, digest: str) -> None:
        """On the event loop: note a pull now, and write the pending ones in a thread when due."""
        self.note(repository, digest, time.time())
        if self.claim():
            task = asyncio.create_task(self.flush())
            self._flushes.add(task)  # keep a reference until it is done
            task.add_done_callback(self._flushes.discard)

    async def close(self) -> None:
        """Wait for writes in flight, then write what is still pending."""
        for task in list(self._flushes):
            try:
                await task
            except Exception:  # noqa: BLE001 - flush logs its own failures; a lost note is harmless
                pass
        await self.flush()

    def claim(self) -> bool:
        """True when a write is due; the interval starts now."""
        now = self._clock()
        if not self._pending or (self._last_write is not None and now - self._last_write < self._interval):
            return False
        self._last_write = now
        return True

    def pending(self) -> Mapping[Key, float]:
        """What the file may not hold yet (call it on the event loop, which is where notes change)."""
        return {**self._writing, **self._pending}

    async def flush(self) -> None:
        """Write what is pending, in a thread. The batch is taken here, on the event loop where
        notes change: the thread gets a dict nobody touches any more, and until the file holds
        them, the notes being written still count in ``pending()``."""
        batch, self._pending = self._pending, {}
        if not batch:
            return
        self._writing = {**self._writing, **batch}
        try:
            await asyncio.to_thread(write_pull_times, self.path, batch)
            self.writes += 1
        except OSError as exc:
            log.warning("cannot record pulls in %s: %s", self.path, exc)
        finally:
            # only this batch's notes: another flush's may still be on their way to the file
            self._writing = {k: v for k, v in self._writing.items() if batch.get(k) != v}
