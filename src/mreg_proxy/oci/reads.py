"""Manifest and blob reads (GET, HEAD) answered from the registry's own files, without a second hop.

Authentication and authorization have run exactly as for any request (dispatch.py). Then what the
files fully determine is answered here, byte for byte as registry 2.8 answers it (the same status,
headers and body: tests/integration/test_storage_reads.py sends the same reads to both); everything
else, and every doubt, goes to the registry as before (storage/registry_files.py says what is
left to it).
``request[SOURCE]`` says which of the two answered, for the access log and the metrics.

The registry adds the headers of its ``http.headers`` setting to every answer (the stock image's
``X-Content-Type-Options: nosniff``); they are learned from its answer to ``GET /v2/``, again every
minute. Until they are known, every read is forwarded.

Bodies: a manifest is read whole (at most 4 MiB, the registry's own limit). A blob goes from its
open file with sendfile(2) on a plain connection, and read in chunks and encrypted over TLS; memory
stays flat at any size, and the open descriptor keeps the bytes readable even if garbage
collection unlinks the file meanwhile (the next request finds nothing and is forwarded).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import aiohttp
from aiohttp import web
from yarl import URL

from ..keys import SESSION, SOURCE, STORAGE_READS
from ..spec.routes import Route
from ..storage import registry_files as files
from ..transport import splice
from ..transport.connection import GuardedHandler
from ..transport.forwarder import BODY_BYTES, pass_through
from .manifests import refused

log = logging.getLogger("mreg.reads")

API_VERSION = ("Docker-Distribution-Api-Version", "registry/2.0")  # Go's spelling of the name
# What every answer of the registry's /v2/ carries whatever its configuration; the rest is its
# http.headers setting. Connection is about the connection, and Server mreg sets on every answer.
_OWN_HEADERS = frozenset(
    name.lower() for name in (
        "Content-Length", "Content-Type", "Date", API_VERSION[0], "Connection", "Keep-Alive", "Server",
    )
)
HEADERS_TTL = 60.0  # seconds before the registry's configured headers are asked again
ASK_TIMEOUT = aiohttp.ClientTimeout(total=5)
# blob.go: "blobCacheControlMaxAge = 365 * 24 * time.Hour"
BLOB_CACHE_CONTROL = f"max-age={365 * 24 * 3600}"
# the conditional headers Go's http.ServeContent weighs: such blob reads are left to the registry
_CONDITIONS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range")
TLS_CHUNK = 256 * 1024  # read, encrypted and written at a time over TLS


class StorageReads:
    """The registry's files under ``root`` and the headers its configuration adds."""

    def __init__(self, root: Path, upstream: URL) -> None:
        self.files = files.Reader(root)
        self._upstream = upstream
        self._headers: tuple[tuple[str, str], ...] | None = None
        self._expiry = 0.0
        self._asking: asyncio.Task[None] | None = None

    def known_headers(self) -> tuple[tuple[str, str], ...] | None:
        """The registry's configured headers while they need not be asked again; else None."""
        return self._headers if time.monotonic() < self._expiry else None

    async def registry_headers(self, session: aiohttp.ClientSession) -> tuple[tuple[str, str], ...] | None:
        """The registry's configured headers; None while they are not known (forward)."""
        if time.monotonic() >= self._expiry and self._asking is None:
            self._asking = asyncio.ensure_future(self._ask(session))
        if self._headers is None and self._asking is not None:
            await asyncio.shield(self._asking)
        return self._headers

    async def _ask(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(self._upstream / "v2/", timeout=ASK_TIMEOUT) as response:
                await response.read()
                if response.status == 200:
                    self._headers = configured_headers(response.headers.items())
                else:  # not the registry mreg expects (authentication of its own?): forward
                    self._headers = None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("could not learn the registry's headers: %r", exc)
        finally:
            self._expiry = time.monotonic() + HEADERS_TTL
            self._asking = None


def configured_headers(headers: object) -> tuple[tuple[str, str], ...]:
    """The headers of the registry's ``/v2/`` answer that its configuration added."""
    return tuple((name, value) for name, value in headers if name.lower() not in _OWN_HEADERS)  # type: ignore[attr-defined]


async def handle_manifest(request: web.Request, route: Route) -> web.StreamResponse:
    if answer := refused(route):
        return answer
    answered = await _from_storage(request, route, _manifest)
    return await _forwarded(request, route) if answered is None else answered


async def handle_blob(request: web.Request, route: Route) -> web.StreamResponse:
    answered = await _from_storage(request, route, _blob)
    return await _forwarded(request, route) if answered is None else answered


async def _forwarded(request: web.Request, route: Route) -> web.StreamResponse:
    request[SOURCE] = "registry"
    return await pass_through(request, route)


@dataclass(slots=True)
class Answer:
    """What the registry would send: status, headers (API version and configured ones aside),
    and the body: a manifest's bytes, or part of an open blob."""

    status: int
    headers: list[tuple[str, str]]
    content: bytes | None = None
    blob: files.Blob | None = None
    offset: int = 0
    length: int = 0


async def _from_storage(
    request: web.Request, route: Route,
    decide: Callable[[web.Request, Route, files.Reader], Answer | None],
) -> web.StreamResponse | None:
    reads = request.app[STORAGE_READS]
    if reads is None:
        return None
    configured = reads.known_headers()  # the common case, without a coroutine
    if configured is None:
        configured = await reads.registry_headers(request.app[SESSION])
    if configured is None:
        return None
    try:
        answer = decide(request, route, reads.files)
    except OSError as exc:  # the storage failed: the registry answers
        log.warning("storage read failed, forwarded: %s %s: %r", request.method, request.path, exc)
        return None
    except Exception:  # a bug must cost a second hop, never a wrong answer
        log.exception("storage read failed, forwarded: %s %s", request.method, request.path)
        return None
    if answer is None:
        return None
    try:
        return await _send(request, answer, configured)
    finally:
        if answer.blob is not None:
            answer.blob.close()


def _if_none_match(request: web.Request, digest: str) -> bool:
    """registry 2.8's etagMatch: any If-None-Match value equal to the digest, quoted or not."""
    return any(value in (digest, f'"{digest}"') for value in request.headers.getall("If-None-Match", ()))


def _manifest(request: web.Request, route: Route, reader: files.Reader) -> Answer | None:
    assert route.name is not None and route.reference is not None
    hex_digest = reader.manifest_digest(route.name, route.reference)
    if hex_digest is None:
        return None
    digest = f"sha256:{hex_digest}"
    if _if_none_match(request, digest):  # checked before the manifest is read, as the registry does
        return Answer(304, [])
    manifest = reader.manifest(route.name, hex_digest, with_content=request.method == "GET")
    if manifest is None:
        return None
    accepts = files.accepted(request.headers.getall("Accept", ()))
    if not files.serves_as_stored(manifest.kind, accepts, by_tag=route.is_tag):
        return None
    headers = [
        ("Content-Length", str(manifest.size)), ("Content-Type", files.content_type(manifest.kind)),
        ("Docker-Content-Digest", digest), ("Etag", f'"{digest}"'),
    ]
    return Answer(200, headers, content=manifest.content)


def _blob(request: web.Request, route: Route, reader: files.Reader) -> Answer | None:
    assert route.name is not None and route.reference is not None
    hex_digest = files.digest_hex(route.reference)
    if hex_digest is None or any(name in request.headers for name in _CONDITIONS):
        return None
    blob = reader.blob(route.name, hex_digest)
    if blob is None:
        return None
    part = files.parse_range(request.headers.getall("Range", []), blob.size)
    if part is None:
        blob.close()
        return None
    digest = f"sha256:{hex_digest}"
    headers = [
        ("Accept-Ranges", "bytes"), ("Cache-Control", BLOB_CACHE_CONTROL),
        ("Content-Type", "application/octet-stream"), ("Docker-Content-Digest", digest),
        ("Etag", f'"{digest}"'),
    ]
    if part is files.WHOLE:
        status, offset, length = 200, 0, blob.size
    else:
        status, offset, length = 206, part.start, part.length
        headers.append(("Content-Range", part.content_range(blob.size)))
    headers.append(("Content-Length", str(length)))
    return Answer(status, headers, blob=blob, offset=offset, length=length)


async def _send(request: web.Request, answer: Answer, configured: tuple[tuple[str, str], ...]) -> web.StreamResponse:
    """The answer, with the registry's headers in Go's order (sorted by name; Date aside)."""
    request[SOURCE] = "storage"
    response = web.StreamResponse(status=answer.status, headers=sorted([*answer.headers, API_VERSION, *configured]))
    try:
        await response.prepare(request)
        if request.method == "GET":
            if answer.content is not None:
                await response.write(answer.content)
                request[BODY_BYTES] = len(answer.content)
            elif answer.blob is not None and answer.length:
                await _send_blob(request, response, answer.blob.fd, answer.offset, answer.length)
        await response.write_eof()
    except ConnectionError:
        log.info("client disconnected: %s %s", request.method, request.path)
    except (splice.FileShrunk, OSError) as exc:
        # the status is sent: cut the connection rather than pass a short body as a whole one
        log.warning("blob read broke off %s %s: %r", request.method, request.path, exc)
        if request.transport is not None:
            request.transport.close()
    return response


async def _send_blob(request: web.Request, response: web.StreamResponse, fd: int, offset: int, length: int) -> None:
    """sendfile(2) on a plain connection; over TLS, chunks read and written in turn."""
    request[BODY_BYTES] = 0
    transport = request.transport
    if transport is not None and splice.socket_fd(transport) is not None:
        await response.write(b"")  # the headers go out first, through aiohttp
        handler = request.protocol
        watch = handler.splice_waits if isinstance(handler, GuardedHandler) else splice.no_watch
        request[BODY_BYTES] = await splice.send_file(fd, offset, length, transport, watch)  # type: ignore[arg-type]
        return
    end = offset + length
    while offset < end:
        chunk = os.pread(fd, min(TLS_CHUNK, end - offset), offset)
        if not chunk:
            raise splice.FileShrunk(f"file ended {end - offset} bytes short")
        await response.write(chunk)
        offset += len(chunk)
        request[BODY_BYTES] += len(chunk)
