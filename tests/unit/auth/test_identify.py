"""Grants, CI tokens, anonymous pulls, the filtered catalog, mounts and the audit log, through the
real proxy in front of a small fake registry."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import bcrypt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from helpers import basic, make_user
from mreg_proxy.auth.audit import AuditLog, read_events
from mreg_proxy.auth.identify import Access
from mreg_proxy.auth.passwords import Authenticator, Bcrypt, hash_cost
from mreg_proxy.auth.throttle import Policy, Throttle
from mreg_proxy.auth.grants import Grant, Level
from mreg_proxy.auth.tokencheck import TokenUsage, read_usage
from mreg_proxy.auth.tokens import hash_secret, new_secret
from mreg_proxy.auth.users import Store, Token, User, UserStore, write_store
from proxy_harness import ProxyClient, running_proxy, settings_for

SEEN = web.AppKey("seen", list)
REPOSITORIES = sorted(
    [f"team/app{i:04d}" for i in range(0, 2400, 7)] + [f"other/x{i:04d}" for i in range(2400)]
)
DIGEST = "sha256:" + "ab" * 32
SECRET = new_secret()
WAIT = 10.0


async def catalog(request: web.Request) -> web.Response:
    """registry 2.8's paging: sorted, n (at most 1000), last, a Link when there is more."""
    request.app[SEEN].append(("GET", request.raw_path))
    n = int(request.query.get("n", "1000"))
    last = request.query.get("last")
    names = [r for r in REPOSITORIES if last is None or r > last]
    page = names[:n]
    headers = {}
    if len(names) > n:
        headers["Link"] = f'</v2/_catalog?last={page[-1]}&n={n}>; rel="next"'
    return web.json_response({"repositories": page}, headers=headers)


async def anything(request: web.Request) -> web.Response:
    await request.read()
    if request.path.startswith("/v2/mreg-internal/"):
        return web.Response(status=404)  # no write pause (writepause.py asks before writes)
    request.app[SEEN].append((request.method, request.raw_path))
    if request.method == "PUT" and "/manifests/" in request.path:
        return web.Response(status=201, headers={"Docker-Content-Digest": DIGEST})
    if request.method == "DELETE":
        return web.Response(status=202)
    return web.json_response({"raw_path": request.raw_path})


def registry() -> web.Application:
    app = web.Application()
    app[SEEN] = []
    app.router.add_get("/v2/_catalog", catalog)
    app.router.add_route("*", "/v2/{tail:.*}", anything)
    return app


def grants(*pairs: tuple[str, str]) -> tuple[Grant, ...]:
    return tuple(Grant(p, Level[l.upper()]) for p, l in pairs)


NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
STORE = Store(
    users={
        "reader": make_user("reader", "pw"),
        "admin": make_user("admin", "pw", "admin"),
        "bob": dataclasses.replace(make_user("bob", "pw", "none"), grants=grants(("team/*", "push"))),
        "eve": dataclasses.replace(make_user("eve", "pw"), grants=grants(("team/**", "none"))),
    },
    tokens={
        "ci": Token("ci", hash_secret(SECRET), grants(("team/app0007", "push")), NOW),
        "old": Token("old", hash_secret(SECRET), grants(("team/**", "pull")), NOW, NOW - datetime.timedelta(hours=1)),
    },
    anonymous=grants(("public/**", "pull")),
)


@pytest.fixture
async def fake(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    return await aiohttp_server(registry())


@pytest.fixture
async def proxy(fake: TestServer, tmp_path: Path) -> AsyncIterator[ProxyClient]:
    write_store(tmp_path / "users.yml", STORE)
    async with running_proxy(settings_for(fake.make_url(""), tmp_path)) as client:
        yield client


async def call(proxy: ProxyClient, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    async with proxy.request(method, path, **kwargs) as response:
        return response.status, dict(response.headers), await response.read()


def events(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in read_events(tmp_path / "audit.log") if e["event"] == kind]


# --- users with grants ------------------------------------------------------------------------


async def test_push_grant_on_a_glob_allows_push_there_and_nowhere_else(proxy: ProxyClient, fake: TestServer) -> None:
    auth = basic("bob", "pw")
    assert (await call(proxy, "POST", "/v2/team/app/blobs/uploads/", headers=auth))[0] == 200
    assert (await call(proxy, "PUT", "/v2/team/app/manifests/1", headers=auth, data=b"{}"))[0] == 201
    for path in ("/v2/other/app/blobs/uploads/", "/v2/team/a/b/blobs/uploads/"):
        status, _, body = await call(proxy, "POST", path, headers=auth)
        assert status == 403
        assert json.loads(body)["errors"][0]["code"] == "DENIED"
    assert [m for m, p in fake.app[SEEN] if "other" in p or "team/a/b" in p] == []


async def test_a_repository_the_caller_may_not_see_answers_like_a_missing_one(proxy: ProxyClient, fake: TestServer) -> None:
    auth = basic("eve", "pw")  # reader everywhere but team/**
    cases = {
        "/v2/team/app/manifests/latest": b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"latest"}}]}\n',
        f"/v2/team/app/manifests/{DIGEST}": (
            b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Name":"team/app","Revision":"'
            + DIGEST.encode() + b'"}}]}\n'),
        f"/v2/team/app/blobs/{DIGEST}": (
            b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"' + DIGEST.encode() + b'"}]}\n'),
        "/v2/team/app/tags/list": (
            b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{"name":"team/app"}}]}\n'),
    }
    for path, body in cases.items():
        status, headers, got = await call(proxy, "GET", path, headers=auth)
        assert (status, got) == (404, body), path
        assert headers["Content-Type"] == "application/json; charset=utf-8"
        status, headers, got = await call(proxy, "HEAD", path, headers=auth)
        assert (status, got, headers["Content-Length"]) == (404, b"", str(len(body)))
    assert fake.app[SEEN] == []
    assert (await call(proxy, "GET", "/v2/other/app/manifests/latest", headers=auth))[0] == 200


async def test_grants_change_live(proxy: ProxyClient, tmp_path: Path) -> None:
    auth = basic("bob", "pw")
    assert (await call(proxy, "GET", "/v2/other/app/manifests/1", headers=auth))[0] == 404
    bob = STORE.users["bob"]
    more = dataclasses.replace(bob, grants=bob.grants + grants(("other/*", "pull")))
    write_store(tmp_path / "users.yml", dataclasses.replace(STORE, users={**STORE.users, "bob": more}))
    assert (await call(proxy, "GET", "/v2/other/app/manifests/1", headers=auth))[0] == 200


# --- tokens -----------------------------------------------------------------------------------


async def test_a_token_logs_in_with_its_name_and_never_exceeds_its_grants(proxy: ProxyClient) -> None:
    auth = basic("ci", SECRET)
    assert (await call(proxy, "GET", "/v2/", headers=auth))[0] == 200
    assert (await call(proxy, "PUT", "/v2/team/app0007/manifests/1", headers=auth, data=b"{}"))[0] == 201
    assert (await call(proxy, "DELETE", "/v2/team/app0007/manifests/1", headers=auth))[0] == 403
    assert (await call(proxy, "GET", "/v2/team/app0014/manifests/1", headers=auth))[0] == 404
    assert (await call(proxy, "POST", "/v2/team/app0014/blobs/uploads/", headers=auth))[0] == 403


@pytest.mark.parametrize("name,secret", [("ci", "mreg_wrong"), ("ci", ""), ("old", SECRET)])
async def test_a_wrong_or_expired_token_is_refused(proxy: ProxyClient, tmp_path: Path, name: str, secret: str) -> None:
    status, headers, _ = await call(proxy, "GET", "/v2/team/app0007/manifests/1", headers=basic(name, secret))
    assert status == 401 and "WWW-Authenticate" in headers
    [event] = events(tmp_path, "login_failed")
    assert event["user"] == name and event["address"] == "127.0.0.1"
    assert event["reason"] == ("token expired" if name == "old" else "wrong token secret")


async def test_token_use_is_recorded_without_a_write_per_request(proxy: ProxyClient, tmp_path: Path) -> None:
    for _ in range(20):
        assert (await call(proxy, "HEAD", "/v2/team/app0007/manifests/1", headers=basic("ci", SECRET)))[0] == 200
    deadline = time.monotonic() + WAIT
    while "ci" not in read_usage(tmp_path / "token-usage.json"):
        assert time.monotonic() < deadline, "token use never written"
        await asyncio.sleep(0.05)
    assert read_usage(tmp_path / "token-usage.json")["ci"] >= NOW


def test_usage_writes_are_throttled(tmp_path: Path) -> None:
    clock = [100.0]
    usage = TokenUsage(tmp_path / "token-usage.json", interval=60, clock=lambda: clock[0])
    assert not usage.claim()
    usage.note("ci", NOW)
    assert usage.claim()  # the first use is written at once
    assert not usage.claim()  # and only once, though the write has not happened yet
    usage.flush()
    for second in range(59):
        clock[0] = 101.0 + second
        usage.note("ci", NOW + datetime.timedelta(seconds=second))
        assert not usage.claim()
    clock[0] = 160.0
    assert usage.claim()
    usage.flush()
    assert usage.writes == 2
    assert read_usage(tmp_path / "token-usage.json") == {"ci": NOW + datetime.timedelta(seconds=58)}


# --- anonymous --------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [{}, {"Authorization": "Basic Og=="}])
async def test_anonymous_clients_pull_public_repositories_only(proxy: ProxyClient, header: dict[str, str]) -> None:
    assert (await call(proxy, "GET", "/v2/public/base/manifests/1", headers=header))[0] == 200
    assert (await call(proxy, "HEAD", f"/v2/public/a/b/blobs/{DIGEST}", headers=header))[0] == 200
    for method, path in [("GET", "/v2/team/app/manifests/1"), ("POST", "/v2/public/base/blobs/uploads/"),
                         ("PUT", "/v2/public/base/manifests/1"), ("DELETE", "/v2/public/base/manifests/1")]:
        status, headers, _ = await call(proxy, method, path, headers=header)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic "), (method, path)


async def test_the_login_probe_challenges_anonymous_clients_even_when_something_is_public(proxy: ProxyClient) -> None:
    status, headers, _ = await call(proxy, "GET", "/v2/")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")


async def test_anonymous_catalog_lists_only_public_repositories(proxy: ProxyClient) -> None:
    status, _, body = await call(proxy, "GET", "/v2/_catalog")
    assert (status, json.loads(body)) == (200, {"repositories": []})


# --- catalog ----------------------------------------------------------------------------------


async def pages(proxy: ProxyClient, auth: dict[str, str], n: int) -> list[list[str]]:
    path, seen = f"/v2/_catalog?n={n}", []
    for _ in range(1000):
        status, headers, body = await call(proxy, "GET", path, headers=auth)
        assert status == 200
        seen.append(json.loads(body)["repositories"])
        if "Link" not in headers:
            return seen
        path = headers["Link"].split(">")[0].lstrip("<")
    raise AssertionError("paging never ended")


@pytest.mark.parametrize("n", [1, 7, 50, 1000])
async def test_catalog_pages_only_what_the_caller_may_pull(proxy: ProxyClient, n: int) -> None:
    visible = [r for r in REPOSITORIES if r.startswith("team/")]
    got = await pages(proxy, basic("bob", "pw"), n)
    assert [r for page in got for r in page] == visible
    assert all(len(page) == n for page in got[:-1]) and 0 < len(got[-1]) <= n


async def test_catalog_without_n_and_for_a_narrowed_reader(proxy: ProxyClient) -> None:
    status, headers, body = await call(proxy, "GET", "/v2/_catalog", headers=basic("eve", "pw"))
    names = json.loads(body)["repositories"]
    assert len(names) == 1000 and all(r.startswith("other/") for r in names) and "Link" in headers


async def test_catalog_of_a_global_reader_is_the_registry_own(proxy: ProxyClient, fake: TestServer) -> None:
    status, headers, body = await call(proxy, "GET", "/v2/_catalog?n=5", headers=basic("reader", "pw"))
    assert json.loads(body)["repositories"] == REPOSITORIES[:5]
    assert fake.app[SEEN] == [("GET", "/v2/_catalog?n=5")]


@pytest.mark.parametrize("query", ["n=-1", "n=x", "n=1001"])
async def test_catalog_refuses_bad_paging(proxy: ProxyClient, query: str) -> None:
    status, _, body = await call(proxy, "GET", f"/v2/_catalog?{query}", headers=basic("bob", "pw"))
    assert status == 400 and json.loads(body)["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


# --- mounts -----------------------------------------------------------------------------------


async def test_mount_from_a_readable_repository_is_forwarded_as_is(proxy: ProxyClient, fake: TestServer) -> None:
    path = f"/v2/team/app/blobs/uploads/?mount={DIGEST}&from=team/base"
    assert (await call(proxy, "POST", path, headers=basic("bob", "pw")))[0] == 200
    assert fake.app[SEEN] == [("POST", path)]


@pytest.mark.parametrize("source", ["other/secret", "", "NOT_A_NAME"])
async def test_mount_from_an_unreadable_repository_becomes_a_plain_upload(
    proxy: ProxyClient, fake: TestServer, tmp_path: Path, source: str
) -> None:
    path = f"/v2/team/app/blobs/uploads/?mount={DIGEST}&x=1&from={source}&y=a%2Bb"
    assert (await call(proxy, "POST", path, headers=basic("bob", "pw")))[0] == 200
    assert fake.app[SEEN] == [("POST", "/v2/team/app/blobs/uploads/?x=1&y=a%2Bb")]
    [event] = events(tmp_path, "mount_refused")
    assert event["user"] == "bob" and event["source"] == source


# --- audit ------------------------------------------------------------------------------------


async def test_pushes_deletes_denials_and_failed_logins_are_audited_once(proxy: ProxyClient, tmp_path: Path) -> None:
    await call(proxy, "PUT", "/v2/team/app/manifests/v1", headers=basic("bob", "pw"), data=b"{}")
    await call(proxy, "DELETE", f"/v2/team/app/manifests/{DIGEST}", headers=basic("admin", "pw"))
    await call(proxy, "DELETE", f"/v2/team/app/blobs/{DIGEST}", headers=basic("admin", "pw"))
    await call(proxy, "PUT", "/v2/other/app/manifests/v1", headers=basic("bob", "pw"), data=b"{}")
    await call(proxy, "GET", "/v2/", headers=basic('mallory\n{"event"="fake"}', "x"))
    [pushed] = events(tmp_path, "manifest_pushed")
    assert (pushed["user"], pushed["repository"], pushed["tag"], pushed["digest"]) == ("bob", "team/app", "v1", DIGEST)
    [deleted] = events(tmp_path, "manifest_deleted")
    assert (deleted["user"], deleted["digest"]) == ("admin", DIGEST)
    assert len(events(tmp_path, "blob_deleted")) == 1
    [denied] = events(tmp_path, "denied")
    assert (denied["user"], denied["repository"], denied["action"], denied["access"]) == ("bob", "other/app", "push", "none")
    [failed] = events(tmp_path, "login_failed")
    assert failed["user"] == 'mallory\n{"event"="fake"}' and failed["address"] == "127.0.0.1"
    assert events(tmp_path, "fake") == []
    assert len((tmp_path / "audit.log").read_text().splitlines()) == 5


async def test_wrong_token_secrets_are_throttled_and_a_right_one_is_not(fake: TestServer, tmp_path: Path) -> None:
    write_store(tmp_path / "users.yml", STORE)
    settings = settings_for(fake.make_url(""), tmp_path, login_free_failures=1, login_address_free_failures=100)
    async with running_proxy(settings) as client:
        path = "/v2/team/app0007/manifests/1"
        statuses = [(await call(client, "HEAD", path, headers=basic("ci", "mreg_guess")))[0] for _ in range(4)]
        assert statuses == [401, 401, 401, 429]  # held 1 s, then 2 s, then refused at once
        assert (await call(client, "HEAD", path, headers=basic("ci", SECRET)))[0] == 200
    assert len(events(tmp_path, "login_failed")) == 3  # a 429 is not written: the throttle bounds the log too


class CountingBcrypt(Bcrypt):
    def __init__(self) -> None:
        self.checked: list[int] = []  # the cost of each hash checked

    def check(self, secret: bytes, stored: bytes, pad_to: int) -> bool:
        self.checked.append(hash_cost(stored))
        return super().check(secret, stored, pad_to)


async def test_a_wrong_token_secret_costs_what_an_unknown_name_costs(tmp_path: Path) -> None:
    """A token's name must not be told from a name nobody has by how fast a failure answers."""
    costly = User("costly", "reader", bcrypt.hashpw(b"pw", bcrypt.gensalt(6)).decode())
    write_store(tmp_path / "users.yml", dataclasses.replace(STORE, users={**STORE.users, "costly": costly}))
    store = UserStore(tmp_path / "users.yml")
    hasher = CountingBcrypt()
    access = Access(
        store, Authenticator(store, ttl=60, dummy_cost=4, hasher=hasher), Throttle(Policy(100, 1), Policy(100, 1)),
        TokenUsage(tmp_path / "usage.json"), AuditLog(str(tmp_path / "audit.log"), 1 << 20),
    )
    assert await access.identify(basic("ci", "mreg_guess")["Authorization"], "192.0.2.1", lambda: True) is None
    assert await access.identify(basic("nobody", "mreg_guess")["Authorization"], "192.0.2.1", lambda: True) is None
    assert hasher.checked == [6, 6]  # both against the costliest hash of the store
    principal = await access.identify(basic("ci", SECRET)["Authorization"], "192.0.2.1", lambda: True)
    assert principal is not None and hasher.checked == [6, 6]  # a right secret pays no bcrypt
