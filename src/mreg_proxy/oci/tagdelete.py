"""Deleting one tag, also on registries that cannot (distribution 2.8).

The OCI distribution spec 1.1 lets ``DELETE /v2/<name>/manifests/<tag>`` remove just that tag.
registry 2.8 answers it with 400 ``DIGEST_INVALID``, and its delete by digest removes every tag that
points at the digest. So the proxy asks the registry first (a newer one does it properly) and, when
it answers 400, re-points the tag at a throw-away manifest of its own and deletes that manifest by
digest: only that tag goes, the image and its other tags stay. Each throw-away manifest is unique,
so concurrent deletes of different tags (or of the same one) cannot delete each other's manifest.
Its tiny config blob is left for the next garbage collection.

registry 2.8's delete by digest reads the link of every tag in the repository; a tag link being
written at that moment reads as garbage and the delete fails half-way (500, manifest gone, tag left
dangling). So the placeholder steps of one repository run one at a time (RepositoryLocks).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import weakref
from typing import Awaitable, Mapping

import aiohttp
from aiohttp import web
from yarl import URL

from ..errors import API_VERSION
from ..transport.forwarder import UPSTREAM_ERRORS, forwarded_headers, relay, upstream_failure, upstream_url
from ..spec.names import ACCEPT_ALL, OCI_MANIFEST

log = logging.getLogger("mreg.tagdelete")

PLACEHOLDER_CONFIG = "application/vnd.mreg.tag-deletion.v1+json"
# Steps whose other answers are ordinary verdicts (done, unknown tag); any later one is a failure.
_VERDICTS = frozenset({"delete by tag", "resolve"})


class RepositoryLocks:
    """One asyncio.Lock per repository, kept only while some request holds or awaits it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock


class RegistryAnswer(Exception):
    """The registry answered a step with something else than the flow needs: that answer, as the
    registry gave it, becomes the client's answer."""

    def __init__(self, response: aiohttp.ClientResponse, step: str) -> None:
        super().__init__(step)
        self.response = response
        self.step = step

    async def relayed(self, request: web.Request, upstream: URL) -> web.StreamResponse:
        """The client's answer: the registry's, as it gave it (body too), then released."""
        try:
            return await relay(request, self.response, upstream)
        finally:
            self.response.close()


async def delete_tag(
    request: web.Request,
    session: aiohttp.ClientSession,
    upstream: URL,
    locks: RepositoryLocks,
    name: str,
    tag: str,
) -> web.StreamResponse:
    try:
        await remove_tag(session, upstream, locks(name), name, tag, forwarded_headers(request, with_body=False))
    except RegistryAnswer as answer:
        if answer.step not in _VERDICTS:
            log.warning("deleting %s:%s stopped at %s: the registry answered %d",
                        name, tag, answer.step, answer.response.status)
        return await answer.relayed(request, upstream)
    except UPSTREAM_ERRORS as exc:
        return upstream_failure(request, exc)
    return web.Response(status=202, headers=[API_VERSION])


async def remove_tag(
    session: aiohttp.ClientSession,
    upstream: URL,
    lock: asyncio.Lock,
    name: str,
    tag: str,
    headers: Mapping[str, str],
    expected_digest: str | None = None,
) -> bool:
    """True when the tag is gone; False, with nothing changed, when ``expected_digest`` is given
    and the tag points elsewhere. Raises RegistryAnswer when the registry's answer ends it (the
    caller closes that answer), or one of UPSTREAM_ERRORS. The API, the web page and retention
    delete tags through here."""
    manifests = f"/v2/{name}/manifests"
    tag_url = upstream_url(upstream, f"{manifests}/{tag}")

    async def resolve() -> aiohttp.ClientResponse:
        # GET, not HEAD: a 404 then carries the registry's error code (NAME_UNKNOWN, MANIFEST_UNKNOWN).
        return await expect("resolve", {200}, session.get(tag_url, headers={"Accept": ACCEPT_ALL}))

    if expected_digest is None:
        # Anything but 400 is the registry's own verdict: done (202), no such tag (404), deletes
        # disabled (405: the throw-away manifest could not be deleted either), or a failure.
        await expect("delete by tag", {400}, session.delete(tag_url, headers=headers))
        await resolve()
    async with lock:
        if expected_digest is not None:
            # Checked and deleted under the lock every push of this repository through the proxy
            # holds (put_manifest): a push of the tag cannot fall between the check and the delete.
            if (await resolve()).headers.get("Docker-Content-Digest") != expected_digest:
                return False
            await expect("delete by tag", {400}, session.delete(tag_url, headers=headers))
        manifest = await _push_placeholder(session, upstream, name, tag)
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        await expect(
            "delete placeholder", {202}, session.delete(upstream_url(upstream, f"{manifests}/{digest}"))
        )
    return True


async def _push_placeholder(
    session: aiohttp.ClientSession, upstream: URL, name: str, tag: str
) -> bytes:
    """Point ``tag`` at a new, unique manifest; returns the manifest's bytes."""
    config = json.dumps(
        {"mreg": f"placeholder for deleting tag {tag}", "nonce": secrets.token_hex(16)}
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    await upload_blob(session, upstream, name, config, config_digest)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": PLACEHOLDER_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [],
        }
    ).encode()
    await expect(
        "push placeholder manifest",
        {201},
        session.put(
            upstream_url(upstream, f"/v2/{name}/manifests/{tag}"),
            data=manifest,
            headers={"Content-Type": OCI_MANIFEST},
        ),
    )
    return manifest


async def upload_blob(
    session: aiohttp.ClientSession, upstream: URL, name: str, data: bytes, digest: str
) -> None:
    """Upload with POST then PUT ?digest= (registry 2.8 ignores a monolithic POST's body)."""
    started = await expect(
        "start placeholder upload", {202}, session.post(upstream_url(upstream, f"/v2/{name}/blobs/uploads/"))
    )
    # The registry's Location may name any host; only its path and query are ours to use.
    location = URL(started.headers["Location"], encoded=True)
    query = location.raw_query_string
    target = f"{location.raw_path}?{query + '&' if query else ''}digest={digest}"
    await expect(
        "upload placeholder config",
        {201},
        session.put(
            upstream_url(upstream, target),
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        ),
    )


async def expect(
    step: str, statuses: set[int], sending: Awaitable[aiohttp.ClientResponse]
) -> aiohttp.ClientResponse:
    """The response when its status is one of ``statuses`` (body read, connection reusable);
    otherwise raise it as the client's answer."""
    response = await sending
    if response.status not in statuses:
        raise RegistryAnswer(response, step)
    await response.read()  # small bodies; reading them returns the connection to the pool
    return response
