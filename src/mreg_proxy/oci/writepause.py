"""A pause of every write, shared by all replicas through the registry's own storage.

Garbage collection on registry 2.8 is safe only while nothing writes (a blob pushed while GC marks
can be swept before its manifest arrives). With one pod, GC runs before the registry serves. With
several replicas on one bucket, an operator pauses writes on all of them, collects, and lifts
the pause. The pause must reach every replica, so it cannot be an in-memory flag: it is a tagged
manifest in a reserved repository (CONTROL_REPOSITORY:ACTIVE_TAG) whose annotation holds the
time the pause ends on its own. A pause left behind by a crashed job thus expires; a GC job sets
one long enough for its collection and lifts it when done.

Each replica looks the marker up at most once per ``interval`` seconds, when a write comes in;
so a pause is in force everywhere ``interval`` seconds after it is set. Pulls never wait for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time

import aiohttp
from aiohttp import web
from yarl import URL

from .. import errors
from ..transport.forwarder import UPSTREAM_ERRORS, upstream_url
from ..spec.names import ACCEPT_ALL, OCI_MANIFEST
from .tagdelete import RegistryAnswer, expect, upload_blob

log = logging.getLogger("mreg.writepause")

CONTROL_REPOSITORY = "mreg-internal/write-pause"
ACTIVE_TAG = "active"
UNTIL = "io.mreg.write-pause.until"  # annotation: end of the pause, seconds since the epoch
MARKER_CONFIG = "application/vnd.mreg.write-pause.v1+json"
MAX_SECONDS = 24 * 3600  # a pause longer than a day is a mistake, not a GC
MAX_RETRY_AFTER = 60


class WritePause:
    """The pause as this replica last read it from the registry, re-read when ``interval`` old."""

    def __init__(self, upstream: URL, interval: float) -> None:
        self.upstream = upstream
        self.interval = interval
        self._until: float | None = None  # wall clock; None: no pause
        self._fresh_until = 0.0  # monotonic
        self._lock = asyncio.Lock()  # one lookup at a time; the others wait for its answer

    async def remaining(self, session: aiohttp.ClientSession) -> float:
        """Seconds the pause still lasts; 0 when writes are allowed."""
        if time.monotonic() >= self._fresh_until:
            async with self._lock:
                if time.monotonic() >= self._fresh_until:
                    self._until = await read_marker(session, self.upstream)
                    self._fresh_until = time.monotonic() + self.interval
        return max(0.0, self._until - time.time()) if self._until is not None else 0.0

    def remember(self, until: float | None) -> None:
        """What this replica just wrote: in force here at once, without waiting for a lookup."""
        self._until = until
        self._fresh_until = time.monotonic() + self.interval


def refused(remaining: float) -> web.Response:
    retry_after = max(1, min(MAX_RETRY_AFTER, int(remaining + 0.999)))
    return errors.error_response(
        503, "UNAVAILABLE", "writes are paused for maintenance (garbage collection); pulls work",
        headers={"Retry-After": str(retry_after)},
    )


def reserved(method: str) -> web.Response:
    return errors.error_response(
        403, "DENIED", f"{CONTROL_REPOSITORY} is reserved for the write pause: {method} refused"
    )


def _marker_url(upstream: URL, reference: str = ACTIVE_TAG) -> URL:
    return upstream_url(upstream, f"/v2/{CONTROL_REPOSITORY}/manifests/{reference}")


async def read_marker(session: aiohttp.ClientSession, upstream: URL) -> float | None:
    """The end of the pause recorded in the registry; None when there is none.

    A registry that cannot answer does not pause anything (the write itself will fail or not on
    its own): the proxy never refuses writes because of a failed lookup.
    """
    try:
        async with session.get(_marker_url(upstream), headers={"Accept": ACCEPT_ALL}) as response:
            if response.status == 404:
                return None
            body = await response.read()
            if response.status != 200:
                log.warning("write pause lookup: the registry answered %d; writes allowed", response.status)
                return None
        return float(json.loads(body)["annotations"][UNTIL])
    except UPSTREAM_ERRORS as exc:
        log.warning("write pause lookup failed (%r); writes allowed", exc)
    except (ValueError, KeyError, TypeError):
        log.warning("write pause marker unreadable; writes allowed")
    return None


async def write_marker(session: aiohttp.ClientSession, upstream: URL, seconds: float, by: str) -> float:
    """Pause writes for ``seconds`` from now (replacing any pause); returns its end."""
    until = time.time() + seconds
    config = json.dumps({"mreg": "write pause", "by": by, "until": until}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    await upload_blob(session, upstream, CONTROL_REPOSITORY, config, config_digest)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": MARKER_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [],
        "annotations": {UNTIL: repr(until)},
    }).encode()
    await expect("write pause marker", {201}, session.put(
        _marker_url(upstream), data=manifest, headers={"Content-Type": OCI_MANIFEST}
    ))
    return until


async def delete_marker(session: aiohttp.ClientSession, upstream: URL) -> None:
    """Lift the pause: delete the marker manifest (its only tag goes with it)."""
    async with session.head(_marker_url(upstream), headers={"Accept": ACCEPT_ALL}) as response:
        if response.status == 404:
            return
        if response.status != 200:
            raise RegistryAnswer(response, "resolve write pause marker")
        digest = response.headers["Docker-Content-Digest"]
    await expect("delete write pause marker", {202, 404}, session.delete(_marker_url(upstream, digest)))


MAX_CONTROL_BODY = 1024


async def control(
    request: web.Request, session: aiohttp.ClientSession, pause: WritePause, user: str
) -> web.Response:
    """``GET /mreg/write-pause``: the pause as this replica sees it. ``POST`` with
    ``{"seconds": N}`` pauses writes on every replica for N seconds (0 lifts the pause)."""
    if request.method == "POST":
        if (request.content_length or 0) > MAX_CONTROL_BODY:
            return errors.error_response(413, "SIZE_INVALID", f"at most {MAX_CONTROL_BODY} bytes")
        try:
            seconds = json.loads(await request.content.read(MAX_CONTROL_BODY))["seconds"]
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= MAX_SECONDS:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return errors.error_response(
                400, "UNSUPPORTED", f'expected {{"seconds": N}}, N from 0 (lift the pause) to {MAX_SECONDS}'
            )
        try:
            if seconds:
                pause.remember(await write_marker(session, pause.upstream, seconds, user))
                log.warning("writes paused for %ss by %s", seconds, user)
            else:
                await delete_marker(session, pause.upstream)
                pause.remember(None)
                log.warning("write pause lifted by %s", user)
        except RegistryAnswer as answer:
            answer.response.close()
            log.warning("write pause: %s failed, the registry answered %d", answer.step, answer.response.status)
            return errors.unavailable(502, f"{answer.step}: the registry answered {answer.response.status}")
        except UPSTREAM_ERRORS as exc:
            log.warning("write pause: the registry failed: %r", exc)
            return errors.unavailable(503, "the registry is not reachable; try again shortly")
    elif request.method != "GET":
        return errors.unsupported(request.method)
    remaining = await pause.remaining(session)
    return web.json_response({
        "paused": remaining > 0,
        "remaining_seconds": round(remaining, 1),
        # every replica has seen a change at most this long after it was made
        "propagation_seconds": pause.interval,
    })
