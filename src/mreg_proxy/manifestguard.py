"""Manifest pushes by tag, verified after the fact and repaired: safe with several replicas.

registry 2.8 deletes a manifest by digest in two steps: it removes the revision link, then
untags every tag it finds. A push of the same manifest writes the revision link, then the tag.
When a delete on one replica falls between a push's two writes on another, the pushed tag points
at a revision that is gone (a dangling tag: listed, yet its manifest unknown), and the push
answered 201. Measured on two replicas on Ceph: 3 in 200 rounds; through one replica the
per-repository lock of app.py orders the two (0 in 200). Nothing in S3 can lock across replicas
(no compare-and-swap), so the proxy checks instead: after a 201 it resolves the tag, and when the
registry no longer knows it, pushes the same manifest again, which restores the revision. The
push then wins, as it would have in the other order. One HEAD per manifest push; manifests are
small, so the body is kept for the repeat.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from . import errors
from .proxy import UPSTREAM_ERRORS, forward, forwarded_headers, relay, upstream_failure, upstream_url
from .refs import ACCEPT_ALL

log = logging.getLogger("mreg.manifestguard")

# The spec's size registries should accept at least; a larger body (or one of unknown length) is
# forwarded as it comes, unverified, rather than held in memory.
MAX_MANIFEST_BYTES = 4 << 20
REPAIRS = 2  # a third delete racing the same push is not a race any more but a loop


async def put_manifest(
    request: web.Request, session: aiohttp.ClientSession, upstream: URL, name: str, tag: str
) -> web.StreamResponse:
    length = request.content_length
    if length is None or length > MAX_MANIFEST_BYTES:
        return await forward(request, session, upstream)
    try:
        body = await request.content.readexactly(length) if length else b""
    except asyncio.IncompleteReadError:
        return errors.error_response(400, "MANIFEST_INVALID", "the manifest ended before its Content-Length")
    url = upstream_url(upstream, request.raw_path)
    headers = forwarded_headers(request, with_body=True)
    try:
        response = await session.put(url, headers=headers, data=body, allow_redirects=False, compress=None)
    except UPSTREAM_ERRORS as exc:
        return upstream_failure(request, exc)
    try:
        if response.status == 201 and not await _stands(session, upstream, url, headers, body, name, tag):
            return errors.unavailable(503, f"{name}:{tag} was deleted while it was pushed; push it again")
        return await relay(request, response, upstream)
    except UPSTREAM_ERRORS as exc:
        return upstream_failure(request, exc)
    finally:
        response.close()


async def _stands(
    session: aiohttp.ClientSession, upstream: URL, url: URL, headers: CIMultiDict[str], body: bytes, name: str, tag: str
) -> bool:
    """True once the tag resolves, repairing it up to REPAIRS times."""
    for attempt in range(REPAIRS + 1):
        tag_url = upstream_url(upstream, f"/v2/{name}/manifests/{tag}")
        async with session.head(tag_url, headers={"Accept": ACCEPT_ALL}) as check:
            if check.status != 404:  # resolved (or a failure that says nothing about the race)
                return True
        if attempt == REPAIRS:
            break
        log.warning("%s:%s dangled after its push (a delete by digest ran meanwhile): pushing it again", name, tag)
        async with session.put(url, headers=headers, data=body, allow_redirects=False, compress=None) as again:
            await again.read()
            if again.status != 201:
                break
    log.error("%s:%s still dangles after %d repairs", name, tag, REPAIRS)
    return False
