"""oci/reads.py: reads answered from a registry tree on disk, the rest forwarded to a stand-in
registry that records what reaches it. The differential test against the real registry is
tests/integration/test_storage_reads.py; here: wiring, bodies, stalls, TLS, deletes mid-transfer."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from helpers import basic
from proxy_harness import (
    READ_TIMEOUT, READER, client_hello_context, connect, get_request, install_tls, running_proxy, settings_for,
    status_of,
)
from mreg_proxy.storage import registry_files as files

OCI = files.OCI_MANIFEST
MiB = 1 << 20
SEEN = web.AppKey("seen", list)
IDLE = 1.0


def registry_app(root_status: int = 200) -> web.Application:
    """A stand-in registry: /v2/ with one configured header, every other request recorded, 404."""

    async def root(request: web.Request) -> web.Response:
        return web.json_response({}, status=root_status, headers={
            "Docker-Distribution-API-Version": "registry/2.0", "X-Content-Type-Options": "nosniff"})

    async def other(request: web.Request) -> web.Response:
        request.app[SEEN].append(f"{request.method} {request.path}")
        return web.json_response({"errors": []}, status=404)

    app = web.Application()
    app[SEEN] = []
    app.router.add_get("/v2/", root)
    app.router.add_route("*", "/{tail:.*}", other)
    return app


class Tree:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, relative: str | None) -> Path:
        assert relative is not None
        return self.root / files.V2 / relative

    def write(self, relative: str | None, content: bytes) -> None:
        path = self.path(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    def blob(self, name: str, content: bytes) -> str:
        hex_digest = hashlib.sha256(content).hexdigest()
        self.write(files.blob_data(hex_digest), content)
        self.write(files.layer_link(name, hex_digest), f"sha256:{hex_digest}".encode())
        return f"sha256:{hex_digest}"

    def manifest(self, name: str, tag: str, content: bytes) -> str:
        hex_digest = hashlib.sha256(content).hexdigest()
        self.write(files.blob_data(hex_digest), content)
        self.write(files.revision_link(name, hex_digest), f"sha256:{hex_digest}".encode())
        self.write(files.tag_link(name, tag), f"sha256:{hex_digest}".encode())
        return f"sha256:{hex_digest}"


IMAGE = json.dumps({"schemaVersion": 2, "mediaType": OCI, "config": {}, "layers": []}).encode()


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    (tmp_path / "storage").mkdir()
    return Tree(tmp_path / "storage")


@pytest.fixture
async def registry(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    return await aiohttp_server(registry_app())


@pytest.fixture
async def proxy(registry: TestServer, users_file: Path, tmp_path: Path, tree: Tree) -> AsyncIterator[Any]:
    settings = settings_for(registry.make_url(""), tmp_path, registry_root=tree.root, idle_timeout=IDLE)
    async with running_proxy(settings) as client:
        yield client


async def test_a_manifest_is_answered_from_the_files(proxy: Any, registry: TestServer, tree: Tree) -> None:
    digest = tree.manifest("team/app", "v1", IMAGE)
    for method in ("HEAD", "GET"):
        async with proxy.request(method, "/v2/team/app/manifests/v1", headers={**basic(*READER), "Accept": OCI}) as answer:
            assert answer.status == 200
            body = await answer.read()
            assert body == (IMAGE if method == "GET" else b"")
            assert answer.headers["Content-Length"] == str(len(IMAGE))
            assert answer.headers["Content-Type"] == OCI
            assert answer.headers["Docker-Content-Digest"] == digest
            assert answer.headers["Etag"] == f'"{digest}"'
            assert answer.headers["X-Content-Type-Options"] == "nosniff"  # learned from the registry
            assert answer.headers["Server"] == "mreg"
    assert registry.app[SEEN] == []


async def test_what_the_files_do_not_decide_is_forwarded(proxy: Any, registry: TestServer, tree: Tree) -> None:
    tree.manifest("team/app", "v1", IMAGE)
    reads = [
        ("/v2/team/app/manifests/v1", {}),  # an OCI manifest the client does not accept: the registry's 404
        ("/v2/team/app/manifests/v2", {"Accept": OCI}),  # no such tag
        (f"/v2/team/app/blobs/sha256:{'0' * 64}", {}),
    ]
    for path, headers in reads:
        async with proxy.get(path, headers={**basic(*READER), **headers}) as answer:
            assert answer.status == 404
    assert registry.app[SEEN] == [f"GET {path}" for path, _ in reads]


async def test_without_the_setting_every_read_is_forwarded(
    registry: TestServer, users_file: Path, tmp_path: Path, tree: Tree
) -> None:
    tree.manifest("team/app", "v1", IMAGE)
    async with running_proxy(settings_for(registry.make_url(""), tmp_path)) as proxy:
        async with proxy.get("/v2/team/app/manifests/v1", headers={**basic(*READER), "Accept": OCI}) as answer:
            assert answer.status == 404
    assert registry.app[SEEN] == ["GET /v2/team/app/manifests/v1"]


async def test_a_registry_whose_root_fails_gets_every_read(
    aiohttp_server: Callable[..., Awaitable[TestServer]], users_file: Path, tmp_path: Path, tree: Tree
) -> None:
    """Its configured headers are unknown: nothing can be answered byte for byte."""
    registry = await aiohttp_server(registry_app(root_status=401))
    tree.manifest("team/app", "v1", IMAGE)
    async with running_proxy(settings_for(registry.make_url(""), tmp_path, registry_root=tree.root)) as proxy:
        async with proxy.get("/v2/team/app/manifests/v1", headers={**basic(*READER), "Accept": OCI}) as answer:
            assert answer.status == 404
    assert registry.app[SEEN] == ["GET /v2/team/app/manifests/v1"]


async def test_a_pull_the_caller_may_not_make_never_reaches_the_files(proxy: Any, registry: TestServer, tree: Tree) -> None:
    tree.manifest("team/app", "v1", IMAGE)
    async with proxy.get("/v2/team/app/manifests/v1", headers={"Accept": OCI}) as answer:
        assert answer.status == 401
    async with proxy.get("/v2/team/app/manifests/v1", headers={**basic("bob", "wrong"), "Accept": OCI}) as answer:
        assert answer.status == 401


@pytest.mark.parametrize("tls", [False, True], ids=["sendfile", "tls"])
async def test_blob_bodies_whole_and_in_part(
    registry: TestServer, users_file: Path, tmp_path: Path, tree: Tree, tls: bool
) -> None:
    content = hashlib.shake_256(b"blob").digest(3 * MiB + 17)
    digest = tree.blob("team/app", content)
    if tls:
        install_tls(tmp_path)
    async with running_proxy(settings_for(registry.make_url(""), tmp_path, registry_root=tree.root)) as proxy:
        scheme = "https" if tls else "http"
        session = proxy.session
        url = f"{scheme}://127.0.0.1:{proxy.port}/v2/team/app/blobs/{digest}"
        ssl = client_hello_context() if tls else None
        async with session.get(url, headers=basic(*READER), ssl=ssl) as answer:
            assert answer.status == 200 and await answer.read() == content
            assert answer.headers["Accept-Ranges"] == "bytes"
        async with session.get(url, headers={**basic(*READER), "Range": "bytes=1000-1999999"}, ssl=ssl) as answer:
            assert answer.status == 206 and await answer.read() == content[1000:2000000]
            assert answer.headers["Content-Range"] == f"bytes 1000-1999999/{len(content)}"
    assert registry.app[SEEN] == []


async def test_a_blob_collected_while_it_is_sent_arrives_whole_and_then_is_gone(
    proxy: Any, registry: TestServer, tree: Tree
) -> None:
    content = hashlib.shake_256(b"collected").digest(16 * MiB)
    digest = tree.blob("team/app", content)
    reader, writer = await connect(proxy.port, receive_buffer=4096)
    try:
        writer.write(get_request(f"/v2/team/app/blobs/{digest}", close=True))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        assert status_of(head) == 200
        tree.path(files.blob_data(digest.removeprefix("sha256:"))).unlink()  # garbage collection
        body = await asyncio.wait_for(reader.read(), READ_TIMEOUT)
    finally:
        writer.close()
    assert body == content
    async with proxy.get(f"/v2/team/app/blobs/{digest}", headers=basic(*READER)) as answer:
        assert answer.status == 404  # the next request: the registry's answer
    assert registry.app[SEEN] == [f"GET /v2/team/app/blobs/{digest}"]


async def test_a_blob_download_the_client_stops_reading_is_cut(
    proxy: Any, tree: Tree, caplog: pytest.LogCaptureFixture
) -> None:
    digest = tree.blob("team/app", bytes(64 * MiB))
    reader, writer = await connect(proxy.port, receive_buffer=4096)
    try:
        with caplog.at_level("INFO"):
            writer.write(get_request(f"/v2/team/app/blobs/{digest}"))
            assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)) == 200
            started = time.monotonic()
            deadline = started + 10 * IDLE
            while not any("stalled" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "never cut"
                await asyncio.sleep(0.05)
            assert time.monotonic() - started >= IDLE * 0.9
    finally:
        writer.close()
    stalled = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(stalled) == 1 and f"GET /v2/team/app/blobs/{digest}" in stalled[0], stalled
