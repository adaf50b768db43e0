"""The proxy on uvloop, whose transports are not asyncio.Transport instances: the TLS-switching
acceptor and the splice path must work on them too."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import http.client
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cli_helpers import tls_pair
from proxy_harness import READER, auth_line, connect, install_tls, running_proxy, settings_for, status_of
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


async def _stop_reading(tmp_path: Path) -> None:
    write_users(tmp_path / "users.yml", make_user(*READER))
    async with TestServer(make_app()) as upstream:
        async with running_proxy(settings_for(upstream.make_url(""), tmp_path, idle_timeout=1.0)) as proxy:
            reader, writer = await connect(proxy.port, receive_buffer=4096)
            writer.write(f"GET /v2/endless HTTP/1.1\r\nHost: h\r\n{auth_line(READER)}\r\n".encode())
            assert status_of(await reader.readuntil(b"\r\n\r\n")) == 200
            await asyncio.wait_for(upstream.app[CLIENT_GONE].wait(), timeout=10)  # nothing read
            writer.close()


def test_a_spliced_download_the_client_stops_reading_is_cut_on_uvloop(tmp_path: Path) -> None:
    """The cut shuts the client's socket down, which must wake splice's wait on uvloop too."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(_stop_reading(tmp_path), timeout=30))


async def _tls_clients(tmp_path: Path) -> None:
    write_users(tmp_path / "users.yml", make_user(*READER))
    cert, key = tls_pair()
    install_tls(tmp_path, (cert, key))
    trusting = ssl.create_default_context(cadata=cert.decode())
    async with TestServer(make_app()) as upstream:
        async with running_proxy(settings_for(upstream.make_url(""), tmp_path)) as proxy:
            url = f"https://127.0.0.1:{proxy.port}/v2/"
            for _ in range(3):  # a refused handshake must leave the listener serving the next one
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await proxy.session.get(url, headers=basic(*READER))
            # Clients that connect and send their ClientHello at once, many at a time, so that
            # bytes are waiting before the proxy has taken the connection in hand.
            # Their own threads: the default executor is where the proxy runs bcrypt.
            loop = asyncio.get_running_loop()
            with concurrent.futures.ThreadPoolExecutor(24) as pool:
                statuses = await asyncio.gather(
                    *(loop.run_in_executor(pool, _blocking_get, proxy.port, trusting) for _ in range(24))
                )
            assert statuses == [200] * 24


def _blocking_get(port: int, context: ssl.SSLContext) -> int:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=20)
    try:
        connection.request("GET", "/v2/", headers=basic(*READER))
        return connection.getresponse().status
    finally:
        connection.close()


def test_tls_handshakes_on_uvloop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """uvloop starts reading a new connection right after connection_made: the TLS handshake must
    still see the client's first bytes (it once lost them and clients timed out)."""
    with caplog.at_level("INFO", "mreg.server"), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(_tls_clients(tmp_path), timeout=60))
    refused = [r.getMessage() for r in caplog.records if "TLS handshake with 127.0.0.1 failed" in r.getMessage()]
    assert len(refused) == 3, refused  # each refused handshake is logged with its peer
    # every served connection is in the connection book with its handler (uvloop's
    # connect_accepted_socket returns its SSL protocol, not ours, for a TLS connection)
    failures = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert not failures, failures
