"""Upload requests with the spec's offset rules applied (the rules themselves: upload_state.py).

Every registry answer carrying an upload ``Location`` teaches the memory the upload's latest state.
A chunk that does not start where the upload stands, or sent to a stale upload URL, is answered
416 with the current ``Range`` and ``Location`` and never reaches the registry (it would append
it). A status ``GET`` on a stale URL is asked of the registry with the latest URL instead, so the
client gets the registry's own 204 with the current range.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from yarl import URL

from .. import errors
from ..keys import ACCESS, PRINCIPAL, SESSION, SETTINGS, UPLOADS
from ..spec.routes import Route
from ..transport.forwarder import UPSTREAM_ERRORS, relay, send, upstream_failure
from .mount import allowed_source, mount_source, without_mount
from .upload_state import UploadMemory, chunk_refusal, decode_state, range_header, standing

log = logging.getLogger("mreg.uploads")


async def start_upload(
    request: web.Request, session: aiohttp.ClientSession, upstream: URL, memory: UploadMemory,
    raw_path: str | None = None,
) -> web.StreamResponse:
    """``POST /v2/<name>/blobs/uploads/``: forwarded (to ``raw_path`` when given: a refused mount
    without its query parameters); the new upload's state is remembered."""
    return await _forward_learning(request, session, upstream, memory, raw_path=raw_path)


async def continue_upload(
    request: web.Request,
    session: aiohttp.ClientSession,
    upstream: URL,
    memory: UploadMemory,
    name: str,
    uuid: str,
) -> web.StreamResponse:
    """``GET``/``HEAD``/``PATCH``/``PUT``/``DELETE`` on ``/v2/<name>/blobs/uploads/<uuid>``."""
    claimed = decode_state(request.query.get("_state", ""))
    if claimed is None or (claimed.name, claimed.uuid) != (name, uuid):
        # not a state this proxy can read, or one of another upload: the registry's to refuse
        return await _forward_learning(request, session, upstream, memory)
    where = standing(claimed, memory.latest(name, uuid), request.raw_path)
    if request.method in ("GET", "HEAD"):
        return await _forward_learning(request, session, upstream, memory, raw_path=where.target)
    if request.method in ("PATCH", "PUT"):
        reason = chunk_refusal(where, request.headers.get("Content-Range"), request.content_length)
        if reason is not None:
            log.info("upload %s of %s: 416: %s", uuid, name, reason)
            return errors.error_response(
                416,
                "BLOB_UPLOAD_INVALID",
                reason,
                headers={
                    "Location": where.target,
                    "Range": range_header(where.offset),
                    "Docker-Upload-UUID": uuid,
                    "Blob-Upload-Session-ID": uuid,
                },
            )
    response = await _forward_learning(request, session, upstream, memory)
    if (request.method, response.status) in (("PUT", 201), ("DELETE", 204)):
        memory.forget(name, uuid)  # finished or cancelled: the registry forgets it too
    return response


async def _forward_learning(
    request: web.Request,
    session: aiohttp.ClientSession,
    upstream: URL,
    memory: UploadMemory,
    *,
    raw_path: str | None = None,
) -> web.StreamResponse:
    try:
        answer = await send(request, session, upstream, raw_path=raw_path)
    except UPSTREAM_ERRORS as exc:
        return upstream_failure(request, exc)
    try:
        location = answer.headers.get("Location")
        if location is not None:
            memory.learn(location)
        return await relay(request, answer, upstream)
    finally:
        answer.close()


async def handle_start(request: web.Request, route: Route) -> web.StreamResponse:
    """A mount from a repository the caller may not pull becomes a plain upload start (mount.py)."""
    app, principal = request.app, request[PRINCIPAL]
    raw_path = None
    source = mount_source(request.query)
    if source is not None and not allowed_source(source, principal.may_pull):
        app[ACCESS].audit.record(
            "mount_refused", user=principal.name, kind=principal.kind.value, address=request.remote,
            repository=route.name, source=source,
        )
        raw_path = without_mount(request.rel_url.raw_path, request.rel_url.raw_query_string)
    return await start_upload(request, app[SESSION], app[SETTINGS].upstream, app[UPLOADS], raw_path=raw_path)


async def handle_continue(request: web.Request, route: Route) -> web.StreamResponse:
    app = request.app
    assert route.name is not None and route.reference is not None
    return await continue_upload(
        request, app[SESSION], app[SETTINGS].upstream, app[UPLOADS], route.name, route.reference
    )
