"""The streaming forwarder: one client request in, one registry request out, bodies never held whole."""

from __future__ import annotations

import asyncio
import logging
from typing import Mapping, cast

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .. import errors
from ..keys import SESSION, SETTINGS
from ..spec.routes import Route
from . import splice
from .connection import GuardedHandler
from .headers import client_host, downstream_response_headers, socket_authority, upstream_request_headers

log = logging.getLogger("mreg.proxy")

# Large reads keep per-chunk overhead (Python calls, syscalls) low on multi-GB blobs while the
# memory held per transfer stays bounded: backpressure comes from awaiting every write.
CHUNK_SIZE = 1 << 20
BODY_BYTES = web.RequestKey("body_bytes", int)  # response body bytes relayed, for log and metrics
UPSTREAM_ERROR = web.RequestKey("upstream_error", str)  # how the registry failed, for the metrics
# describe the request body: dropped when the proxy sends the request without it
BODY_HEADERS = ("Content-Length", "Content-Type", "Content-Encoding", "Content-Range", "Digest")
# what the session raises when the registry is unreachable, slow or breaks off
UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
# Bodies from this size on are spliced socket to socket; below it the pipe's set-up is not worth it
SPLICE_MIN_BYTES = 1 << 20


def make_session(*, read_bufsize: int = CHUNK_SIZE) -> aiohttp.ClientSession:
    """The one upstream session of the process.

    No total timeout (a 10 GB layer is legitimate), a short connect timeout (a dead registry must
    answer quickly), no decompression, no cookie jar, no environment proxies.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512, ttl_dns_cache=None, enable_cleanup_closed=True),
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=5, sock_read=None),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        read_bufsize=read_bufsize,
        trust_env=False,
    )


async def forward(
    request: web.Request, session: aiohttp.ClientSession, upstream: URL
) -> web.StreamResponse:
    try:
        upstream_response = await send(request, session, upstream)
    except UPSTREAM_ERRORS as exc:
        return upstream_failure(request, exc)

    try:
        return await relay(request, upstream_response, upstream)
    finally:
        # close, not release: an unfinished body must not return its connection to the pool
        upstream_response.close()


async def send(
    request: web.Request,
    session: aiohttp.ClientSession,
    upstream: URL,
    *,
    raw_path: str | None = None,
    body: bytes | None = None,
) -> aiohttp.ClientResponse:
    """The client's request sent to the registry (raises UPSTREAM_ERRORS); the caller relays and
    closes the response. ``raw_path`` replaces the client's path and query, ``body`` its body when
    the proxy has read it whole (same bytes, so the client's Content-Length still holds)."""
    return await session.request(
        request.method,
        upstream_url(upstream, raw_path or request.raw_path),
        headers=forwarded_headers(request, with_body=True),
        data=body if body is not None else request.content if request.body_exists else None,
        allow_redirects=False,
        compress=None,
    )


def forwarded_headers(request: web.Request, *, with_body: bool) -> CIMultiDict[str]:
    """The client's headers as the registry gets them. ``with_body=False`` for requests the proxy
    makes without the client's body: a Content-Length announcing a body that never comes would
    hold the registry connection forever (there is no read timeout)."""
    headers = upstream_request_headers(
        request.headers, client_ip=request.remote, scheme=request.scheme, local=local_authority(request)
    )
    if not with_body:
        for name in BODY_HEADERS:
            headers.popall(name, None)
    return headers


def local_authority(request: web.Request) -> str | None:
    """``HOST:PORT`` of the proxy's socket the client connected to."""
    transport = request.transport
    return socket_authority(transport.get_extra_info("sockname")) if transport is not None else None


def upstream_url(upstream: URL, raw_path: str) -> URL:
    """The registry's URL for a raw (still percent-encoded) path and query.

    encoded=True: path and query go out byte for byte (upload ``_state`` is percent-encoded).
    """
    return URL(str(upstream) + raw_path, encoded=True)


def upstream_failure(request: web.Request, exc: BaseException) -> web.Response:
    """The client's answer when the registry cannot be reached or fails: never a stack trace."""
    transport = request.transport
    if transport is None or transport.is_closing():
        # the client went away (or was cut as stalled) while its body was being sent: the
        # registry is not to blame, and nobody reads this answer
        log.info("client disconnected: %s %s", request.method, request.path)
        return errors.unavailable(502, "the client went away")
    if isinstance(exc, aiohttp.ClientConnectorError):
        log.warning("registry unreachable: %s", exc)
        request[UPSTREAM_ERROR] = "unreachable"
        return errors.unavailable(503, "the registry is not reachable; try again shortly")
    log.warning("registry request failed: %s %s: %r", request.method, request.path, exc)
    request[UPSTREAM_ERROR] = "failed"
    return errors.unavailable(502, "the registry did not answer properly")


async def relay(
    request: web.Request,
    upstream_response: aiohttp.ClientResponse,
    upstream: URL,
    *,
    extra_headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Stream the registry's answer to the client, with ``extra_headers`` the proxy adds; the
    caller closes ``upstream_response``."""
    response = web.StreamResponse(
        status=upstream_response.status, reason=upstream_response.reason
    )
    response.headers.extend(
        downstream_response_headers(
            upstream_response.headers,
            upstream_origin=str(upstream.origin()),
            public_origin=f"{request.scheme}://{client_host(request.headers, local_authority(request)) or request.host}",
        )
    )
    response.headers.update(extra_headers or {})
    try:
        await response.prepare(request)
        if request.method != "HEAD":
            sockets = _splice_sockets(request, upstream_response)
            if sockets is None:
                await _copy_body(request, response, upstream_response)
            else:
                await _splice_body(request, response, upstream_response, *sockets)
        await response.write_eof()
    except ConnectionError:
        # the client went away; closing the upstream response (caller) frees the registry side
        log.info("client disconnected: %s %s", request.method, request.path)
    except (*UPSTREAM_ERRORS, splice.UpstreamClosed) as exc:
        # the registry failed mid-body: the status is already sent, so cut the connection
        # rather than let the client take a truncated body for a complete one
        log.warning("registry broke off %s %s: %r", request.method, request.path, exc)
        request[UPSTREAM_ERROR] = "broke_off"
        if request.transport is not None:
            request.transport.close()
    return response


async def _copy_body(
    request: web.Request, response: web.StreamResponse, upstream_response: aiohttp.ClientResponse
) -> None:
    content = upstream_response.content
    sent = 0
    while chunk := await content.readany():
        await response.write(chunk)
        sent += len(chunk)
        request[BODY_BYTES] = sent


def _splice_sockets(
    request: web.Request, upstream_response: aiohttp.ClientResponse
) -> tuple[asyncio.Transport, asyncio.Transport] | None:
    """(registry transport, client transport) when the body can be spliced, else None.

    Only a large body of known length between two plain TCP sockets qualifies: with TLS on
    either side the bytes on the socket are not the payload.
    """
    length = upstream_response.content_length
    connection = upstream_response.connection
    if not splice.AVAILABLE or length is None or length < SPLICE_MIN_BYTES or connection is None:
        return None
    src, dst = connection.transport, request.transport
    if src is None or dst is None or splice.socket_fd(src) is None or splice.socket_fd(dst) is None:
        return None
    # stream transports, though uvloop's are not asyncio.Transport instances
    return cast(asyncio.Transport, src), cast(asyncio.Transport, dst)


async def _splice_body(
    request: web.Request,
    response: web.StreamResponse,
    upstream_response: aiohttp.ClientResponse,
    src: asyncio.Transport,
    dst: asyncio.Transport,
) -> None:
    length = upstream_response.content_length
    src_fd = splice.socket_fd(src)
    assert length is not None and src_fd is not None
    # What aiohttp read along with the headers goes through it; from the pause on, every byte
    # on the registry's socket is ours. The connection cannot go back to the pool afterwards:
    # the caller closes it.
    buffered = upstream_response.content.read_nowait()
    src.pause_reading()
    await response.write(buffered)  # sends the headers too
    request[BODY_BYTES] = len(buffered)
    handler = request.protocol
    watch = handler.splice_waits if isinstance(handler, GuardedHandler) else splice.no_watch
    request[BODY_BYTES] += await splice.relay(src_fd, dst, length - len(buffered), watch)


async def pass_through(request: web.Request, route: Route) -> web.StreamResponse:
    """The dispatch table's default: the request goes to the registry as it is."""
    return await forward(request, request.app[SESSION], request.app[SETTINGS].upstream)
