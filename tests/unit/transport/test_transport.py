"""What a stranger can do to a connection: header budgets, silence, connection floods, bodies sent
before authorization, the wrong protocol on a port, and request targets that are not paths."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from cli_helpers import rsa_1024_pair, tls_pair
from helpers import basic
from proxy_harness import (
    ADMIN, READER, READ_TIMEOUT, ProxyClient, auth_line, client_hello_context, exchange, head_and_body,
    install_tls, running_proxy, settings_for, status_of, upload_head,
)

# -- header budget -------------------------------------------------------------------------------


async def test_a_header_line_over_8_kib_answers_431_and_closes(proxy: ProxyClient) -> None:
    request = f"GET /v2/ HTTP/1.1\r\nHost: h\r\nX-Big: {'a' * 9000}\r\n\r\n".encode()
    response = await exchange(proxy.port, request)
    head, body = head_and_body(response)
    assert status_of(response) == 431, head
    assert json.loads(body)["errors"][0]["code"] == "HEADERS_TOO_LARGE"


async def test_too_many_header_fields_answer_400(proxy: ProxyClient) -> None:
    fields = "".join(f"X-F{i}: v\r\n" for i in range(100))
    response = await exchange(proxy.port, f"GET /v2/ HTTP/1.1\r\nHost: h\r\n{fields}\r\n".encode())
    assert status_of(response) == 400


async def test_a_header_block_over_32_kib_in_one_piece_answers_431(proxy: ProxyClient) -> None:
    fields = "".join(f"X-F{i}: {'v' * 4000}\r\n" for i in range(10))  # 40 KB in lines under 8 KiB
    response = await exchange(proxy.port, f"GET /v2/ HTTP/1.1\r\nHost: h\r\n{fields}\r\n".encode())
    assert status_of(response) == 431


async def test_headers_dribbled_past_the_budget_answer_431_before_they_end(
    proxy: ProxyClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The budget counts bytes as they arrive: a header block that never ends is cut at 32 KiB."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        with caplog.at_level("INFO", "mreg.connection"):
            writer.write(b"GET /v2/ HTTP/1.1\r\nHost: h\r\n")
            for i in range(10):  # 10 x 4 KB, never the blank line that ends the headers
                writer.write(f"X-F{i}: {'v' * 4000}\r\n".encode())
                await writer.drain()
                await asyncio.sleep(0.01)  # pacing, so that the lines arrive one by one
            response = await asyncio.wait_for(reader.read(), READ_TIMEOUT)
    finally:
        writer.close()
    assert status_of(response) == 431
    assert any("exceed 32768 bytes" in r.getMessage() for r in caplog.records)


# -- timeouts -----------------------------------------------------------------------------------


@pytest.fixture
async def quick_proxy(upstream: TestServer, users_file: Path, tmp_path: Path) -> Any:
    settings = settings_for(upstream.make_url(""), tmp_path, idle_timeout=1.0)
    async with running_proxy(settings) as client:
        yield client


async def test_a_silent_connection_is_closed_after_the_idle_timeout(quick_proxy: ProxyClient) -> None:
    assert await exchange(quick_proxy.port, b"") == b""


async def test_unfinished_headers_are_closed_after_the_idle_timeout(quick_proxy: ProxyClient) -> None:
    assert await exchange(quick_proxy.port, b"GET /v2/ HTTP/1.1\r\nHost: h\r\nX-") == b""


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
    quick_proxy: ProxyClient,
) -> None:
    request = f"GET /v2/ HTTP/1.1\r\nHost: h\r\n{auth_line(READER)}\r\n".encode()
    response = await exchange(quick_proxy.port, request)  # no Connection: close: kept alive, then cut
    assert status_of(response) == 200


async def test_an_upload_that_moves_outlives_the_idle_timeout(quick_proxy: ProxyClient) -> None:
    async def slow_body() -> Any:
        for _ in range(8):  # 8 x 0.3 s: well past the 1 s idle timeout, never idle that long
            yield b"x" * 1024
            await asyncio.sleep(0.3)

    async with quick_proxy.patch("/v2/echo/slow", data=slow_body(), headers=basic(*ADMIN)) as response:
        assert response.status == 200
        assert (await response.json())["bytes"] == 8 * 1024


# -- bodies and authorization -------------------------------------------------------------------


@pytest.mark.parametrize("user", [None, ("amy", "wrong"), READER], ids=["anonymous", "wrong-password", "reader"])
async def test_a_refused_upload_is_answered_and_closed_without_continue(
    proxy: ProxyClient, user: tuple[str, str] | None
) -> None:
    response = await exchange(proxy.port, upload_head(user, 10 << 20, expect=True))
    head, _body = head_and_body(response)
    assert status_of(response) in (401, 403), head
    assert b"100 Continue" not in response
    assert "Connection: close" in head


async def test_a_refused_upload_is_not_read(proxy: ProxyClient) -> None:
    """Body bytes sent without waiting (no Expect) are not read: the answer comes, then the close."""
    response = await exchange(proxy.port, upload_head(("amy", "wrong"), 64 << 20) + b"x" * (1 << 20))
    head, _body = head_and_body(response)
    assert status_of(response) == 401 and "Connection: close" in head


async def test_continue_is_granted_once_authorized(proxy: ProxyClient) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(upload_head(ADMIN, 5, expect=True))
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        assert status_of(head) == 200
    finally:
        writer.close()


# -- bad input ----------------------------------------------------------------------------------


async def test_an_absolute_form_target_answers_400(proxy: ProxyClient) -> None:
    request = f"GET http://x/v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth_line(READER)}\r\n"
    response = await exchange(proxy.port, request.encode())
    assert status_of(response) == 400


async def test_a_page_size_of_thousands_of_digits_answers_400(proxy: ProxyClient) -> None:
    async with proxy.get(f"/v2/team/app/tags/list?n={'9' * 5000}", headers=basic(*READER)) as response:
        assert response.status == 400
        assert (await response.json())["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


async def test_garbage_answers_400_with_one_line_and_no_traceback(
    proxy: ProxyClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("DEBUG"):
        response = await exchange(proxy.port, b"\x00\x01 nonsense\r\n\r\n")
    assert status_of(response) == 400
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a stranger's garbage"


@pytest.mark.parametrize("path", ["/v2/", "/v2/team/app/tags/list", "/nowhere", "/healthz"])
async def test_the_server_header_names_no_versions(proxy: ProxyClient, path: str) -> None:
    async with proxy.get(path, headers=basic(*READER)) as response:
        assert response.headers["Server"] == "mreg"
    async with proxy.get(path) as anonymous:
        assert anonymous.headers["Server"] == "mreg"


async def test_the_server_header_of_a_parse_error_names_no_versions(proxy: ProxyClient) -> None:
    head, _ = head_and_body(await exchange(proxy.port, b"\x00 nonsense\r\n\r\n"))
    assert "\r\nServer: mreg\r" in head


# -- the wrong protocol on a port ----------------------------------------------------------------


async def test_a_tls_probe_on_the_plain_port_is_one_debug_line_not_a_request(
    proxy: ProxyClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("DEBUG"):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await exchange(proxy.port, b"", context=client_hello_context())
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "TLS handshake from 127.0.0.1 on the plain-HTTP port" in m]
    assert not [r for r in caplog.records if r.name == "mreg.access"], messages


@pytest.fixture
async def tls_proxy(upstream: TestServer, users_file: Path, tmp_path: Path) -> Any:
    install_tls(tmp_path)
    async with running_proxy(settings_for(upstream.make_url(""), tmp_path)) as client:
        yield client


async def test_plain_http_on_the_tls_port_is_told_to_use_https(tls_proxy: ProxyClient) -> None:
    response = await exchange(tls_proxy.port, b"GET /v2/ HTTP/1.1\r\nHost: h\r\n\r\n")
    head, body = head_and_body(response)
    assert status_of(response) == 400
    assert b"this port speaks HTTPS" in body


async def test_a_tls_connection_idle_after_the_handshake_is_closed(
    upstream: TestServer, users_file: Path, tmp_path: Path
) -> None:
    install_tls(tmp_path)
    settings = settings_for(upstream.make_url(""), tmp_path, idle_timeout=1.0)
    async with running_proxy(settings) as client:
        assert await exchange(client.port, b"", context=client_hello_context()) == b""


# -- TLS that cannot be served fails closed -----------------------------------------------------


@pytest.mark.parametrize("problem", ["mismatch", "rsa-1024"])
async def test_an_unusable_pair_at_start_answers_errors_only(
    upstream: TestServer, users_file: Path, tmp_path: Path, problem: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if problem == "mismatch":  # a rotation half done: the new certificate, the old key
        install_tls(tmp_path, (tls_pair()[0], tls_pair()[1]))
    else:
        install_tls(tmp_path, rsa_1024_pair())
    with caplog.at_level("ERROR", "mreg.tls"):
        async with running_proxy(settings_for(upstream.make_url(""), tmp_path)) as client:
            async with client.get("/v2/", headers=basic(*READER)) as response:
                assert response.status == 503
                assert "manage-tls" in (await response.json())["errors"][0]["message"]
            async with client.get("/v2/team/app/tags/list", headers=basic(*READER)) as response:
                assert response.status == 503
            async with client.get("/readyz") as ready:
                assert ready.status == 503
            async with client.get("/healthz") as alive:  # stays up: repairable with podman exec
                assert alive.status == 200
    reason = "does not match" if problem == "mismatch" else "too small"
    assert any(reason in r.getMessage() and "never plain" in r.getMessage() for r in caplog.records)


async def test_a_refusal_raised_before_authorization_closes_without_reading_the_body(
    proxy: ProxyClient,
) -> None:
    """Two Authorization headers are refused by an exception, not a returned answer: the body
    that would follow is still never read or waited for."""
    head = upload_head(ADMIN, 64 << 20, expect=True)
    twice = head.replace(b"\r\n\r\n", f"\r\n{auth_line(ADMIN)}\r\n".encode(), 1)
    response = await exchange(proxy.port, twice)
    head_text, _body = head_and_body(response)
    assert status_of(response) == 400, head_text
    assert b"100 Continue" not in response
    assert "Connection: close" in head_text
