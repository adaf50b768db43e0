"""Shared fixtures: the CLIs run as real subprocesses, the proxy runs for real over a fake upstream.

Everything listens on 127.0.0.1 only; every wait is bounded; every server and process started here
is stopped here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from yarl import URL

from mreg_proxy.app import serve
from mreg_proxy.cli.gen_tls import self_signed
from mreg_proxy.config import Settings

SRC = Path(__file__).resolve().parent.parent / "src"
CLI_TIMEOUT = 60.0
WAIT_TIMEOUT = 10.0
POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class Cli:
    """Runs ``python -m mreg_proxy.cli.MODULE`` from this tree, with the test's settings."""

    env: dict[str, str]
    cwd: Path

    def run(self, module: str, *args: str, stdin: bytes = b"") -> Result:
        done = subprocess.run(
            [sys.executable, "-m", f"mreg_proxy.cli.{module}", *args],
            input=stdin,
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            timeout=CLI_TIMEOUT,
        )
        return Result(done.returncode, done.stdout.decode(), done.stderr.decode())

    def command(self, module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", f"mreg_proxy.cli.{module}", *args]


@dataclass(frozen=True)
class AuthFiles:
    users: Path
    cert: Path
    key: Path


def assert_refused(result: Result, prog: str) -> None:
    """A refusal: non-zero exit and exactly one line on stderr, prefixed with the program name."""
    assert result.code != 0, result
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith(f"{prog}: error: "), result.err


@pytest.fixture
def auth_files(tmp_path: Path) -> AuthFiles:
    folder = tmp_path / "auth"
    folder.mkdir()
    return AuthFiles(folder / "users.yml", folder / "tls.crt", folder / "tls.key")


@pytest.fixture
def cli(auth_files: AuthFiles, tmp_path: Path) -> Cli:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(SRC),
        MREG_USERS_FILE=str(auth_files.users),
        MREG_TLS_CERT=str(auth_files.cert),
        MREG_TLS_KEY=str(auth_files.key),
        MREG_BCRYPT_COST="4",
    )
    return Cli(env, tmp_path)


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def tls_pair(address: str = "127.0.0.1") -> tuple[bytes, bytes]:
    """A fresh self-signed (certificate PEM, key PEM), made the way mreg-gen-tls makes them."""
    return self_signed(address, days=30)


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the (first) certificate, AA:BB:... as manage-tls print shows it."""
    return x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256()).hex(":").upper()


def encrypted(key_pem: bytes) -> bytes:
    """``key_pem`` protected by a passphrase, as an operator might paste it by mistake."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds; fail after WAIT_TIMEOUT seconds."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)


# The fake registry: answers every /v2/ request with what the proxy told it, and /v2/slow with a
# body sent in pieces, so a transfer can be in flight while the test changes things.
SLOW_CHUNKS = 20
SLOW_CHUNK = b"x" * 1024


async def _echo(request: web.Request) -> web.Response:
    return web.json_response(
        {"method": request.method, "proto": request.headers.get("X-Forwarded-Proto")}
    )


async def _slow(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = SLOW_CHUNKS * len(SLOW_CHUNK)
    await response.prepare(request)
    for _ in range(SLOW_CHUNKS):
        await response.write(SLOW_CHUNK)
        await asyncio.sleep(0.05)
    await response.write_eof()
    return response


@pytest.fixture
async def upstream(aiohttp_server) -> URL:  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_get("/v2/slow", _slow)
    app.router.add_route("*", "/v2/{tail:.*}", _echo)
    server = await aiohttp_server(app, host="127.0.0.1")
    return URL(f"http://127.0.0.1:{server.port}")


@dataclass(frozen=True)
class Proxy:
    port: int
    settings: Settings

    def url(self, scheme: str, path: str = "/v2/") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def proxy(auth_files: AuthFiles, upstream: URL) -> AsyncIterator[Proxy]:
    """The real proxy (``serve``), polling the TLS files every 0.1 s."""
    port = free_port()
    settings = Settings(
        listen_host="127.0.0.1",
        listen_port=port,
        upstream=upstream,
        users_file=auth_files.users,
        tls_cert=auth_files.cert,
        tls_key=auth_files.key,
        bcrypt_cost=4,
        tls_poll_interval=0.1,
    )
    started = asyncio.Event()
    task = asyncio.create_task(serve(settings, started))
    try:
        await asyncio.wait_for(started.wait(), WAIT_TIMEOUT)
        yield Proxy(port, settings)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
