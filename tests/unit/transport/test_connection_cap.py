"""The connection cap holds against one address filling it: at the cap, the busiest address's
oldest idle connection makes room; a request in progress is never closed for that."""

from __future__ import annotations

import asyncio
import collections
import random
import threading
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from aiohttp.test_utils import TestServer

from cli_helpers import wait_until
from fake_registry import HELD, RELEASE
from mreg_proxy.transport.openconns import Open, OpenConnections
from proxy_harness import (
    READ_TIMEOUT, auth_line, client_hello_context, connect, exchange, get_request, install_tls,
    ProxyClient, running_proxy, settings_for, status_of,
)

CAP = 20
STRANGER = "127.0.0.2"  # any 127.x.y.z is a source address of its own on Linux
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def capped_proxy(upstream: TestServer, users_file: Path, tmp_path: Path) -> Any:
    settings = settings_for(upstream.make_url(""), tmp_path, max_connections=CAP, idle_timeout=30.0)
    async with running_proxy(settings) as client:
        yield client


async def answer(reader: asyncio.StreamReader) -> int:
    """The status of the next response, read whole (its Content-Length) so the connection can go on."""
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)).decode("latin-1")
    length = next(
        int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.lower().startswith("content-length:")
    )
    await reader.readexactly(length)
    return status_of(head.encode())


async def open_from(port: int, source: str, first_bytes: bytes = b"") -> Connection:
    reader, writer = await connect(port, source=source)
    writer.write(first_bytes)
    await writer.drain()
    return reader, writer


async def closed(connection: Connection) -> bool:
    try:
        return await asyncio.wait_for(connection[0].read(), READ_TIMEOUT) == b""
    except ConnectionError:
        return True


async def held_requests(upstream: TestServer, count: int) -> None:
    await wait_until(lambda: len(upstream.app[HELD]) >= count, f"{count} requests held at the registry")


def cap_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "connection limit reached" in r.getMessage()]


async def test_one_address_at_the_cap_with_idle_connections_does_not_lock_others_out(
    capped_proxy: ProxyClient, caplog: pytest.LogCaptureFixture
) -> None:
    port = capped_proxy.port
    silent = [await open_from(port, STRANGER) for _ in range(7)]
    half_headers = [await open_from(port, STRANGER, b"GET /v2/ HTTP/1.1\r\nHost: h\r\nX-") for _ in range(7)]
    keep_alive = [await open_from(port, STRANGER, get_request("/v2/")) for _ in range(6)]
    held = silent + half_headers + keep_alive
    try:
        for reader, _writer in keep_alive:
            assert await answer(reader) == 200
        await asyncio.sleep(0.2)  # the last silent ones accepted too
        with caplog.at_level("WARNING", "mreg.server"):
            assert status_of(await exchange(port, get_request("/v2/", close=True))) == 200
        assert cap_lines(caplog) == [
            f"connection limit reached ({CAP} open): closing idle or unauthorized connections of the busiest "
            f"address {STRANGER} ({CAP} open)"
        ]
        assert await closed(silent[0])  # the oldest
        reader, writer = keep_alive[-1]  # and no other
        writer.write(get_request("/v2/"))
        assert await answer(reader) == 200
    finally:
        for _reader, writer in held:
            writer.close()


async def test_a_request_in_progress_is_never_closed_to_make_room(
    upstream: TestServer, users_file: Path, tmp_path: Path
) -> None:
    settings = settings_for(upstream.make_url(""), tmp_path, max_connections=4, idle_timeout=30.0)
    async with running_proxy(settings) as proxy:
        busy = await open_from(proxy.port, STRANGER, get_request("/v2/held"))
        await held_requests(upstream, 1)
        idle = [await open_from(proxy.port, STRANGER) for _ in range(3)]
        ours = []
        try:
            # each takes an idle one's place: the stranger's three, then our own oldest
            for _ in range(4):
                ours.append(await open_from(proxy.port, "127.0.0.1", get_request("/v2/")))
                assert await answer(ours[-1][0]) == 200
            assert [await closed(connection) for connection in idle] == [True] * 3
            assert await closed(ours[0])
            upstream.app[RELEASE].set()
            assert await answer(busy[0]) == 200
        finally:
            for _reader, writer in [busy, *idle, *ours]:
                writer.close()


async def test_when_every_connection_has_a_request_in_progress_new_ones_are_refused(
    upstream: TestServer, users_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(upstream.make_url(""), tmp_path, max_connections=4, idle_timeout=30.0)
    async with running_proxy(settings) as proxy:
        busy = [await open_from(proxy.port, STRANGER, get_request("/v2/held", close=True)) for _ in range(4)]
        try:
            await held_requests(upstream, 4)
            with caplog.at_level("WARNING", "mreg.server"):
                refused = [await exchange(proxy.port, get_request("/v2/", close=True)) for _ in range(3)]
            assert refused == [b""] * 3
            assert len(cap_lines(caplog)) == 1  # one line per episode
            upstream.app[RELEASE].set()
            assert [await answer(reader) for reader, _writer in busy] == [200] * 4
        finally:
            for _reader, writer in busy:
                writer.close()
        for _ in range(50):  # the slots come back once the proxy sees those connections close
            response = await exchange(proxy.port, get_request("/v2/", close=True))
            if response:
                break
            await asyncio.sleep(0.05)
        assert status_of(response) == 200


async def test_wrong_passwords_waiting_for_their_check_make_room_too(
    upstream: TestServer, users_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stranger re-sending wrong passwords keeps every connection busy (held by the throttle,
    queued for bcrypt): those requests are not authorized, so they make room as idle ones do."""
    gate = threading.Event()
    real = bcrypt.checkpw
    entered: list[bytes] = []

    def gated(password: bytes, hashed: bytes) -> bool:
        entered.append(password)
        gate.wait(READ_TIMEOUT)
        return real(password, hashed)

    settings = settings_for(upstream.make_url(""), tmp_path, max_connections=4, idle_timeout=30.0)
    async with running_proxy(settings) as proxy:
        ours = await open_from(proxy.port, "127.0.0.1", get_request("/v2/"))  # checked before the gate shuts
        assert await answer(ours[0]) == 200
        monkeypatch.setattr(bcrypt, "checkpw", gated)
        guessing = [
            await open_from(proxy.port, STRANGER, b"GET /v2/ HTTP/1.1\r\nHost: h\r\n"
                            + auth_line(("someone", f"guess-{i}")).encode() + b"\r\n")
            for i in range(3)
        ]
        try:
            await wait_until(lambda: len(entered) >= 2, "the checks held (the third one queued)")
            ours[1].write(get_request("/v2/"))  # cached: answered while the checks wait
            assert await answer(ours[0]) == 200
            newcomer = await open_from(proxy.port, "127.0.0.1", get_request("/v2/", close=True))
            assert await answer(newcomer[0]) == 200
            assert await closed(guessing[0])  # the stranger's oldest made room
            newcomer[1].close()
        finally:
            gate.set()
            for _reader, writer in [ours, *guessing]:
                writer.close()


async def test_connections_stuck_in_their_tls_handshake_make_room(
    upstream: TestServer, users_file: Path, tmp_path: Path
) -> None:
    """With TLS on, a stranger's connections that sent the start of a ClientHello and nothing more
    are idle too (no request yet): a team member's TLS connection takes their place."""
    install_tls(tmp_path)
    settings = settings_for(upstream.make_url(""), tmp_path, max_connections=4, idle_timeout=30.0)
    async with running_proxy(settings) as proxy:
        stuck = [await open_from(proxy.port, STRANGER, b"\x16\x03\x01\x02\x00") for _ in range(4)]
        try:
            await asyncio.sleep(0.2)  # all four taken in hand, their handshakes waiting for more
            answer_bytes = await exchange(proxy.port, get_request("/v2/", close=True), context=client_hello_context())
            assert status_of(answer_bytes) == 200
            assert await closed(stuck[0])  # the oldest made room
        finally:
            for _reader, writer in stuck:
                writer.close()


def test_the_book_knows_the_busiest_address_after_any_opens_and_closes() -> None:
    """The by-size index (the busiest address in O(1) at each accept at the cap) against a count."""
    book = OpenConnections(10**6)
    chance = random.Random(9)
    live: list[Open] = []
    for _ in range(5000):
        if live and chance.random() < 0.5:
            book.remove(live.pop(chance.randrange(len(live))))
        else:
            live.append(book.add(f"10.0.0.{chance.randrange(20)}"))
        counts = collections.Counter(entry.key for entry in live)
        first = next(book._busiest_first(), None)
        assert (len(first[1]) if first else 0) == max(counts.values(), default=0)
        assert [len(c) for _k, c in book._busiest_first()] == sorted(counts.values(), reverse=True)
