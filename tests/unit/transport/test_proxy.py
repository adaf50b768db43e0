"""The real proxy in front of a real aiohttp fake registry."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
import time
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from yarl import URL

from proxy_harness import ADMIN, READER, ProxyClient, access_lines, install_tls, running_proxy, settings_for
from fake_registry import CLIENT_GONE, REQUESTS, blob_bytes, make_app
from helpers import basic, free_port, make_user, write_users

MB = 1 << 20


def _errors(body: str) -> list[dict[str, object]]:
    return json.loads(body)["errors"]


async def test_anonymous_v2_is_challenged(proxy: ProxyClient, upstream: TestServer) -> None:
    response = await proxy.get("/v2/")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="mreg"')
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert _errors(await response.text())[0]["code"] == "UNAUTHORIZED"
    assert upstream.app[REQUESTS] == []  # nothing sent upstream for a refused request


@pytest.mark.parametrize(
    "header",
    [
        basic("amy", "wrong"),
        basic("nobody", "x"),
        basic("amy", "x" * 100),  # beyond bcrypt's 72 bytes
        {"Authorization": "Basic %%%"},
        {"Authorization": "Basic " + "w7/Dvg=="},  # decodes to non-UTF-8 bytes
        {"Authorization": "Bearer token"},
    ],
)
async def test_bad_credentials_get_401(proxy: ProxyClient, upstream: TestServer, header: dict[str, str]) -> None:
    response = await proxy.get("/v2/", headers=header)
    assert response.status == 401
    assert "WWW-Authenticate" in response.headers
    assert upstream.app[REQUESTS] == []


async def test_reader_with_colon_in_password_reads(proxy: ProxyClient) -> None:
    response = await proxy.get("/v2/", headers=basic(*READER))
    assert response.status == 200
    assert await response.json() == {}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_reader_write_is_denied_with_403(proxy: ProxyClient, upstream: TestServer, method: str) -> None:
    response = await proxy.request(method, "/v2/echo/x", headers=basic(*READER), data=b"body")
    assert response.status == 403
    error = _errors(await response.text())[0]
    assert error["code"] == "DENIED" and "bob" in str(error["message"])
    assert "WWW-Authenticate" not in response.headers
    assert upstream.app[REQUESTS] == []


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
async def test_admin_may_use_every_method(proxy: ProxyClient, method: str) -> None:
    response = await proxy.request(method, "/v2/echo/x", headers=basic(*ADMIN))
    assert response.status == 200


@pytest.mark.parametrize("who", [ADMIN, READER])
async def test_other_methods_refused(proxy: ProxyClient, upstream: TestServer, who: tuple[str, str]) -> None:
    response = await proxy.request("OPTIONS", "/v2/echo/x", headers=basic(*who))
    assert response.status == 405
    assert _errors(await response.text())[0]["code"] == "UNSUPPORTED"
    assert upstream.app[REQUESTS] == []


@pytest.mark.parametrize("path", ["/ui", "/ui/nothing", "/v1/_ping", "/v2x", "/healthzz"])  # "/": the web page
async def test_paths_outside_v2_are_404(proxy: ProxyClient, path: str) -> None:
    response = await proxy.get(path, headers=basic(*ADMIN))
    assert response.status == 404
    assert _errors(await response.text())[0]["code"] == "NOT_FOUND"


async def test_health_endpoints_need_no_credentials(proxy: ProxyClient) -> None:
    assert (await proxy.get("/healthz")).status == 200
    assert (await proxy.get("/readyz")).status == 200


async def test_readyz_fails_when_registry_is_down(tmp_path: Path, users_file: Path) -> None:
    async with running_proxy(settings_for(URL(f"http://127.0.0.1:{free_port()}"), tmp_path)) as client:
        response = await client.get("/readyz")
        assert response.status == 503


async def test_raw_path_and_query_kept_byte_for_byte(proxy: ProxyClient) -> None:
    raw = "/v2/echo/team/app/blobs/uploads/u1?_state=a%2Bb%3D%3D&digest=sha256%3Aabc&x=%7e"
    response = await proxy.put(raw, headers=basic(*ADMIN))
    assert (await response.json())["raw_path"] == raw


async def test_forwarded_headers(proxy: ProxyClient) -> None:
    response = await proxy.get(
        "/v2/echo/h",
        headers={**basic(*ADMIN), "Host": "reg.example:5000", "X-Forwarded-Proto": "https", "Connection": "X-Drop", "X-Drop": "1"},
    )
    seen = dict((await response.json())["headers"])
    assert seen["Host"] == "reg.example:5000"
    assert seen["X-Forwarded-Proto"] == "http"  # what was actually served, not what the client claimed
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert "Authorization" not in seen and "X-Drop" not in seen


async def test_multiple_accept_headers_all_reach_the_registry(proxy: ProxyClient) -> None:
    accepts = ["application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"]
    headers = [("Accept", a) for a in accepts] + list(basic(*ADMIN).items())
    response = await proxy.get("/v2/accept", headers=CIMultiDict(headers))
    assert (await response.json())["accept"] == accepts


async def test_upload_location_points_at_the_proxy(proxy: ProxyClient) -> None:
    response = await proxy.post("/v2/team/app/blobs/uploads/", headers={**basic(*ADMIN), "Host": "reg.example:5000"})
    assert response.status == 202
    assert response.headers["Location"] == "http://reg.example:5000/v2/team/app/blobs/uploads/u1?_state=a%2Bb%3D%3D"


async def test_location_naming_the_registry_is_rewritten(proxy: ProxyClient) -> None:
    response = await proxy.post("/v2/leaky/blobs/uploads/", headers={**basic(*ADMIN), "Host": "reg.example:5000"})
    assert response.headers["Location"] == "http://reg.example:5000/v2/team/app/blobs/uploads/u2"


async def test_download_streams_multi_megabyte_blob(proxy: ProxyClient) -> None:
    size = 24 * MB + 7
    response = await proxy.get(f"/v2/blob/{size}", headers=basic(*READER))
    digest = hashlib.sha256()
    async for chunk in response.content.iter_any():
        digest.update(chunk)
    assert response.headers["Content-Length"] == str(size)
    assert "sha256:" + digest.hexdigest() == response.headers["Docker-Content-Digest"]


async def _digest_of(response: aiohttp.ClientResponse) -> str:
    digest = hashlib.sha256()
    async for chunk in response.content.iter_any():
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


async def test_connection_is_reused_after_spliced_bodies(proxy: ProxyClient) -> None:
    """Large bodies bypass aiohttp's writer; the client connection must stay usable after them."""
    connections = []

    async def count(_session: object, _context: object, params: object) -> None:
        connections.append(params)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(count)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        for size in (4 * MB + 1, 2 * MB, 100):
            url = f"http://127.0.0.1:{proxy.port}/v2/blob/{size}"
            async with session.get(url, headers=basic(*READER)) as response:
                assert await _digest_of(response) == response.headers["Docker-Content-Digest"]
    assert len(connections) == 1


async def test_large_body_of_unknown_length_is_streamed(proxy: ProxyClient) -> None:
    response = await proxy.get(f"/v2/chunked/{5 * MB + 3}", headers=basic(*READER))
    assert "Content-Length" not in response.headers
    assert await _digest_of(response) == response.headers["Docker-Content-Digest"]


async def test_registry_dying_mid_body_cuts_the_client_off(proxy: ProxyClient) -> None:
    """A truncated blob must not look complete: the client sees a broken body, not EOF."""
    response = await proxy.get("/v2/broken", headers=basic(*READER))
    assert response.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


async def test_head_keeps_length_and_digest_without_body(proxy: ProxyClient) -> None:
    size = 3 * MB
    response = await proxy.head(f"/v2/blob/{size}", headers=basic(*READER))
    assert response.status == 200
    assert response.headers["Content-Length"] == str(size)
    assert response.headers["Docker-Content-Digest"] == "sha256:" + hashlib.sha256(blob_bytes(size)).hexdigest()
    assert await response.read() == b""


async def test_range_gets_206(proxy: ProxyClient) -> None:
    response = await proxy.get(f"/v2/blob/{MB}", headers={**basic(*READER), "Range": "bytes=100-199"})
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes 100-199/{MB}"
    assert await response.read() == blob_bytes(MB)[100:200]


async def _chunks(total: int, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    data = blob_bytes(total)
    for offset in range(0, total, size):
        yield data[offset : offset + size]


async def test_chunked_upload_streams_to_registry(proxy: ProxyClient) -> None:
    total = 16 * MB + 3
    response = await proxy.patch("/v2/echo/upload", headers=basic(*ADMIN), data=_chunks(total))
    body = await response.json()
    assert (body["bytes"], body["sha256"]) == (total, hashlib.sha256(blob_bytes(total)).hexdigest())
    assert dict(body["headers"]).get("Transfer-Encoding") == "chunked"


async def test_sized_upload_keeps_content_length(proxy: ProxyClient) -> None:
    total = 8 * MB
    response = await proxy.put("/v2/echo/upload", headers=basic(*ADMIN), data=blob_bytes(total))
    body = await response.json()
    assert body["bytes"] == total
    assert dict(body["headers"])["Content-Length"] == str(total)


async def test_no_decompression(proxy: ProxyClient) -> None:
    response = await proxy.put(
        "/v2/echo/gz", headers={**basic(*ADMIN), "Content-Encoding": "gzip"}, data=b"not really gzip"
    )
    body = await response.json()
    assert body["bytes"] == len(b"not really gzip")
    assert dict(body["headers"])["Content-Encoding"] == "gzip"


async def test_client_disconnect_releases_upstream(proxy: ProxyClient, upstream: TestServer) -> None:
    response = await proxy.get("/v2/endless", headers=basic(*READER))
    await response.content.readexactly(MB)
    response.close()  # hang up mid-transfer
    await asyncio.wait_for(upstream.app[CLIENT_GONE].wait(), timeout=10)


async def test_registry_down_gives_503_quickly_then_recovers(
    tmp_path: Path, users_file: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    port = free_port()
    async with running_proxy(settings_for(URL(f"http://127.0.0.1:{port}"), tmp_path)) as client:
        started = time.monotonic()
        response = await client.get("/v2/", headers=basic(*ADMIN))
        assert response.status == 503
        assert _errors(await response.text())[0]["code"] == "UNAVAILABLE"
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert time.monotonic() - started < 5  # a refused connection, not a hang
        await aiohttp_server(make_app(), port=port)
        response = await client.get("/v2/", headers=basic(*ADMIN))
        assert response.status == 200


async def test_users_file_edits_apply_without_restart(proxy: ProxyClient, users_file: Path) -> None:
    assert (await proxy.get("/v2/", headers=basic("cy", "new"))).status == 401
    write_users(users_file, make_user(*ADMIN, role="admin"), make_user("cy", "new"))
    assert (await proxy.get("/v2/", headers=basic("cy", "new"))).status == 200
    assert (await proxy.get("/v2/", headers=basic(*READER))).status == 401  # bob was removed


async def test_broken_users_file_keeps_last_good_copy(proxy: ProxyClient, users_file: Path) -> None:
    assert (await proxy.get("/v2/", headers=basic(*READER))).status == 200
    users_file.write_text("users: [broken\n")
    assert (await proxy.get("/v2/", headers=basic(*READER))).status == 200
    assert (await proxy.get("/v2/", headers=basic(*ADMIN))).status == 200


async def test_missing_users_file_refuses_everyone(upstream: TestServer, tmp_path: Path) -> None:
    async with running_proxy(settings_for(upstream.make_url(""), tmp_path, users_file=tmp_path / "none.yml")) as client:
        assert (await client.get("/v2/", headers=basic(*ADMIN))).status == 401


async def test_access_log_has_user_and_no_secret(proxy: ProxyClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", "mreg.access"):
        await (await proxy.get(f"/v2/blob/{MB}", headers=basic(*READER))).read()
        await (await proxy.get("/v2/", headers=basic("amy", "wrong-secret"))).read()
        lines = await access_lines(caplog, 2)
    assert any(f" bob GET /v2/blob/{MB} 200 {MB} " in line for line in lines), lines
    assert any(" !amy GET /v2/ 401 " in line for line in lines), lines
    joined = "\n".join(lines)
    assert "wrong-secret" not in joined and "pa:ss" not in joined and "Basic" not in joined


async def test_registry_that_deletes_tags_itself_is_left_to_it(proxy: ProxyClient, upstream: TestServer) -> None:
    response = await proxy.request("DELETE", "/v2/modern/manifests/v1", headers=basic(*ADMIN))
    assert response.status == 202
    assert upstream.app[REQUESTS] == [("DELETE", "/v2/modern/manifests/v1")]  # no placeholder


async def test_registry_refusing_deletes_is_passed_through(proxy: ProxyClient, upstream: TestServer) -> None:
    response = await proxy.request("DELETE", "/v2/nodelete/manifests/v1", headers=basic(*ADMIN))
    assert response.status == 405
    assert _errors(await response.text())[0]["code"] == "UNSUPPORTED"
    assert upstream.app[REQUESTS] == [("DELETE", "/v2/nodelete/manifests/v1")]


async def test_large_download_over_tls_is_intact(upstream: TestServer, users_file: Path, tmp_path: Path) -> None:
    """Behind TLS the socket carries records, not the payload: large bodies must not be spliced."""
    install_tls(tmp_path)
    async with running_proxy(settings_for(upstream.make_url(""), tmp_path)) as proxy:
        url = f"https://127.0.0.1:{proxy.port}/v2/blob/{4 * MB + 1}"
        async with proxy.session.get(url, headers=basic(*READER), ssl=False) as response:
            assert await _digest_of(response) == response.headers["Docker-Content-Digest"]


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "closed"])
async def test_registry_breaking_off_a_large_body_cuts_the_client(
    users_file: Path, tmp_path: Path, reset: bool
) -> None:
    """A body of known length that the registry abandons (reset or close) must end the client's
    connection: left open, the client would wait for the missing bytes forever."""
    total = 4 * MB

    async def half_then_gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total + b"x" * (total // 2))
        await writer.drain()
        await asyncio.sleep(0.2)
        if reset:
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()

    registry = await asyncio.start_server(half_then_gone, "127.0.0.1", 0)
    port = registry.sockets[0].getsockname()[1]
    try:
        async with running_proxy(settings_for(URL(f"http://127.0.0.1:{port}"), tmp_path)) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            auth = basic(*READER)["Authorization"]
            writer.write(f"GET /v2/x/blobs/big HTTP/1.1\r\nHost: h\r\nAuthorization: {auth}\r\n\r\n".encode())
            await reader.readuntil(b"\r\n\r\n")
            received = 0
            while chunk := await asyncio.wait_for(reader.read(1 << 20), timeout=10):
                received += len(chunk)
            assert received < total  # the connection ended short, and did not hang
            writer.close()
    finally:
        registry.close()


async def test_access_log_cannot_be_forged(proxy: ProxyClient, caplog: pytest.LogCaptureFixture) -> None:
    """A client must not write a line break (or a fake line) into the log, by path or user name."""
    forged = "%0a2026-01-01%20INFO%20mreg.access:%20forged"
    with caplog.at_level("INFO", "mreg.access"):
        await (await proxy.get(f"/v2/x{forged}/tags/list", headers=basic(*READER))).read()
        await (await proxy.get("/v2/", headers=basic("eve\nforged", "pw"))).read()
        lines = await access_lines(caplog, 2)
    assert len(lines) == 2 and all("\n" not in line for line in lines), lines
    assert f"/v2/x{forged}/tags/list" in lines[0]
    assert "!eve\\nforged" in lines[1]
