"""Helpers of the CLI and live-TLS tests (tests/test_manage_*.py, test_gen_tls.py, test_tls_live.py).

The CLIs run as real subprocesses from this tree; the proxy runs for real over a small fake
registry. Everything listens on 127.0.0.1 only and every wait is bounded. Their fixtures are in
tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import os
import pty
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

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

    def run(self, module: str, *args: str, stdin: bytes | None = b"") -> Result:
        """``stdin=None``: no stdin at all (/dev/null), as ``podman exec`` without ``-i`` gives."""
        done = subprocess.run(
            [sys.executable, "-m", f"mreg_proxy.cli.{module}", *args],
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
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


def tls_pair(address: str = "127.0.0.1") -> tuple[bytes, bytes]:
    """A fresh self-signed (certificate PEM, key PEM), made the way mreg-gen-tls makes them."""
    return self_signed(address, days=30)


def rsa_1024_pair() -> tuple[bytes, bytes]:
    """A matching pair OpenSSL refuses to serve (its key is under 2048 bits)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


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


async def _value(result: object) -> object:
    return await result if inspect.isawaitable(result) else result


async def wait_until(check: Callable[[], Awaitable[bool] | object], what: str) -> None:
    """Poll ``check`` (a function or a coroutine function) until it holds; fail after
    WAIT_TIMEOUT seconds."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not await _value(check()):
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


@dataclass(frozen=True)
class Proxy:
    port: int
    settings: Settings

    def url(self, scheme: str, path: str = "/v2/") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


def echo_registry() -> web.Application:
    app = web.Application()
    app.router.add_get("/v2/slow", _slow)
    app.router.add_route("*", "/v2/{tail:.*}", _echo)
    return app


def run_on_terminal(
    cli: Cli, module: str, args: list[str], answers: list[bytes], prompt: bytes = b": "
) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as its controlling terminal and type ``answers``,
    each after the next ``prompt`` appears. Returns (exit code, everything it printed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: become the CLI
        os.execve(sys.executable, [sys.executable, *cli.command(module, *args)[1:]], cli.env)
    output = b""
    sent = 0
    deadline = time.monotonic() + CLI_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            # answer each prompt once: getpass flushes what was typed before it asked
            if sent < len(answers) and output.endswith(prompt) and output.count(prompt) > sent:
                os.write(fd, answers[sent])
                sent += 1
    finally:
        os.close(fd)
    return reap(pid), output.decode(errors="replace")


def reap(pid: int) -> int:
    """The child's exit code; a child still running after CLI_TIMEOUT is killed."""
    deadline = time.monotonic() + CLI_TIMEOUT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
