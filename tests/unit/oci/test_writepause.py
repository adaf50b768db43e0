"""The shared write pause as one replica sees it (the replicas themselves: tests/integration/test_s3_gc.py)."""

from __future__ import annotations

import json
import time
from typing import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from helpers import free_port
from mreg_proxy.transport.forwarder import make_session
from mreg_proxy.oci.writepause import CONTROL_REPOSITORY, UNTIL, WritePause, refused

LOOKUPS = web.AppKey("lookups", list)


def marker_registry(marker: bytes | None) -> web.Application:
    async def manifest(request: web.Request) -> web.Response:
        request.app[LOOKUPS].append(request.method)
        if marker is None:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        return web.Response(body=marker, content_type="application/vnd.oci.image.manifest.v1+json")

    app = web.Application()
    app[LOOKUPS] = []
    app.router.add_get(f"/v2/{CONTROL_REPOSITORY}/manifests/active", manifest)
    return app


async def remaining_twice(server: TestServer) -> tuple[float, float]:
    pause = WritePause(URL(str(server.make_url(""))), interval=60)
    async with make_session() as session:
        return await pause.remaining(session), await pause.remaining(session)


@pytest.mark.parametrize("seconds,header", [(0.2, "1"), (30.5, "31"), (3600, "60")])
def test_refusal_is_unavailable_with_a_bounded_retry_after(seconds: float, header: str) -> None:
    response = refused(seconds)
    assert response.status == 503
    assert response.headers["Retry-After"] == header
    assert json.loads(response.text)["errors"][0]["code"] == "UNAVAILABLE"


async def test_a_pause_is_read_once_per_interval(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> None:
    marker = json.dumps({"annotations": {UNTIL: repr(time.time() + 100)}}).encode()
    server = await aiohttp_server(marker_registry(marker))
    first, second = await remaining_twice(server)
    assert 90 < second <= first <= 100
    assert server.app[LOOKUPS] == ["GET"]


@pytest.mark.parametrize("marker", [None, json.dumps({"annotations": {UNTIL: repr(time.time() - 1)}}).encode(), b"{}", b"not json"])
async def test_no_marker_an_expired_or_unreadable_one_pauses_nothing(
    aiohttp_server: Callable[..., Awaitable[TestServer]], marker: bytes | None
) -> None:
    server = await aiohttp_server(marker_registry(marker))
    assert await remaining_twice(server) == (0.0, 0.0)


async def test_an_unreachable_registry_pauses_nothing() -> None:
    pause = WritePause(URL(f"http://127.0.0.1:{free_port()}"), interval=60)
    async with make_session() as session:
        assert await pause.remaining(session) == 0.0
