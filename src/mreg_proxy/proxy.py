"""The streaming forwarder: one client request in, one registry request out, bodies never held whole."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web
from yarl import URL

from . import errors
from .headers import downstream_response_headers, upstream_request_headers

log = logging.getLogger("mreg.proxy")

# Large reads keep per-chunk overhead (Python calls, syscalls) low on multi-GB blobs while the
# memory held per transfer stays bounded: backpressure comes from awaiting every write.
CHUNK_SIZE = 1 << 20
BODY_BYTES = "mreg.body_bytes"  # request key: response body bytes relayed, for the access log


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
    # encoded=True: method, path and query go out byte for byte (upload ``_state`` is percent-encoded)
    url = URL(str(upstream) + request.raw_path, encoded=True)
    headers = upstream_request_headers(
        request.headers, client_ip=request.remote, scheme=request.scheme
    )
    body = request.content if request.body_exists else None
    try:
        upstream_response = await session.request(
            request.method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
            compress=None,
        )
    except aiohttp.ClientConnectorError as exc:
        log.warning("registry unreachable: %s", exc)
        return errors.unavailable(503, "the registry is not reachable; try again shortly")
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        log.warning("registry request failed: %s %s: %r", request.method, request.path, exc)
        return errors.unavailable(502, "the registry did not answer properly")

    try:
        return await _relay(request, upstream_response, upstream)
    finally:
        # close, not release: an unfinished body must not return its connection to the pool
        upstream_response.close()


async def _relay(
    request: web.Request, upstream_response: aiohttp.ClientResponse, upstream: URL
) -> web.StreamResponse:
    response = web.StreamResponse(
        status=upstream_response.status, reason=upstream_response.reason
    )
    response.headers.extend(
        downstream_response_headers(
            upstream_response.headers,
            upstream_origin=str(upstream.origin()),
            public_origin=f"{request.scheme}://{request.host}",
        )
    )
    try:
        await response.prepare(request)
        if request.method != "HEAD":
            content = upstream_response.content
            sent = 0
            while chunk := await content.readany():
                await response.write(chunk)
                sent += len(chunk)
                request[BODY_BYTES] = sent
        await response.write_eof()
    except ConnectionError:
        # the client went away; closing the upstream response (caller) frees the registry side
        log.info("client disconnected: %s %s", request.method, request.path)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        # the registry failed mid-body: the status is already sent, so cut the connection
        # rather than let the client take a truncated body for a complete one
        log.warning("registry broke off %s %s: %r", request.method, request.path, exc)
        if request.transport is not None:
            request.transport.close()
    return response
