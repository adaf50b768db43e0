"""TLS in the running proxy: HTTPS with the generated certificate, switching on and off, rotation
under load, and a bad pair that changes nothing. Every request opens a new connection, so each one
shows what the listener does for new connections at that moment."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from cli_helpers import (
    CLI_TIMEOUT,
    SLOW_CHUNK,
    SLOW_CHUNKS,
    WAIT_TIMEOUT,
    AuthFiles,
    Cli,
    Proxy,
    encrypted,
    fingerprint,
    tls_pair,
    wait_until,
)

from helpers import basic, make_user, require_tool, write_users

from mreg_proxy.transport.tls import TlsState

LOAD_TIMEOUT = 30.0  # upper bound for the background client in the rotation test


@dataclass(frozen=True)
class Answer:
    status: int
    proto: str | None  # the X-Forwarded-Proto the registry received
    fingerprint: str | None  # SHA-256 of the certificate the proxy presented


@pytest.fixture(autouse=True)
def bob(auth_files: AuthFiles) -> None:
    write_users(auth_files.users, make_user("bob", "pw"))


def trusting(*certs: bytes) -> ssl.SSLContext:
    """A client context that trusts only ``certs`` (and checks the host name, as clients do)."""
    return ssl.create_default_context(cadata="".join(c.decode() for c in certs))


async def get(proxy: Proxy, scheme: str, context: ssl.SSLContext | None = None) -> Answer:
    """One request on a new connection, with asyncio streams so the presented certificate is at hand."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", proxy.port, ssl=context if scheme == "https" else None),
        WAIT_TIMEOUT,
    )
    try:
        head = f"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\nConnection: close\r\n"
        auth = "".join(f"{k}: {v}\r\n" for k, v in basic("bob", "pw").items())
        writer.write(f"{head}{auth}\r\n".encode())
        data = await asyncio.wait_for(reader.read(), WAIT_TIMEOUT)
        ssl_object = writer.get_extra_info("ssl_object")
        peer_cert = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    if not data:
        raise ConnectionError("the connection closed without an answer")
    status_line, _, rest = data.partition(b"\r\n")
    status = int(status_line.split()[1])
    body = rest.partition(b"\r\n\r\n")[2]
    proto = json.loads(body)["proto"] if status == 200 else None
    presented = hashlib.sha256(peer_cert).digest().hex(":").upper() if peer_cert else None
    return Answer(status, proto, presented)


async def answers(proxy: Proxy, scheme: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        return (await get(proxy, scheme, context)).status == 200
    except (ssl.SSLError, OSError, ValueError, IndexError):
        return False


async def install(cli: Cli, command: str, pem: bytes) -> None:
    result = await asyncio.to_thread(cli.run, "manage_tls", command, stdin=pem)
    assert result.code == 0, result


async def install_pair(cli: Cli, proxy: Proxy, cert: bytes, key: bytes) -> None:
    await install(cli, "cert", cert)
    await install(cli, "key", key)
    await wait_until(lambda: answers(proxy, "https", trusting(cert)), "HTTPS with the new pair")


def rejections(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mreg.tls" and r.levelno >= logging.ERROR]


async def wait_polls(count: int = 5) -> None:
    """Let the TLS watcher (0.1 s interval in the fixture) run a few times."""
    await asyncio.sleep(count * 0.1)


# --- plain HTTP and HTTPS ---------------------------------------------------------------------


async def test_without_tls_files_the_proxy_speaks_plain_http(proxy: Proxy) -> None:
    answer = await get(proxy, "http")
    assert (answer.status, answer.proto) == (200, "http")


async def test_generated_certificate_passes_a_real_handshake(cli: Cli, proxy: Proxy) -> None:
    cert, key = tls_pair("127.0.0.1")
    await install_pair(cli, proxy, cert, key)
    answer = await get(proxy, "https", trusting(cert))
    assert answer.status == 200
    assert answer.fingerprint == fingerprint(cert)


async def test_forwarded_proto_follows_https(cli: Cli, proxy: Proxy) -> None:
    cert, key = tls_pair()
    await install_pair(cli, proxy, cert, key)
    assert (await get(proxy, "https", trusting(cert))).proto == "https"


def request_behind_the_handshake(port: int, context: ssl.SSLContext) -> bytes:
    """A TLS client that sends its request in the same TCP segment as its last handshake message,
    as fast clients do, so the request arrives while the proxy is still finishing the handshake."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    auth = basic("bob", "pw")["Authorization"]
    request = f"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_TIMEOUT) as sock:
        for _ in range(10):  # a TLS 1.3 handshake takes two round trips at most
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        tls.write(request.encode())
        sock.sendall(outgoing.read())  # the client's Finished and the request, together
        for _ in range(100):  # bounded: the answer is a few small TLS records
            chunk = sock.recv(65536)
            if not chunk:
                break
            incoming.write(chunk)
            try:
                while data := tls.read(65536):  # one segment may carry the answer and close_notify
                    answer += data
            except ssl.SSLWantReadError:
                continue
            except ssl.SSLZeroReturnError:  # the proxy's close_notify: the answer is complete
                pass
            break
    return answer


async def test_request_sent_with_the_last_handshake_message_is_answered(cli: Cli, proxy: Proxy) -> None:
    cert, key = tls_pair()
    await install_pair(cli, proxy, cert, key)
    answer = await asyncio.to_thread(request_behind_the_handshake, proxy.port, trusting(cert))
    assert answer.startswith(b"HTTP/1.1 200 ")


@pytest.mark.integration
async def test_go_client_accepts_the_generated_certificate_as_its_ca(
    cli: Cli, proxy: Proxy, tmp_path: Path
) -> None:
    """skopeo (Go's TLS, stricter than OpenSSL about CA certificates) logs in trusting only it."""
    skopeo = require_tool("skopeo")
    cert, key = tls_pair()
    await install_pair(cli, proxy, cert, key)
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    (cert_dir / "ca.crt").write_bytes(cert)
    process = await asyncio.create_subprocess_exec(
        skopeo, "login", "--cert-dir", str(cert_dir), "--authfile", str(tmp_path / "auth.json"),
        "-u", "bob", "-p", "pw", f"127.0.0.1:{proxy.port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert b"Login Succeeded" in out


async def test_client_trusting_another_certificate_is_refused(cli: Cli, proxy: Proxy) -> None:
    cert, key = tls_pair()
    await install_pair(cli, proxy, cert, key)
    with pytest.raises(ssl.SSLCertVerificationError):
        await get(proxy, "https", trusting(tls_pair()[0]))


# --- switching --------------------------------------------------------------------------------


async def test_installing_a_pair_switches_new_connections_to_https(cli: Cli, proxy: Proxy) -> None:
    assert await answers(proxy, "http")
    cert, key = tls_pair()
    await install_pair(cli, proxy, cert, key)
    assert not await answers(proxy, "http")


async def test_deleting_the_certificate_switches_back_to_plain_http(cli: Cli, proxy: Proxy) -> None:
    cert, key = tls_pair()
    await install_pair(cli, proxy, cert, key)
    await install(cli, "cert", b"")
    await wait_until(lambda: answers(proxy, "http"), "plain HTTP again")
    assert (await get(proxy, "http")).proto == "http"


async def test_transfer_in_flight_survives_the_switch_to_https(cli: Cli, proxy: Proxy) -> None:
    cert, key = tls_pair()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(proxy.url("http", "/v2/slow"), headers=basic("bob", "pw")) as response:
            first = await response.content.readexactly(len(SLOW_CHUNK))
            await install_pair(cli, proxy, cert, key)
            rest = await response.content.read()
    assert len(first) + len(rest) == SLOW_CHUNKS * len(SLOW_CHUNK)


# --- rotation and bad pairs -------------------------------------------------------------------


async def keep_requesting(
    proxy: Proxy, context: ssl.SSLContext, stop: asyncio.Event, seen: set[str]
) -> list[str]:
    """New-connection HTTPS requests until ``stop`` (or LOAD_TIMEOUT); returns the failures."""
    failures: list[str] = []
    deadline = time.monotonic() + LOAD_TIMEOUT
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            answer = await get(proxy, "https", context)
        except (ssl.SSLError, OSError, ValueError, IndexError) as exc:
            failures.append(repr(exc))
            continue
        if answer.status != 200 or answer.fingerprint is None:
            failures.append(f"status {answer.status}")
        else:
            seen.add(answer.fingerprint)
    return failures


async def test_rotation_under_load_fails_no_request(cli: Cli, proxy: Proxy) -> None:
    old_cert, old_key = tls_pair()
    new_cert, new_key = tls_pair()
    await install_pair(cli, proxy, old_cert, old_key)
    stop, seen = asyncio.Event(), set[str]()
    client = asyncio.create_task(keep_requesting(proxy, trusting(old_cert, new_cert), stop, seen))
    try:
        await install(cli, "cert", new_cert)  # step one: mismatched with the old key
        await wait_polls()
        await install(cli, "key", new_key)  # step two: the new pair is complete

        async def rotated() -> bool:
            return fingerprint(new_cert) in seen

        await wait_until(rotated, "the new certificate being served")
    finally:
        stop.set()
        failures = await asyncio.wait_for(client, LOAD_TIMEOUT + WAIT_TIMEOUT)
    assert failures == []
    assert seen == {fingerprint(old_cert), fingerprint(new_cert)}


async def test_mismatched_key_keeps_the_old_certificate_serving(
    cli: Cli, proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tls_pair()
    await install_pair(cli, proxy, cert, key)
    await install(cli, "key", tls_pair()[1])

    async def rejected() -> bool:
        return bool(rejections(caplog))

    await wait_until(rejected, "the mismatched pair being rejected")
    assert "does not match" in rejections(caplog)[0]
    assert (await get(proxy, "https", trusting(cert))).fingerprint == fingerprint(cert)


async def test_half_written_certificate_logs_one_line_and_keeps_serving(
    cli: Cli, proxy: Proxy, auth_files: AuthFiles, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tls_pair()
    await install_pair(cli, proxy, cert, key)
    auth_files.cert.write_bytes(tls_pair()[0][:300])  # what a copy cut short leaves behind

    async def rejected() -> bool:
        return bool(rejections(caplog))

    await wait_until(rejected, "the broken certificate being rejected")
    await wait_polls()
    assert len(rejections(caplog)) == 1
    assert "not a complete PEM certificate" in rejections(caplog)[0]
    assert (await get(proxy, "https", trusting(cert))).fingerprint == fingerprint(cert)


def test_encrypted_key_is_rejected_without_prompting(
    auth_files: AuthFiles, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tls_pair()
    auth_files.cert.write_bytes(cert)
    auth_files.key.write_bytes(encrypted(key))
    state = TlsState(auth_files.cert, auth_files.key)
    state.refresh()
    assert state.context is None
    assert "encrypted" in rejections(caplog)[0]
