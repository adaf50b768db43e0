"""Garbage collection without downtime in the single pod, and the maintenance the proxy runs.

The registry container runs the stock image; its start command (mreg.yml) serves in the
background and, once a second, looks at ``request`` in a folder it shares with the proxy's
container (an emptyDir, ``MREG_GC_DIR``). When the proxy writes a new id there, the loop runs
plain ``registry garbage-collect`` (never ``--delete-untagged``: it deletes the platform manifests
of multi-arch images) and writes ``done`` = "ID EXIT_STATUS", with the end of the collector's
output in ``gc.log``. The registry keeps serving meanwhile: pulls work throughout.

A collection (``collect``):
1. pauses writes (the write pause marker, writepause.py: pushes and deletes get 503 with
   Retry-After; pulls are never paused), then waits ``DRAIN_SECONDS`` for writes already admitted;
2. forgets the manifests no tag needs any more (storage/prune.py's rules, read from the storage
   mounted read-only at ``MREG_REGISTRY_ROOT``; the forgetting itself is the registry's own delete
   by digest), so that images whose tags were deleted give their space back; manifests younger
   than ``min_age`` stay (a multi-arch push in flight has untagged platform manifests);
3. asks the collector loop and waits for its answer;
4. lifts the pause, whatever happened.

Only one maintenance (retention run or collection) runs at a time in a proxy.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..auth.audit import AuditLog
from ..files import atomic_write
from ..policy.rules import Policy
from ..storage.prune import prune
from ..transport.forwarder import UPSTREAM_ERRORS, upstream_url
from .retention_runs import Registry, Report, run_retention
from .tagdelete import RegistryAnswer, RepositoryLocks, expect
from .writepause import ACTIVE_TAG, CONTROL_REPOSITORY, WritePause, delete_marker, write_marker

log = logging.getLogger("mreg.collect")

DRAIN_SECONDS = 2.0  # writes admitted just before the pause (a manifest PUT) finish meanwhile
POLL_SECONDS = 0.5
MAX_COLLECT_SECONDS = 3600.0  # the pause marker outlives a crashed proxy by at most this much
DEFAULT_MIN_AGE = 600.0
REQUEST, DONE, LOG = "request", "done", "gc.log"
MAX_LOG_BYTES = 4096
MARKER_ATTEMPTS = 4  # deletes of the pause marker before giving up: 0.25 + 0.5 + 1 s of waits
MARKER_BACKOFF = 0.25


class CollectError(Exception):
    """The collection could not run or failed; the message says why, for the operator."""


@dataclass(frozen=True)
class Collection:
    forgotten: int
    status: int  # the collector's exit status
    paused_seconds: float
    collector_seconds: float
    output: str  # the end of the collector's output

    def as_json(self) -> dict[str, object]:
        return {
            "forgotten_manifests": self.forgotten, "status": self.status,
            "paused_seconds": round(self.paused_seconds, 2), "collector_seconds": round(self.collector_seconds, 2),
            "output": self.output,
        }


DRY_RUNS = 2  # web page dry runs in flight, beside the runs under the lock


class Maintenance:
    """Retention runs and collections of one proxy, one at a time."""

    def __init__(
        self, registry: Registry, pause: WritePause, locks: RepositoryLocks, audit: AuditLog, gc_dir: Path | None,
        *, drain: float = DRAIN_SECONDS, timeout: float = MAX_COLLECT_SECONDS,
    ) -> None:
        self.registry = registry
        self.pause = pause
        self.locks = locks
        self.audit = audit
        self.gc_dir = gc_dir
        self.drain = drain
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._dry_runs = asyncio.Semaphore(DRY_RUNS)

    async def retention(
        self, policy: Policy, may_delete: Callable[[str], bool], *, repository: str | None, dry_run: bool,
        allow_empty: bool, by: str,
    ) -> Report:
        async with self._lock:
            return await run_retention(
                self.registry, policy, may_delete, repository=repository, dry_run=dry_run,
                allow_empty=allow_empty, locks=self.locks, audit=self.audit, by=by,
            )

    async def dry_run(self, policy: Policy, may_delete: Callable[[str], bool], repository: str, by: str) -> Report:
        """The dry run of one repository, as ``retention(dry_run=True)`` computes it, without
        waiting for the lock: it changes nothing, and a web page must not wait an hour behind a
        collection (during one, writes are paused, so the tags it reads hold still). At most
        DRY_RUNS at once: each reads every manifest of its repository, and a reload costs nothing."""
        async with self._dry_runs:
            return await run_retention(
                self.registry, policy, may_delete, repository=repository, dry_run=True,
                locks=self.locks, audit=self.audit, by=by,
            )

    async def collect(self, by: str, min_age: float = DEFAULT_MIN_AGE) -> Collection:
        if self.gc_dir is None:
            raise CollectError("no collector: set MREG_GC_DIR to the folder shared with the registry container (mreg.yml)")
        async with self._lock:
            session, upstream = self.registry.session, self.registry.upstream
            started = time.monotonic()
            until = await write_marker(session, upstream, self.timeout + 60, f"garbage collection by {by}")
            self.pause.remember(until)
            log.warning("writes paused for garbage collection (by %s)", by)
            try:
                await asyncio.sleep(self.drain)
                forgotten = await self._forget(min_age)
                status, output, collector_seconds = await self._run_collector()
            finally:
                try:
                    await self._lift_pause(until)
                finally:
                    self.pause.remember(None)
                paused = time.monotonic() - started
                log.warning("write pause lifted after %.1f s of garbage collection", paused)
        result = Collection(forgotten, status, paused, collector_seconds, output)
        self.audit.record("garbage_collected", by=by, **result.as_json())
        if status != 0:
            raise CollectError(f"registry garbage-collect exited {status}: {output[-300:]}")
        return result

    async def _lift_pause(self, until: float) -> None:
        """Delete the pause marker, retrying a registry that fails for a moment; when it cannot,
        say so loudly instead of raising: the collection's own outcome (or error) must not be
        replaced by this one, and the marker still ends by itself at ``until``."""
        session, upstream = self.registry.session, self.registry.upstream
        failure = ""
        for attempt in range(MARKER_ATTEMPTS):
            if attempt:
                await asyncio.sleep(MARKER_BACKOFF * 2 ** (attempt - 1))
            try:
                await delete_marker(session, upstream)
                return
            except RegistryAnswer as answer:
                answer.response.close()
                failure = f"{answer.step}: the registry answered {answer.response.status}"
            except UPSTREAM_ERRORS as exc:
                failure = repr(exc)
            log.warning("lifting the write pause, attempt %d of %d: %s", attempt + 1, MARKER_ATTEMPTS, failure)
        log.error(
            "the write pause marker could not be removed (%s): writes stay paused for %.0f s more, until it "
            "expires (%s:%s in the registry)", failure, max(0.0, until - time.time()), CONTROL_REPOSITORY, ACTIVE_TAG,
        )

    async def _forget(self, min_age: float) -> int:
        """Forget, through the registry, the manifests no tag needs (storage/prune.py decides)."""
        root = self.registry.storage_root
        if root is None:
            log.warning("MREG_REGISTRY_ROOT is not set: untagged images are not forgotten, their space stays")
            return 0
        doomed = await asyncio.to_thread(prune, root, dry_run=True, min_age=min_age)
        for item in doomed:
            await expect(
                f"forget {item.repository}@{item.digest}", {202, 404},
                self.registry.session.delete(
                    upstream_url(self.registry.upstream, f"/v2/{item.repository}/manifests/{item.digest}")
                ),
            )
        return len(doomed)

    async def _run_collector(self) -> tuple[int, str, float]:
        assert self.gc_dir is not None
        request_id = secrets.token_hex(8)
        started = time.monotonic()
        await asyncio.to_thread(atomic_write, self.gc_dir / REQUEST, f"{request_id}\n".encode(), 0o644)
        deadline = started + self.timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            answer = await asyncio.to_thread(_read_done, self.gc_dir)
            if answer is not None and answer[0] == request_id:
                return answer[1], await asyncio.to_thread(_read_log, self.gc_dir), time.monotonic() - started
        raise CollectError(
            f"the collector did not answer within {self.timeout:.0f} s: is the registry container's "
            f"start command the one of mreg.yml, with {self.gc_dir} shared?"
        )


def _read_done(folder: Path) -> tuple[str, int] | None:
    try:
        words = (folder / DONE).read_text().split()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    if len(words) != 2 or not words[1].isdigit():
        return None
    return words[0], int(words[1])


def _read_log(folder: Path) -> str:
    try:
        with (folder / LOG).open("rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - MAX_LOG_BYTES))
            return handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""

