"""The proxy on uvloop, whose transports are not asyncio.Transport instances: the TLS-switching
acceptor and the splice path must work on them too."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from proxy_harness import READER, running_proxy, settings_for
from fake_registry import CLIENT_GONE, make_app
from helpers import basic, make_user, write_users

uvloop = pytest.importorskip("uvloop")

MB = 1 << 20


async def _pull_and_hang_up(tmp_path: Path) -> None:
    write_users(tmp_path / "users.yml", make_user(*READER))
    async with TestServer(make_app()) as upstream:
        async with running_proxy(settings_for(upstream.make_url(""), tmp_path)) as proxy:
            response = await proxy.get(f"/v2/blob/{4 * MB + 5}", headers=basic(*READER))
            body = await response.read()
            assert "sha256:" + hashlib.sha256(body).hexdigest() == response.headers["Docker-Content-Digest"]

            response = await proxy.get("/v2/endless", headers=basic(*READER))
            await response.content.readexactly(MB)
            response.close()
            await asyncio.wait_for(upstream.app[CLIENT_GONE].wait(), timeout=10)


def test_spliced_pull_and_disconnect_on_uvloop(tmp_path: Path) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert type(runner.get_loop()).__module__ == "uvloop"
        runner.run(asyncio.wait_for(_pull_and_hang_up(tmp_path), timeout=30))
