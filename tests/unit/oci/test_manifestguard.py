"""Pushes by tag are verified and, when a concurrent delete left the tag dangling, repeated."""

from __future__ import annotations

from pathlib import Path
from typing import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from helpers import basic
from mreg_proxy.oci.manifestguard import REPAIRS
from mreg_proxy.spec.referrers_index import MAX_MANIFEST as MAX_MANIFEST_BYTES
from proxy_harness import ADMIN, running_proxy, settings_for

CALLS = web.AppKey("calls", list)
DANGLING = web.AppKey("dangling", list)  # how many HEADs still answer 404
MANIFEST = b'{"schemaVersion": 2}'


def registry(dangling: int) -> web.Application:
    async def put(request: web.Request) -> web.Response:
        body = await request.read()
        request.app[CALLS].append(("PUT", len(body)))
        return web.Response(status=201, headers={"Location": request.path, "Docker-Content-Digest": "sha256:" + "0" * 64})

    async def head(request: web.Request) -> web.Response:
        request.app[CALLS].append(("HEAD", 0))
        if request.app[DANGLING][0] > 0:
            request.app[DANGLING][0] -= 1
            return web.Response(status=404)
        return web.Response(status=200)

    async def no_pause(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application(client_max_size=2 * MAX_MANIFEST_BYTES)
    app[CALLS], app[DANGLING] = [], [dangling]
    app.router.add_put("/v2/team/app/manifests/{reference}", put)
    app.router.add_head("/v2/team/app/manifests/{reference}", head)
    app.router.add_get("/v2/mreg-internal/write-pause/manifests/active", no_pause)
    return app


async def push(aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path, users_file: Path,
               dangling: int, body: bytes = MANIFEST, reference: str = "1") -> tuple[int, list[tuple[str, int]]]:
    server = await aiohttp_server(registry(dangling))
    async with running_proxy(settings_for(server.make_url(""), tmp_path)) as proxy:
        async with proxy.request("PUT", f"/v2/team/app/manifests/{reference}", data=body,
                                 headers={**basic(*ADMIN), "Content-Type": "application/vnd.oci.image.manifest.v1+json"}) as response:
            await response.read()
            return response.status, server.app[CALLS]


async def test_a_standing_tag_costs_one_head(aiohttp_server, tmp_path: Path, users_file: Path) -> None:  # noqa: ANN001
    status, calls = await push(aiohttp_server, tmp_path, users_file, dangling=0)
    assert status == 201
    assert calls == [("PUT", len(MANIFEST)), ("HEAD", 0)]


async def test_a_dangling_tag_is_pushed_again(aiohttp_server, tmp_path: Path, users_file: Path) -> None:  # noqa: ANN001
    status, calls = await push(aiohttp_server, tmp_path, users_file, dangling=1)
    assert status == 201
    assert calls == [("PUT", len(MANIFEST)), ("HEAD", 0), ("PUT", len(MANIFEST)), ("HEAD", 0)]


async def test_a_tag_that_keeps_dangling_is_an_error(aiohttp_server, tmp_path: Path, users_file: Path) -> None:  # noqa: ANN001
    status, calls = await push(aiohttp_server, tmp_path, users_file, dangling=REPAIRS + 1)
    assert status == 503
    assert [c for c, _ in calls].count("PUT") == REPAIRS + 1


async def test_pushes_by_digest_are_forwarded_unverified(
    aiohttp_server, tmp_path: Path, users_file: Path  # noqa: ANN001
) -> None:
    status, calls = await push(aiohttp_server, tmp_path, users_file, dangling=0, reference="sha256:" + "1" * 64)
    assert status == 201
    assert calls == [("PUT", len(MANIFEST))]


async def test_oversized_manifests_are_refused_before_the_registry(
    aiohttp_server, tmp_path: Path, users_file: Path  # noqa: ANN001
) -> None:
    body = b"x" * (MAX_MANIFEST_BYTES + 1)
    status, calls = await push(aiohttp_server, tmp_path, users_file, dangling=0, body=body)
    assert status == 413
    assert calls == []
