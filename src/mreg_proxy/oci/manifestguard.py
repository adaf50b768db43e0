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
small (read whole, see referrers_api.put_manifest), so the body is kept for the repeat.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from yarl import URL

from ..transport.forwarder import forwarded_headers, upstream_url
from ..spec.names import ACCEPT_ALL

log = logging.getLogger("mreg.manifestguard")

REPAIRS = 2  # a third delete racing the same push is not a race any more but a loop


async def tag_stands(
    request: web.Request, session: aiohttp.ClientSession, upstream: URL, body: bytes, name: str, tag: str
) -> bool:
    """After a 201 for ``PUT /v2/<name>/manifests/<tag>`` with ``body``: True once the tag
    resolves, pushing the same manifest again up to REPAIRS times when it dangles. Raises
    UPSTREAM_ERRORS."""
    url = upstream_url(upstream, request.raw_path)
    headers = forwarded_headers(request, with_body=True)
    tag_url = upstream_url(upstream, f"/v2/{name}/manifests/{tag}")
    for attempt in range(REPAIRS + 1):
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
