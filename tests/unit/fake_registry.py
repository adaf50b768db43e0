"""A real aiohttp server standing in for the registry in unit tests."""

from __future__ import annotations

import asyncio
import hashlib

from aiohttp import web

REQUESTS = web.AppKey("requests", list)
CLIENT_GONE = web.AppKey("client_gone", asyncio.Event)
UPLOAD_ENDED = web.AppKey("upload_ended", asyncio.Event)  # an echo request ended, however
HELD = web.AppKey("held", list)  # requests waiting in /v2/held
RELEASE = web.AppKey("release", asyncio.Event)  # lets them be answered
BLOCK = bytes(range(256)) * 256  # 64 KiB


def blob_bytes(size: int) -> bytes:
    return (BLOCK * (size // len(BLOCK) + 1))[:size]


async def root(request: web.Request) -> web.Response:
    request.app[REQUESTS].append((request.method, request.raw_path))
    return web.json_response({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})


async def echo(request: web.Request) -> web.Response:
    """Digest of the body. ``?sleep_before=S``: a registry slow to take the body; ``?sleep_after=S``:
    slow to answer once it has it (as when it moves a big blob into place)."""
    digest = hashlib.sha256()
    size = 0
    try:
        await asyncio.sleep(float(request.query.get("sleep_before", 0)))
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        await asyncio.sleep(float(request.query.get("sleep_after", 0)))
    finally:
        request.app[UPLOAD_ENDED].set()
    request.app[REQUESTS].append((request.method, request.raw_path))
    return web.json_response(
        {
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": list(request.headers.items()),
            "bytes": size,
            "sha256": digest.hexdigest(),
        }
    )


async def blob(request: web.Request) -> web.StreamResponse:
    size = int(request.match_info["size"])
    data = blob_bytes(size)
    status, start, end = 200, 0, size
    headers = {
        "Docker-Content-Digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
    }
    if "Range" in request.headers:
        first, _, last = request.headers["Range"].removeprefix("bytes=").partition("-")
        status, start, end = 206, int(first), int(last) + 1
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    if request.method != "HEAD":
        view = memoryview(data)[start:end]
        for offset in range(0, len(view), 1 << 16):
            await response.write(view[offset : offset + (1 << 16)])
    await response.write_eof()
    return response


async def start_upload(request: web.Request) -> web.Response:
    """Like distribution: the Location is built from X-Forwarded-Proto and Host."""
    proto = request.headers.get("X-Forwarded-Proto", "http")
    location = f"{proto}://{request.headers['Host']}/v2/team/app/blobs/uploads/u1?_state=a%2Bb%3D%3D"
    return web.Response(status=202, headers={"Location": location, "Docker-Upload-UUID": "u1", "Range": "0-0"})


async def leaky_upload(request: web.Request) -> web.Response:
    """A registry configured with its own address: the proxy must not pass that on."""
    location = f"http://{request.url.host}:{request.url.port}/v2/team/app/blobs/uploads/u2"
    return web.Response(status=202, headers={"Location": location})


async def endless(request: web.Request) -> web.StreamResponse:
    """Streams up to 1 GiB; records when the proxy stops reading (the client went away).
    ``?chunked=1``: of unknown length, which the proxy copies instead of splicing."""
    response = web.StreamResponse()
    if request.query.get("chunked"):
        response.enable_chunked_encoding()
    else:
        response.content_length = 1 << 30
    await response.prepare(request)
    try:
        for _ in range((1 << 30) // len(BLOCK)):
            await response.write(BLOCK)
    except (ConnectionError, asyncio.CancelledError):
        request.app[CLIENT_GONE].set()
        raise
    return response


async def held(request: web.Request) -> web.Response:
    """Answered only once the test sets RELEASE: a request in progress for as long as it likes."""
    request.app[HELD].append(request.raw_path)
    await request.app[RELEASE].wait()
    return web.json_response({})


async def chunked(request: web.Request) -> web.StreamResponse:
    """A large body of unknown length (chunked encoding): the proxy must copy it, not splice."""
    size = int(request.match_info["size"])
    data = blob_bytes(size)
    response = web.StreamResponse(headers={"Docker-Content-Digest": "sha256:" + hashlib.sha256(data).hexdigest()})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for offset in range(0, size, 1 << 16):
        await response.write(data[offset : offset + (1 << 16)])
    await response.write_eof()
    return response


async def broken(request: web.Request) -> web.StreamResponse:
    """Promises 8 MiB, sends 2 MiB, then drops the connection: a registry dying mid-blob."""
    response = web.StreamResponse(headers={"Content-Length": str(8 << 20)})
    await response.prepare(request)
    await response.write(blob_bytes(2 << 20))
    assert request.transport is not None
    request.transport.close()
    return response


async def multi(request: web.Request) -> web.Response:
    """Echoes every Accept value it got, in order."""
    return web.json_response({"accept": request.headers.getall("Accept", [])})


async def tag_delete(request: web.Request) -> web.Response:
    """A registry with its own verdict on deleting a tag: 202 (it can, like distribution 3) in
    repository ``modern``, 405 (deletes disabled) in ``nodelete``."""
    request.app[REQUESTS].append((request.method, request.raw_path))
    if request.match_info["repo"] == "modern":
        return web.Response(status=202)
    body = '{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}'
    return web.Response(status=405, text=body, content_type="application/json")


def make_app() -> web.Application:
    app = web.Application(handler_args={"auto_decompress": False})
    app[REQUESTS] = []
    app[CLIENT_GONE] = asyncio.Event()
    app[UPLOAD_ENDED] = asyncio.Event()
    app[HELD] = []
    app[RELEASE] = asyncio.Event()
    app.router.add_get("/v2/", root)
    app.router.add_route("*", "/v2/echo/{tail:.*}", echo)
    app.router.add_get("/v2/blob/{size:\\d+}", blob)
    app.router.add_post("/v2/team/app/blobs/uploads/", start_upload)
    app.router.add_post("/v2/leaky/blobs/uploads/", leaky_upload)
    app.router.add_get("/v2/endless", endless)
    app.router.add_get("/v2/held", held)
    app.router.add_get("/v2/chunked/{size:\\d+}", chunked)
    app.router.add_get("/v2/broken", broken)
    app.router.add_get("/v2/accept", multi)
    app.router.add_delete("/v2/{repo:modern|nodelete}/manifests/{tag}", tag_delete)
    return app
