"""The web page, end to end through the real proxy (create_app, runner, site) in front of an
in-memory registry: login, sessions, what each viewer sees, CSRF, tag deletion, admin views."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import re
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Awaitable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from fake_images import Images, OCI_INDEX, make_app
from helpers import make_user, write_users
from mreg_proxy.auth.grants import Grant, Level
from mreg_proxy.auth.users import Store, Token, User, read_store, write_store
from mreg_proxy.auth.tokens import hash_secret
from mreg_proxy.storage.tree import V2
from proxy_harness import running_proxy, settings_for

ADMIN = ("amy", "admin-pw")
READER = ("bob", "pa:ss:word")
LIMITED = ("lee", "limited-pw")  # may pull team/* only
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


class Browser:
    """One person's browser: a cookie jar that accepts the proxy's cookies on 127.0.0.1."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def get(self, path: str) -> tuple[int, Any, str]:
        async with self.session.get(self.base + path, allow_redirects=False) as response:
            return response.status, response.headers, await response.text()

    async def post(self, path: str, data: dict[str, str] | str, **kwargs: Any) -> tuple[int, Any, str]:
        async with self.session.post(self.base + path, data=data, allow_redirects=False, **kwargs) as response:
            return response.status, response.headers, await response.text()

    async def csrf(self, path: str = "/") -> str:
        _status, _headers, html = await self.get(path)
        return csrf_of(html)

    async def login(self, user: str, password: str) -> tuple[int, Any, str]:
        return await self.post("/ui/login", {"csrf": await self.csrf("/"), "username": user, "password": password})


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html[:500]
    return match[1]


@pytest.fixture
def images() -> Images:
    images = Images()
    for tag in ("1.9", "1.10", "2", "latest"):
        images.image("team/app", tag, config={"config": {"Labels": {"tag": tag}}})
    images.image("secret/db", "1.0")
    return images


@pytest.fixture
async def registry(aiohttp_server: Callable[..., Awaitable[TestServer]], images: Images) -> TestServer:
    return await aiohttp_server(make_app(images))


def write_people(path: Path) -> None:
    limited = User(LIMITED[0], "none", make_user(*LIMITED).password_hash, (Grant("team/*", Level.PULL),))
    write_users(path, make_user(*ADMIN, role="admin"), make_user(*READER), limited)


@contextlib.asynccontextmanager
async def browsers(port: int) -> AsyncIterator[Callable[[], Browser]]:
    """Makes browsers of the page on ``port``, each with its own cookies; all closed at the end."""
    sessions: list[aiohttp.ClientSession] = []

    def browser() -> Browser:
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        sessions.append(session)
        return Browser(session, f"http://127.0.0.1:{port}")

    try:
        yield browser
    finally:
        for session in sessions:
            await session.close()


@contextlib.asynccontextmanager
async def site(registry: TestServer, tmp_path: Path, **overrides: Any) -> AsyncIterator[Callable[[], Browser]]:
    write_people(tmp_path / "users.yml")
    async with running_proxy(settings_for(registry.make_url(""), tmp_path, **overrides)) as proxy:
        async with browsers(proxy.port) as browser:
            yield browser


@pytest.fixture
async def web(registry: TestServer, tmp_path: Path) -> AsyncIterator[Callable[[], Browser]]:
    async with site(registry, tmp_path) as browser:
        yield browser


async def logged_in(web: Callable[[], Browser], who: tuple[str, str]) -> Browser:
    browser = web()
    status, headers, _ = await browser.login(*who)
    assert status == 303 and headers["Location"] == "/", status
    return browser


def audit_events(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- login and sessions -------------------------------------------------------------------------


async def test_the_login_form_asks_for_username_and_password(web: Callable[[], Browser]) -> None:
    status, headers, html = await web().get("/")
    assert status == 200
    assert 'name="username"' in html and 'name="password"' in html
    assert headers["Cache-Control"] == "no-store"


async def test_a_login_sets_a_strict_httponly_expiring_cookie(web: Callable[[], Browser]) -> None:
    browser = web()
    _status, headers, _ = await browser.login(*ADMIN)
    cookie = next(v for v in headers.getall("Set-Cookie") if v.startswith("mreg_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=28800" in cookie
    assert "Secure" not in cookie  # plain HTTP here: a Secure cookie would never come back
    status, _, html = await browser.get("/")
    assert status == 200 and "team/app" in html and "Log out" in html


async def test_a_wrong_password_is_refused_and_audited(web: Callable[[], Browser], tmp_path: Path) -> None:
    status, _, html = await web().login(ADMIN[0], "wrong")
    assert status == 401 and "Wrong user name or password" in html
    assert any(e["event"] == "login_failed" and e["user"] == ADMIN[0] for e in audit_events(tmp_path))


async def test_a_login_without_the_forms_csrf_token_is_refused(web: Callable[[], Browser]) -> None:
    browser = web()
    await browser.get("/")
    status, headers, _ = await browser.post("/ui/login", {"username": ADMIN[0], "password": ADMIN[1]})
    assert status == 403 and "mreg_session=" not in " ".join(headers.getall("Set-Cookie", []))


async def test_a_login_goes_through_the_throttle(registry: TestServer, tmp_path: Path) -> None:
    async with site(registry, tmp_path, login_free_failures=1, login_max_delay=60) as web:
        browser = web()
        statuses = [(await browser.login(ADMIN[0], "wrong"))[0] for _ in range(4)]
    assert 429 in statuses, statuses


async def test_ci_tokens_cannot_log_in(registry: TestServer, tmp_path: Path) -> None:
    async with site(registry, tmp_path) as web:
        store_path = tmp_path / "users.yml"
        store = read_store(store_path)
        token = Token("ci", hash_secret("tok-secret"), (Grant("team/*", Level.PULL),), datetime.datetime.now(datetime.timezone.utc))
        write_store(store_path, Store(store.users, {"ci": token}, store.anonymous))
        status, _, html = await web().login("ci", "tok-secret")
    assert status == 403 and "CI tokens cannot log in" in html


async def test_a_forged_or_tampered_cookie_is_no_session(web: Callable[[], Browser]) -> None:
    browser = web()
    await browser.login(*ADMIN)
    cookie = next(c for c in browser.session.cookie_jar if c.key == "mreg_session")
    body, _, mac = cookie.value.partition(".")
    forged = web()
    forged.session.cookie_jar.update_cookies({"mreg_session": body + "." + mac[::-1]})
    status, headers, _ = await forged.get("/ui/r/team/app")
    assert status == 303 and headers["Location"] == "/"


async def test_a_new_password_ends_the_old_sessions(web: Callable[[], Browser], tmp_path: Path) -> None:
    browser = await logged_in(web, READER)
    assert (await browser.get("/ui/r/team/app"))[0] == 200
    write_users(tmp_path / "users.yml", make_user(*ADMIN, role="admin"), make_user(READER[0], "new-password"))
    assert (await browser.get("/ui/r/team/app"))[0] == 303


async def test_a_login_that_rehashes_a_cheap_hash_stays_logged_in(registry: TestServer, tmp_path: Path) -> None:
    # the users have cost-4 hashes: at bcrypt_cost 5 a right password re-hashes them, and the
    # session must be bound to the new hash, not to the one the re-hash replaces
    async with site(registry, tmp_path, bcrypt_cost=5) as web:
        browser = await logged_in(web, READER)
        for _ in range(100):  # the re-hash is done when the login answers: this only waits without the fix
            if read_store(tmp_path / "users.yml").users[READER[0]].password_hash.startswith("$2b$05$"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the cheap hash was not re-hashed")
        assert (await browser.get("/ui/r/team/app"))[0] == 200


async def test_logout_needs_the_sessions_csrf_token_and_ends_it(web: Callable[[], Browser]) -> None:
    browser = await logged_in(web, READER)
    status, _, _ = await browser.post("/ui/logout", {"csrf": "forged"})
    assert status == 403 and (await browser.get("/ui/r/team/app"))[0] == 200
    status, headers, _ = await browser.post("/ui/logout", {"csrf": await browser.csrf("/")})
    assert status == 303 and (await browser.get("/ui/r/team/app"))[0] == 303


async def test_the_session_key_is_kept_beside_the_users_file(web: Callable[[], Browser], tmp_path: Path) -> None:
    key = tmp_path / "ui-session.key"
    assert len(key.read_bytes()) == 32 and key.stat().st_mode & 0o777 == 0o600


# -- budgets and headers ------------------------------------------------------------------------


async def test_a_form_over_its_budget_is_refused_unread(web: Callable[[], Browser]) -> None:
    status, _, _ = await web().post("/ui/login", {"username": "a" * 5000, "password": "x"})
    assert status == 413


async def test_a_form_with_a_field_twice_is_refused(web: Callable[[], Browser]) -> None:
    browser = web()
    csrf = await browser.csrf("/")
    status, _, _ = await browser.post(
        "/ui/login", f"csrf={csrf}&username=amy&username=bob&password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 400


@pytest.mark.parametrize("path", ["/", "/ui/r/team/app", "/ui/r/secret/none", "/ui/admin", "/ui/static/mreg.css"])
async def test_every_answer_carries_the_policy_headers(web: Callable[[], Browser], path: str) -> None:
    browser = await logged_in(web, READER)
    _status, headers, _ = await browser.get(path)
    assert headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"


async def test_pages_hold_no_inline_script(web: Callable[[], Browser]) -> None:
    browser = await logged_in(web, ADMIN)
    for path in ("/", "/ui/r/team/app", "/ui/admin", "/ui/audit"):
        html = (await browser.get(path))[2]
        assert re.findall(r"<script[^>]*>", html) == ['<script src="/ui/static/copy.js" defer>'], path
        assert not re.search(r"<[^>]+\son\w+=", html) and "style=" not in html, path


async def test_the_web_page_can_be_switched_off(registry: TestServer, tmp_path: Path) -> None:
    async with site(registry, tmp_path, ui=False) as web:
        status, _, _ = await web().get("/")
        assert status == 404
        assert not (tmp_path / "ui-session.key").exists()


# -- what each viewer sees ----------------------------------------------------------------------


async def test_a_page_needs_a_login(web: Callable[[], Browser]) -> None:
    status, headers, _ = await web().get("/ui/r/team/app")
    assert status == 303 and headers["Location"] == "/"


async def test_hidden_repositories_are_nowhere(web: Callable[[], Browser]) -> None:
    browser = await logged_in(web, LIMITED)
    html = (await browser.get("/"))[2]
    assert "team/app" in html and "secret" not in html and "1 repository" in html
    searched = (await browser.get("/?q=secret"))[2]
    assert "secret/db" not in searched and "0 repositories" in searched
    hidden = await browser.get("/ui/r/secret/db")
    missing = await browser.get("/ui/r/secret/nothing")
    assert hidden[0] == missing[0] == 404 and hidden[2] == missing[2]
    hidden_image = await browser.get("/ui/r/secret/db@1.0")
    assert hidden_image[0] == 404 and hidden_image[2] == missing[2]


async def test_the_repository_list_searches_and_counts_tags(web: Callable[[], Browser]) -> None:
    browser = await logged_in(web, READER)
    html = (await browser.get("/?q=app"))[2]
    assert "team/app" in html and "secret/db" not in html
    assert re.search(r'team/app</a></td><td class="num">4<', html)


async def test_the_repository_list_pages(registry: TestServer, images: Images, tmp_path: Path) -> None:
    for number in range(120):
        images.image(f"many/r{number:03d}", "1")
    async with site(registry, tmp_path) as web:
        browser = await logged_in(web, READER)
        first = (await browser.get("/?q=many"))[2]
        third = (await browser.get("/?q=many&page=3"))[2]
    assert "many/r000" in first and "many/r050" not in first and "page 1 of 3" in first
    assert "many/r119" in third and "many/r099" not in third


async def test_tags_by_name_sort_numbers_as_numbers(web: Callable[[], Browser]) -> None:
    browser = await logged_in(web, READER)
    html = (await browser.get("/ui/r/team/app?sort=name"))[2]
    order = re.findall(r'<h2><a href="[^"]+">([^<]+)</a>', html)
    assert order == ["1.9", "1.10", "2", "latest"]


async def test_tags_newest_first_by_creation_time(registry: TestServer, images: Images, tmp_path: Path) -> None:
    images.image("time/app", "old", config={"created": "2025-01-01T00:00:00Z"})
    images.image("time/app", "new", config={"created": "2026-06-01T00:00:00Z"})
    images.image("time/app", "mid", config={"created": "2025-06-01T00:00:00Z"})
    async with site(registry, tmp_path) as web:
        html = (await (await logged_in(web, READER)).get("/ui/r/time/app"))[2]
    assert re.findall(r'<h2><a href="[^"]+">([^<]+)</a>', html) == ["new", "mid", "old"]


async def test_a_tag_row_shows_digest_size_and_pull_line(web: Callable[[], Browser], images: Images) -> None:
    browser = await logged_in(web, READER)
    html = (await browser.get("/ui/r/team/app?sort=name"))[2]
    digest = images.repos["team/app"]["tags"]["2"]
    assert f'data-copy="{digest}"' in html and digest[:19] in html
    assert "podman pull --tls-verify=false 127.0.0.1:" in html and "/team/app:2" in html
    assert "linux/amd64" in html


async def test_an_index_shows_a_size_per_platform(registry: TestServer, images: Images, tmp_path: Path) -> None:
    arm = images.image("multi/app", None, config={"architecture": "arm64"}, layers=3)
    amd = images.image("multi/app", None, layers=1)
    entries = [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": 1, "platform": {"os": "linux", "architecture": a}}
        for d, a in ((amd, "amd64"), (arm, "arm64"))
    ]
    images.put_manifest("multi/app", "1", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, OCI_INDEX)
    async with site(registry, tmp_path) as web:
        browser = await logged_in(web, READER)
        html = (await browser.get("/ui/r/multi/app"))[2]
        assert "index" in html and "linux/amd64:" in html and "linux/arm64:" in html
        image = (await browser.get("/ui/r/multi/app@1"))[2]
    assert "Platforms" in image and arm[:19] in image


async def test_an_image_page_shows_config_layers_history_and_referrers(registry: TestServer, images: Images, tmp_path: Path) -> None:
    subject = images.image("team/tool", "1", layers=2, config={
        "config": {"Labels": {"org.example": "yes"}, "Env": ["PATH=/bin"], "Entrypoint": ["/tool"], "Cmd": ["--help"],
                   "ExposedPorts": {"8080/tcp": {}}},
        "history": [{"created_by": "COPY tool /tool"}, {"created_by": "ENV X=1", "empty_layer": True}, {"created_by": "RUN make"}],
    })
    signature = images.image("team/tool", None, artifact_type="application/vnd.dev.cosign.signature", subject=subject)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": signature, "size": 10,
         "artifactType": "application/vnd.dev.cosign.signature"}]}
    images.put_manifest("team/tool", "sha256-" + subject.split(":")[1], index, OCI_INDEX)
    async with site(registry, tmp_path) as web:
        browser = await logged_in(web, READER)
        html = (await browser.get(f"/ui/r/team/tool@{subject}"))[2]
        listing = (await browser.get("/ui/r/team/tool"))[2]
    for text in ("org.example", "PATH=/bin", "[&#34;/tool&#34;]", "8080/tcp", "COPY tool /tool", "RUN make", "ENV X=1",
                 "application/vnd.dev.cosign.signature", signature[:19], "Raw manifest"):
        assert text in html, text
    assert "sha256-" not in listing  # the referrers index tag is shown on its subject's page instead


async def test_registry_strings_are_escaped(registry: TestServer, images: Images, tmp_path: Path) -> None:
    images.image("team/evil", "1", config={"config": {"Labels": {HOSTILE: HOSTILE}, "Env": [HOSTILE]},
                                           "history": [{"created_by": HOSTILE}]}, annotations={"a": HOSTILE})
    async with site(registry, tmp_path) as web:
        browser = await logged_in(web, READER)
        html = (await browser.get("/ui/r/team/evil@1"))[2]
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in html


async def test_a_huge_hostile_config_keeps_the_page_small(registry: TestServer, images: Images, tmp_path: Path) -> None:
    images.image("team/big", "1", layers=300, config={  # just under the 1 MiB read for a config
        "config": {"Labels": {f"l{i}": "x" * 2000 for i in range(150)}, "Env": ["y" * 2000] * 150},
        "history": [{"created_by": "z" * 2000}] * 150,
    })
    images.image("team/big", "2", config={"config": {"Env": ["y" * 5000] * 300}})  # over it
    async with site(registry, tmp_path) as web:
        browser = await logged_in(web, READER)
        status, _, html = await browser.get("/ui/r/team/big@1")
        over = await browser.get("/ui/r/team/big@2")
        listing = await browser.get("/ui/r/team/big")
    assert status == 200 and "yyyyyyyy" in html and len(html.encode()) < 100_000
    assert over[0] == 200 and "yyyyyyyy" not in over[2] and listing[0] == 200


async def test_a_repository_of_500_tags_pages_under_100_kb(registry: TestServer, images: Images, tmp_path: Path) -> None:
    for number in range(500):
        images.image("team/many", f"v{number}")
    async with site(registry, tmp_path) as web:
        browser = await logged_in(web, READER)
        status, _, html = await browser.get("/ui/r/team/many")
        last = (await browser.get("/ui/r/team/many?sort=name&page=17"))[2]
    assert status == 200 and len(html.encode()) < 100_000 and "page 1 of 17" in html
    assert "v499" in last


# -- deleting tags ------------------------------------------------------------------------------


async def test_a_reader_sees_no_delete_and_a_hand_made_post_is_refused(web: Callable[[], Browser], images: Images, tmp_path: Path) -> None:
    browser = await logged_in(web, READER)
    html = (await browser.get("/ui/r/team/app"))[2]
    assert "Delete" not in html
    assert (await browser.get("/ui/delete?repository=team/app&tag=2"))[0] == 403
    status, _, _ = await browser.post("/ui/delete", {"csrf": csrf_of(html), "repository": "team/app", "tag": "2"})
    assert status == 403 and "2" in images.repos["team/app"]["tags"]
    assert any(e["event"] == "denied" and e.get("via") == "ui" for e in audit_events(tmp_path))


async def test_a_hidden_repositorys_delete_answers_as_missing(web: Callable[[], Browser], images: Images) -> None:
    browser = await logged_in(web, LIMITED)
    csrf = await browser.csrf("/")
    status, _, _ = await browser.post("/ui/delete", {"csrf": csrf, "repository": "secret/db", "tag": "1.0"})
    assert status == 404 and "1.0" in images.repos["secret/db"]["tags"]


async def test_a_forged_delete_without_the_csrf_token_is_refused(web: Callable[[], Browser], images: Images) -> None:
    browser = await logged_in(web, ADMIN)
    for token in ({}, {"csrf": "forged"}):
        status, _, _ = await browser.post("/ui/delete", {**token, "repository": "team/app", "tag": "2"})
        assert status == 403
    assert "2" in images.repos["team/app"]["tags"]


async def test_an_admin_deletes_a_tag_after_confirming(web: Callable[[], Browser], images: Images, tmp_path: Path) -> None:
    browser = await logged_in(web, ADMIN)
    html = (await browser.get("/ui/r/team/app"))[2]
    assert "/ui/delete?repository=team%2Fapp&amp;tag=2" in html
    status, _, confirm = await browser.get("/ui/delete?repository=team/app&tag=2")
    assert status == 200 and "Delete tag 2?" in confirm
    status, headers, _ = await browser.post("/ui/delete", {"csrf": csrf_of(confirm), "repository": "team/app", "tag": "2"})
    assert status == 303 and headers["Location"] == "/ui/r/team/app?deleted=2"
    assert "2" not in images.repos["team/app"]["tags"] and "latest" in images.repos["team/app"]["tags"]
    assert "Tag 2 deleted." in (await browser.get(headers["Location"]))[2]
    assert any(e["event"] == "manifest_deleted" and e.get("via") == "ui" and e["tag"] == "2" for e in audit_events(tmp_path))



async def test_an_immutable_tag_is_not_deleted_from_the_page(web: Callable[[], Browser], images: Images, tmp_path: Path) -> None:
    from mreg_proxy.policy.rules import Policy, make_immutable_rule, write_policy

    write_policy(tmp_path / "policy.yml", Policy(immutable=(make_immutable_rule("team/*", ["2"]),)))
    browser = await logged_in(web, ADMIN)
    confirm = (await browser.get("/ui/delete?repository=team/app&tag=2"))[2]
    status, _, html = await browser.post("/ui/delete", {"csrf": csrf_of(confirm), "repository": "team/app", "tag": "2"})
    assert status == 403 and "immutable" in html
    assert "2" in images.repos["team/app"]["tags"]
    assert any(e["event"] == "immutable_refused" and e.get("via") == "ui" for e in audit_events(tmp_path))

# -- admin views --------------------------------------------------------------------------------


async def test_admin_views_are_for_admins(web: Callable[[], Browser]) -> None:
    browser = await logged_in(web, READER)
    assert (await browser.get("/ui/admin"))[0] == 403
    assert (await browser.get("/ui/audit"))[0] == 403
    assert "/ui/admin" not in (await browser.get("/"))[2]


async def test_the_admin_sees_users_roles_and_grants(web: Callable[[], Browser]) -> None:
    html = (await (await logged_in(web, ADMIN)).get("/ui/admin"))[2]
    assert "amy" in html and "bob" in html and "team/*=pull" in html and "admin" in html


async def test_the_audit_log_filters_by_user_and_time(web: Callable[[], Browser]) -> None:
    await web().login(READER[0], "wrong")
    browser = await logged_in(web, ADMIN)
    html = (await browser.get("/ui/audit?user=bob&since=1h"))[2]
    assert "login_failed" in html and "ui_login" not in html
    assert "ui_login" in (await browser.get("/ui/audit?user=amy"))[2]
    assert "Since: a duration" in (await browser.get("/ui/audit?since=yesterday"))[2]


async def test_without_a_usable_key_the_registry_is_served_without_its_page(registry: TestServer, tmp_path: Path) -> None:
    (tmp_path / "ui-session.key").write_bytes(b"damaged")
    async with site(registry, tmp_path) as web:
        status, _, _ = await web().get("/")
    assert status == 404


async def test_a_registry_that_does_not_answer_gives_a_502_page(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from aiohttp import web as aioweb

    from mreg_proxy.web import registry as reader_module

    async def silent(request: aioweb.Request) -> aioweb.Response:
        await asyncio.sleep(30)
        return aioweb.Response()

    app = aioweb.Application()
    app.router.add_get("/v2/_catalog", silent)
    hanging = await aiohttp_server(app)
    monkeypatch.setattr(reader_module, "READ_TIMEOUT", aiohttp.ClientTimeout(total=0.5))  # the page budget, shortened
    async with site(hanging, tmp_path) as web:
        browser = await logged_in(web, READER)
        status, headers, html = await asyncio.wait_for(browser.get("/"), 10)  # not after the 30 s
    assert status == 502 and "did not answer" in html and headers["X-Frame-Options"] == "DENY"


async def test_newest_first_follows_the_push_times_mreg_recorded(registry: TestServer, images: Images, tmp_path: Path) -> None:
    images.image("time/app", "built-late-pushed-early", config={"created": "2026-06-01T00:00:00Z"})
    images.image("time/app", "built-early-pushed-late", config={"created": "2020-01-01T00:00:00Z"})
    images.image("time/app", "unrecorded", config={"created": "2025-01-01T00:00:00Z"})
    (tmp_path / "audit.log").write_text("".join(
        json.dumps({"time": t, "event": "manifest_pushed", "repository": "time/app", "tag": tag}) + "\n"
        for tag, t in (("built-late-pushed-early", "2026-07-01T00:00:00Z"), ("built-early-pushed-late", "2026-08-01T00:00:00Z"))
    ))
    async with site(registry, tmp_path) as web:
        html = (await (await logged_in(web, READER)).get("/ui/r/time/app"))[2]
    assert re.findall(r'<h2><a href="[^"]+">([^<]+)</a>', html) == ["built-early-pushed-late", "built-late-pushed-early", "unrecorded"]
    assert "2026-08-01T00:00:00Z" in html


async def test_newest_first_follows_the_tag_links_when_the_storage_is_mounted(
    registry: TestServer, images: Images, tmp_path: Path
) -> None:
    """With MREG_REGISTRY_ROOT, push times are the links' modification times (as retention reads
    them), whatever the audit log says; a tag without a link falls back to its creation time."""
    root = tmp_path / "registry"
    pushed = {"pushed-first": 1_780_000_000, "pushed-last": 1_790_000_000}  # 2026-05-28, 2026-09-21
    for tag, moment in pushed.items():
        digest = images.image("time/app", tag, config={"created": "2020-01-01T00:00:00Z"})
        path = root / V2 / "repositories" / "time/app" / "_manifests" / "tags" / tag / "current" / "link"
        path.parent.mkdir(parents=True)
        path.write_text(digest)
        os.utime(path, (moment, moment))
    images.image("time/app", "no-link", config={"created": "2026-06-01T00:00:00Z"})
    (tmp_path / "audit.log").write_text(  # says the opposite: not read when the storage is mounted
        json.dumps({"time": "2026-12-01T00:00:00Z", "event": "manifest_pushed", "repository": "time/app",
                    "tag": "pushed-first"}) + "\n"
    )
    async with site(registry, tmp_path, registry_root=root) as web:
        html = (await (await logged_in(web, READER)).get("/ui/r/time/app"))[2]
    assert re.findall(r'<h2><a href="[^"]+">([^<]+)</a>', html) == ["pushed-last", "no-link", "pushed-first"]
    assert "<dd>2026-09-21T14:13:20Z</dd>" in html and "2026-12-01" not in html


async def test_a_digest_seen_in_a_hidden_repository_does_not_show_under_another(web: Callable[[], Browser], images: Images) -> None:
    secret = images.repos["secret/db"]["tags"]["1.0"]
    admin = await logged_in(web, ADMIN)
    assert (await admin.get(f"/ui/r/secret/db@{secret}"))[0] == 200  # now in the page's cache
    limited = await logged_in(web, LIMITED)
    assert (await limited.get(f"/ui/r/team/app@{secret}"))[0] == 404


async def test_a_deleted_manifest_is_missing_although_its_digest_was_cached(web: Callable[[], Browser], images: Images) -> None:
    digest = images.repos["team/app"]["tags"]["2"]
    browser = await logged_in(web, READER)
    assert (await browser.get(f"/ui/r/team/app@{digest}"))[0] == 200  # now in the page's cache
    del images.repos["team/app"]["tags"]["2"]
    del images.repos["team/app"]["blobs"][digest]  # the registry answers 404, as the API would
    status, _, html = await browser.get(f"/ui/r/team/app@{digest}")
    assert status == 404, html[:300]


async def test_a_newest_first_page_past_its_time_is_listed_by_name(
    web: Callable[[], Browser], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mreg_proxy.web import pages

    monkeypatch.setattr(pages, "NEWEST_SECONDS", 0.0)  # every tag would need resolving: no time for that
    browser = await logged_in(web, READER)
    status, _, html = await browser.get("/ui/r/team/app")
    assert status == 200 and "took too long; they are listed by name" in html
    assert re.findall(r'<h2><a href="[^"]+">([^<]+)</a>', html) == ["1.9", "1.10", "2", "latest"]
    monkeypatch.setattr(pages, "NEWEST_SECONDS", 20.0)
    assert "took too long" not in (await browser.get("/ui/r/team/app"))[2]


async def test_newest_first_pages_wait_for_their_turn_within_their_time(
    registry: TestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mreg_proxy.web import pages

    monkeypatch.setattr(pages, "NEWEST_AT_ONCE", 0)  # as if two slow pages were being built
    monkeypatch.setattr(pages, "NEWEST_SECONDS", 0.5)
    async with site(registry, tmp_path) as web:
        browser = await logged_in(web, READER)
        status, _, html = await browser.get("/ui/r/team/app")
    assert status == 200 and "took too long; they are listed by name" in html


async def test_under_tls_the_cookies_are_secure(registry: TestServer, tmp_path: Path) -> None:
    from proxy_harness import install_tls

    install_tls(tmp_path)
    write_people(tmp_path / "users.yml")
    async with running_proxy(settings_for(registry.make_url(""), tmp_path)) as proxy:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            base = f"https://127.0.0.1:{proxy.port}"
            async with session.get(base + "/", ssl=False) as response:
                login_cookie = response.headers["Set-Cookie"]
                html = await response.text()
            form = {"csrf": csrf_of(html), "username": READER[0], "password": READER[1]}
            async with session.post(base + "/ui/login", data=form, ssl=False, allow_redirects=False) as response:
                session_cookie = next(v for v in response.headers.getall("Set-Cookie") if v.startswith("mreg_session="))
    assert "Secure" in login_cookie and "Secure" in session_cookie and "HttpOnly" in session_cookie
