"""Strangers guessing passwords: throttling, bounded checks, and the smaller hardening items."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from fake_registry import REQUESTS
from cli_helpers import wait_until
from helpers import basic, free_port, make_user, write_users
from mreg_proxy.auth import throttle as throttle_module
from mreg_proxy.app import create_app
from mreg_proxy.keys import AUTHENTICATOR, TLS
from mreg_proxy.transport.accesslog import RUNNER_OPTIONS
from mreg_proxy.transport.site import SwitchingSite
from proxy_harness import ADMIN, READER, ProxyClient, access_lines, settings_for

WAIT = 10  # seconds: bounds every wait, never asserted


def _error(body: str) -> dict[str, Any]:
    return json.loads(body)["errors"][0]


async def _queue_checks(session: aiohttp.ClientSession, url: str, authenticator: Any, queued: int) -> list[Any]:
    """One wrong-password check running (held at the gate), then ``queued`` more waiting behind it:
    the requests, still in flight."""
    requests = [asyncio.ensure_future(session.get(url, headers=basic("amy", "w0")))]
    await wait_until(lambda: not authenticator._pool.waiting() and authenticator._inflight, "a running check")
    requests += [asyncio.ensure_future(session.get(url, headers=basic("amy", f"w{i}"))) for i in range(1, queued + 1)]
    await wait_until(lambda: authenticator._pool.waiting() >= queued, "the queue")
    return requests


@pytest.fixture(autouse=True)
def short_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Held attempts wait 0.2 s instead of 2 s: the behaviour is the same, the suite faster."""
    monkeypatch.setattr(throttle_module, "HOLD", 0.2)


@contextlib.asynccontextmanager
async def serving(settings: Any) -> AsyncIterator[tuple[ProxyClient, web.Application]]:
    runner, port = await _started_proxy(settings)
    try:
        async with aiohttp.ClientSession() as session:
            yield ProxyClient(session, port), runner.app
    finally:
        await runner.cleanup()


@pytest.fixture
async def strict(upstream: TestServer, users_file: Path, tmp_path: Path) -> AsyncIterator[ProxyClient]:
    """A proxy whose throttle starts after one failure, with a cap far beyond the hold, that
    believes X-Forwarded-For from the test client (so tests can speak from several addresses)."""
    settings = settings_for(
        upstream.make_url(""), tmp_path, login_free_failures=1, login_address_free_failures=3,
        login_max_delay=600, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
    )
    async with serving(settings) as (client, app):
        client.app = app  # type: ignore[attr-defined]
        yield client


def _from(address: str, credentials: dict[str, str]) -> dict[str, str]:
    return {**credentials, "X-Forwarded-For": address}


async def _fail_until_throttled(client: ProxyClient, address: str, name: str = "amy") -> aiohttp.ClientResponse:
    for attempt in range(10):
        response = await client.get("/v2/", headers=_from(address, basic(name, f"guess-{attempt}")))
        await response.read()
        if response.status == 429:
            return response
        assert response.status == 401
    raise AssertionError("never throttled")


async def test_repeated_failures_get_429_with_retry_after(strict: ProxyClient) -> None:
    response = await _fail_until_throttled(strict, "198.51.100.7")
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert _error(await response.text())["code"] == "TOOMANYREQUESTS"


async def test_a_throttled_attempt_runs_no_bcrypt(strict: ProxyClient, upstream: TestServer) -> None:
    await _fail_until_throttled(strict, "198.51.100.7")
    authenticator = _authenticator_of(strict)
    before = authenticator.bcrypt_checks
    response = await strict.get("/v2/", headers=_from("198.51.100.7", basic(*ADMIN)))  # even the right password
    assert response.status == 429
    assert authenticator.bcrypt_checks == before and authenticator.throttled >= 2
    assert upstream.app[REQUESTS] == []


async def test_the_same_user_from_another_address_is_not_slowed(strict: ProxyClient) -> None:
    await _fail_until_throttled(strict, "198.51.100.7")
    assert (await strict.get("/v2/", headers=_from("198.51.100.8", basic(*ADMIN)))).status == 200


async def test_cached_credentials_are_never_slowed(strict: ProxyClient) -> None:
    assert (await strict.get("/v2/", headers=_from("198.51.100.7", basic(*ADMIN)))).status == 200
    await _fail_until_throttled(strict, "198.51.100.7")
    await _fail_until_throttled(strict, "198.51.100.7", "bob")  # the address itself is over its limit
    assert (await strict.get("/v2/", headers=_from("198.51.100.7", basic(*ADMIN)))).status == 200


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(upstream: TestServer, tmp_path: Path,
                                                               users_file: Path) -> None:
    settings = settings_for(upstream.make_url(""), tmp_path, login_free_failures=1, login_address_free_failures=3,
                            login_max_delay=600)
    async with serving(settings) as (client, _app):
        await _fail_until_throttled(client, "198.51.100.7")
        # a forged header does not make the attacker someone else
        response = await client.get("/v2/", headers=_from("198.51.100.99", basic("amy", "again")))
        assert response.status == 429


async def test_two_authorization_headers_are_a_400(proxy: ProxyClient, upstream: TestServer) -> None:
    headers = [("Authorization", basic(*ADMIN)["Authorization"]), ("Authorization", basic(*READER)["Authorization"])]
    response = await proxy.get("/v2/", headers=headers)
    assert response.status == 400
    assert _error(await response.text())["code"] == "UNSUPPORTED"
    assert upstream.app[REQUESTS] == []


async def test_readyz_asks_the_registry_once_a_second_at_most(proxy: ProxyClient, upstream: TestServer) -> None:
    answers = await asyncio.gather(*(proxy.get("/readyz") for _ in range(20)))
    assert all(a.status == 200 for a in answers)
    for _ in range(5):
        assert (await proxy.get("/readyz")).status == 200
    assert upstream.app[REQUESTS].count(("GET", "/v2/")) == 1


async def test_access_log_user_field_never_splits(proxy: ProxyClient, caplog: pytest.LogCaptureFixture) -> None:

    with caplog.at_level("INFO", "mreg.access"):
        await (await proxy.get("/v2/", headers=basic("eve with spaces\t!", "pw"))).read()
        await (await proxy.get("/v2/", headers=basic(*READER))).read()
        lines = await access_lines(caplog, 2)
    assert len({len(line.split()) for line in lines}) == 1, lines
    assert "!eve\\x20with\\x20spaces\\t!" in lines[0]


def _authenticator_of(client: ProxyClient) -> Any:
    return client.app[AUTHENTICATOR]  # type: ignore[attr-defined]


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """bcrypt checks block until the gate opens (then run for real)."""
    event = threading.Event()
    real = bcrypt.checkpw

    def gated(password: bytes, hashed: bytes) -> bool:
        event.wait(WAIT)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", gated)
    yield event
    event.set()


async def _started_proxy(settings: Any) -> tuple[web.AppRunner, int]:
    app = create_app(settings)
    runner = web.AppRunner(app, **RUNNER_OPTIONS)
    await runner.setup()
    port = free_port()
    await SwitchingSite(runner, "127.0.0.1", port, app[TLS]).start()
    return runner, port


async def test_full_queue_answers_503_at_once(upstream: TestServer, users_file: Path, tmp_path: Path,
                                             gate: threading.Event) -> None:
    settings = settings_for(upstream.make_url(""), tmp_path, bcrypt_workers=1, bcrypt_queue=2,
                            login_free_failures=100, login_address_free_failures=100)
    runner, port = await _started_proxy(settings)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/v2/"
            authenticator = runner.app[AUTHENTICATOR]
            waiting = await _queue_checks(session, url, authenticator, 2)
            refused = await session.get(url, headers=basic("amy", "one-too-many"))
            assert refused.status == 503 and refused.headers["Retry-After"] == "1"
            assert _error(await refused.text())["code"] == "UNAVAILABLE"
            gate.set()
            assert [r.status for r in await asyncio.gather(*waiting)] == [401] * 3
    finally:
        await runner.cleanup()


async def test_a_check_whose_client_hung_up_is_not_run(upstream: TestServer, users_file: Path, tmp_path: Path,
                                                       gate: threading.Event) -> None:
    settings = settings_for(upstream.make_url(""), tmp_path, bcrypt_workers=1)
    runner, port = await _started_proxy(settings)
    authenticator = runner.app[AUTHENTICATOR]
    try:
        url = f"http://127.0.0.1:{port}/v2/"
        async with aiohttp.ClientSession() as session:
            first = asyncio.ensure_future(session.get(url, headers=basic("amy", "running")))
            await wait_until(lambda: not authenticator._pool.waiting() and authenticator._inflight, "a running check")
            async with aiohttp.ClientSession() as quitter:  # queued behind the first, then gone
                hung_up = asyncio.ensure_future(quitter.get(url, headers=basic("amy", "queued")))
                await wait_until(lambda: authenticator._pool.waiting() >= 1, "the queue")
                hung_up.cancel()
            # the server noticed and dropped the check
            await wait_until(lambda: not authenticator._pool.waiting(), "the dropped check")
            gate.set()
            assert (await first).status == 401
        assert authenticator.bcrypt_checks == 1
    finally:
        await runner.cleanup()


async def test_stopping_refuses_queued_checks_at_once(upstream: TestServer, users_file: Path, tmp_path: Path,
                                                      gate: threading.Event) -> None:
    settings = settings_for(upstream.make_url(""), tmp_path, bcrypt_workers=1, bcrypt_queue=100,
                            login_free_failures=100, login_address_free_failures=100)
    runner, port = await _started_proxy(settings)
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/v2/"
        authenticator = runner.app[AUTHENTICATOR]
        waiting = await _queue_checks(session, url, authenticator, 29)
        stopping = asyncio.ensure_future(runner.cleanup())  # the gate stays shut: one check is running
        # the queued ones are answered without it
        await wait_until(lambda: sum(w.done() for w in waiting) >= 29, "the queued answers")
        gate.set()
        statuses = [r.status for r in await asyncio.gather(*waiting)]
        await stopping
    assert statuses.count(503) == 29 and statuses.count(401) == 1, statuses


async def test_unknown_users_cost_what_the_costliest_user_costs(tmp_path: Path) -> None:
    from mreg_proxy.auth.passwords import Authenticator
    from mreg_proxy.auth.users import User, UserStore

    path = tmp_path / "users.yml"
    cheap = make_user("cheap", "pw")
    costly = User("costly", "reader", bcrypt.hashpw(b"pw", bcrypt.gensalt(6)).decode())
    write_users(path, cheap, costly, make_user("other", "pw"))
    authenticator = Authenticator(UserStore(path), ttl=60, dummy_cost=4)
    store = await UserStore(path).fresh()
    assert authenticator._costliest_hash(store) == costly.password_hash.encode()


async def test_a_throttled_upload_is_answered_and_its_body_never_read(strict: ProxyClient, upstream: TestServer) -> None:
    await _fail_until_throttled(strict, "198.51.100.7")
    response = await strict.put("/v2/echo/x", headers=_from("198.51.100.7", basic(*ADMIN)), data=b"x" * (4 << 20))
    assert response.status == 429
    assert response.headers.get("Connection", "").lower() == "close"
    assert upstream.app[REQUESTS] == []
