"""Transfers that stop because of the client are cut after the idle timeout; transfers that move,
however slowly, and waits on the registry are not."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from cli_helpers import wait_until
from fake_registry import CLIENT_GONE, UPLOAD_ENDED
from helpers import basic
from proxy_harness import (
    ADMIN, READ_TIMEOUT, client_hello_context, connect, get_request, install_tls, ProxyClient,
    running_proxy, settings_for, status_of, upload_head,
)

TIMEOUT = 1.0  # the proxy's idle timeout in these tests
MiB = 1 << 20
KiB = 1 << 10
SMALL_WINDOW = 4096  # the client's socket receive buffer: a client that stops reading fills it fast
# a body of known length from 1 MiB on is spliced; one of unknown length is copied
DOWNLOADS = {"spliced": "/v2/endless", "copied": "/v2/endless?chunked=1"}


@pytest.fixture
async def stall_proxy(upstream: TestServer, users_file: Path, tmp_path: Path) -> Any:
    async with running_proxy(settings_for(upstream.make_url(""), tmp_path, idle_timeout=TIMEOUT)) as client:
        yield client


def stall_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]


async def closed_by_proxy(reader: asyncio.StreamReader) -> bool:
    """True once the proxy has closed (or reset) the connection; what it sent before is skipped."""
    try:
        while await asyncio.wait_for(reader.read(MiB), READ_TIMEOUT):
            pass
    except ConnectionError:
        pass
    return True


async def test_an_upload_that_goes_silent_mid_body_is_cut(
    stall_proxy: ProxyClient, upstream: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await connect(stall_proxy.port)
    try:
        with caplog.at_level("INFO"):
            writer.write(upload_head(ADMIN, MiB) + b"x" * (MiB // 2))  # half the body, then nothing
            await writer.drain()
            started = time.monotonic()
            await asyncio.wait_for(upstream.app[UPLOAD_ENDED].wait(), 5 * TIMEOUT)
            assert time.monotonic() - started >= TIMEOUT
            assert await closed_by_proxy(reader)
    finally:
        writer.close()
    lines = stall_lines(caplog)
    assert len(lines) == 1 and "127.0.0.1" in lines[0] and "PATCH /v2/echo/upload" in lines[0], lines
    await wait_until(lambda: any("client disconnected" in r.getMessage() for r in caplog.records),
                     "the cut upload's end logged")
    # the client went away: not a registry failure (no warning, nothing counted against it)
    assert not [r.getMessage() for r in caplog.records if r.name == "mreg.proxy" and r.levelname == "WARNING"]


@pytest.mark.parametrize("path", DOWNLOADS.values(), ids=DOWNLOADS.keys())
async def test_a_download_the_client_stops_reading_is_cut(
    stall_proxy: ProxyClient, upstream: TestServer, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    reader, writer = await connect(stall_proxy.port, receive_buffer=SMALL_WINDOW)
    try:
        with caplog.at_level("INFO"):
            writer.write(get_request(path))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            assert status_of(head) == 200
            # from here on nothing is read: the windows and buffers fill, then the proxy waits
            await asyncio.wait_for(upstream.app[CLIENT_GONE].wait(), 10 * TIMEOUT)
            assert await closed_by_proxy(reader)
    finally:
        writer.close()
    lines = stall_lines(caplog)
    assert len(lines) == 1 and f"GET {path.partition('?')[0]}" in lines[0], lines


# larger than what the kernel takes on the proxy's side (up to 4 MiB of send buffer), so that the
# proxy keeps waiting on the client, and the client keeps moving
SLOW_BODY = 16 * MiB


@pytest.mark.parametrize("path", [f"/v2/blob/{SLOW_BODY}", f"/v2/chunked/{SLOW_BODY}"], ids=DOWNLOADS.keys())
async def test_a_slow_download_that_moves_completes(
    stall_proxy: ProxyClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    reader, writer = await connect(stall_proxy.port, receive_buffer=SMALL_WINDOW)
    started = time.monotonic()
    received = 0
    try:
        with caplog.at_level("INFO"):
            writer.write(get_request(path, close=True))
            while chunk := await asyncio.wait_for(reader.read(MiB), READ_TIMEOUT):
                received += len(chunk)
                if received // MiB != (received - len(chunk)) // MiB:
                    await asyncio.sleep(TIMEOUT / 5)  # a pause after each MiB, never a long one
    finally:
        writer.close()
    assert received > SLOW_BODY  # the whole body (and the head, and chunk sizes when copied)
    assert time.monotonic() - started > 2.5 * TIMEOUT  # slow: several timeouts long
    assert stall_lines(caplog) == []


@pytest.mark.parametrize(
    ("query", "size"), [("sleep_after=3", KiB), ("sleep_before=3", 8 * MiB)],
    ids=["slow-to-answer", "slow-to-take-the-body"],
)
async def test_a_registry_slower_than_the_timeout_does_not_cut_an_upload(
    stall_proxy: ProxyClient, caplog: pytest.LogCaptureFixture, query: str, size: int
) -> None:
    with caplog.at_level("INFO"):
        async with stall_proxy.patch(f"/v2/echo/u?{query}", data=b"x" * size, headers=basic(*ADMIN)) as response:
            assert response.status == 200
            assert (await response.json())["bytes"] == size
    assert stall_lines(caplog) == []


async def test_a_tls_download_the_client_stops_reading_is_cut(
    upstream: TestServer, users_file: Path, tmp_path: Path
) -> None:
    install_tls(tmp_path)
    async with running_proxy(settings_for(upstream.make_url(""), tmp_path, idle_timeout=TIMEOUT)) as proxy:
        reader, writer = await connect(proxy.port, receive_buffer=SMALL_WINDOW, context=client_hello_context())
        try:
            writer.write(get_request(DOWNLOADS["spliced"]))  # over TLS it is copied all the same
            assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)) == 200
            await asyncio.wait_for(upstream.app[CLIENT_GONE].wait(), 10 * TIMEOUT)
        finally:
            writer.close()
