from __future__ import annotations

from pathlib import Path
import asyncio
import contextlib
import socket
import ssl
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from cli_helpers import tls_pair
from fake_registry import make_app
from helpers import basic, free_port, make_user, write_users
from mreg_proxy.app import create_app
from mreg_proxy.keys import TLS
from mreg_proxy.transport.accesslog import RUNNER_OPTIONS
from mreg_proxy.transport.site import SwitchingSite
from mreg_proxy.config import Settings

ADMIN = ("amy", "admin-pw")
READER = ("bob", "pa:ss:word")  # a colon in the password on purpose
READ_TIMEOUT = 20.0  # upper bound for any answer in these tests; none is expected to take long


def install_tls(tmp_path: Path, pair: tuple[bytes, bytes] | None = None) -> None:
    """A certificate and key where settings_for's proxy looks for them: a fresh matching pair, or
    ``pair``."""
    cert, key = pair or tls_pair()
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)


def settings_for(upstream: URL, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        upstream=upstream,
        users_file=tmp_path / "users.yml",
        tls_cert=tmp_path / "tls.crt",
        tls_key=tmp_path / "tls.key",
        policy_file=tmp_path / "policy.yml",  # never the machine's /auth/policy.yml
        bcrypt_cost=4,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.yml"
    write_users(path, make_user(*ADMIN, role="admin"), make_user(*READER))
    return path


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    return await aiohttp_server(make_app())


class ProxyClient:
    """A client of the proxy running exactly as in production (runner options, SwitchingSite)."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.port = port

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        # paths are given already percent-encoded and must go out byte for byte
        return self.session.request(method, URL(f"http://127.0.0.1:{self.port}{path}", encoded=True), **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> Any:
        return self.request("HEAD", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.request("PATCH", path, **kwargs)


@contextlib.asynccontextmanager
async def running_proxy(settings: Settings) -> AsyncIterator[ProxyClient]:
    app = create_app(settings)
    runner = web.AppRunner(app, **RUNNER_OPTIONS)
    await runner.setup()
    port = free_port()
    site = SwitchingSite(
        runner, "127.0.0.1", port, app[TLS],
        max_connections=settings.max_connections, idle_timeout=settings.idle_timeout,
    )
    await site.start()
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            yield ProxyClient(session, port)
    finally:
        await runner.cleanup()


@pytest.fixture
async def proxy(upstream: TestServer, users_file: Path, tmp_path: Path) -> AsyncIterator[ProxyClient]:
    async with running_proxy(settings_for(upstream.make_url(""), tmp_path)) as client:
        yield client


# -- raw connections, for what an HTTP client library would not send ------------------------------


def client_hello_context() -> ssl.SSLContext:
    """A TLS client that takes any certificate (the tests' are self-signed)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def connect(
    port: int, *, source: str = "127.0.0.1", receive_buffer: int | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A new connection to the proxy from ``source`` (any 127.x.y.z works on Linux), with a small
    socket receive buffer when asked (a client that stops reading then fills it quickly)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if receive_buffer is not None:  # before connecting: it sets the window announced
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, ssl=context, server_hostname="" if context else None)


async def exchange(port: int, data: bytes, *, context: ssl.SSLContext | None = None) -> bytes:
    """Send ``data`` on a new connection and read until the proxy closes it."""
    reader, writer = await connect(port, context=context)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), READ_TIMEOUT)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def head_and_body(response: bytes) -> tuple[str, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def auth_line(user: tuple[str, str]) -> str:
    return f"Authorization: {basic(*user)['Authorization']}\r\n"


def get_request(path: str, *, close: bool = False) -> bytes:
    """A reader's raw ``GET path``; ``close`` asks for the connection to close after it."""
    connection = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: h\r\n{connection}{auth_line(READER)}\r\n".encode()


def upload_head(user: tuple[str, str] | None, length: int, *, expect: bool = False) -> bytes:
    lines = [
        "PATCH /v2/echo/upload HTTP/1.1", "Host: h", f"Content-Length: {length}",
        "Content-Type: application/octet-stream",
    ]
    if expect:
        lines.append("Expect: 100-continue")
    head = "\r\n".join(lines) + "\r\n" + (auth_line(user) if user else "") + "\r\n"
    return head.encode()


async def access_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    """The access-log lines, once ``count`` are there: the server logs a request just after the
    client has the whole response (bounded wait)."""
    for _ in range(100):
        lines = [r.getMessage() for r in caplog.records if r.name == "mreg.access"]
        if len(lines) >= count:
            break
        await asyncio.sleep(0.01)
    return lines
