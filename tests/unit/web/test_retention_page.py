"""The web page's retention dry run of a repository, through the real proxy in front of an
in-memory registry, push times from tag links in a storage folder (as MREG_REGISTRY_ROOT)."""

from __future__ import annotations

import contextlib
import dataclasses
import html as htmllib
import json
import os
import re
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp.test_utils import TestServer

from fake_images import Images, STORE, make_app
from helpers import basic, make_user, write_users
from mreg_proxy.auth.grants import Grant, Level
from mreg_proxy.policy.rules import Policy, make_immutable_rule, make_retention_rule, write_policy
from mreg_proxy.storage.tree import V2
from proxy_harness import running_proxy, settings_for
from test_pages import ADMIN, READER, Browser, browsers, logged_in

DELETER = ("dora", "dora-pw")  # role none: delete on ci/app only
HOUR = 3600.0


def link(root: Path, name: str, tag: str, digest: str, age: float) -> None:
    """The tag's link in the registry's storage, as if pushed ``age`` seconds ago."""
    path = root / V2 / "repositories" / name / "_manifests" / "tags" / tag / "current" / "link"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(digest)
    moment = time.time() - age
    os.utime(path, (moment, moment))


def push(images: Images, root: Path, name: str, tag: str, age: float) -> None:
    link(root, name, tag, images.image(name, tag, config={"config": {"Labels": {"tag": tag}}}), age)


@dataclasses.dataclass
class Site:
    browser: Callable[[], Browser]
    images: Images
    registry: TestServer
    root: Path
    port: int


@contextlib.asynccontextmanager
async def site(aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path, builds: int = 8) -> AsyncIterator[Site]:
    images, root = Images(), tmp_path / "registry"
    for i in range(1, builds + 1):  # build-N is the newest
        push(images, root, "ci/app", f"build-{i}", (builds + 1 - i) * HOUR)
    push(images, root, "ci/app", "v1.0", 99 * HOUR)
    push(images, root, "ci/web", "build-1", 99 * HOUR)
    push(images, root, "team/app", "old", 99 * HOUR)
    deleter = dataclasses.replace(make_user(*DELETER, role="none"), grants=(Grant("ci/app", Level.DELETE),))
    write_users(tmp_path / "users.yml", make_user(*ADMIN, role="admin"), make_user(*READER), deleter)
    write_policy(tmp_path / "policy.yml", Policy(
        retention=(make_retention_rule("ci/*", keep_last=3),),
        immutable=(make_immutable_rule("ci/app", ["v*"]),),
    ))
    registry = await aiohttp_server(make_app(images))
    settings = settings_for(registry.make_url(""), tmp_path, registry_root=root)
    async with running_proxy(settings) as proxy, browsers(proxy.port) as browser:
        yield Site(browser, images, registry, root, proxy.port)


def shown_lines(html: str) -> list[str]:
    match = re.search(r'<pre class="retention">\n(.*?)</pre>', html, re.S)
    return htmllib.unescape(match[1]).splitlines() if match else []


async def engine_dry_run(port: int, who: tuple[str, str], repository: str) -> dict[str, Any]:
    """What ``mreg-manage retention HOST/REPO --dry-run`` prints: the API's dry run."""
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{port}/mreg/retention", headers=basic(*who),
            data=json.dumps({"repository": repository, "dry_run": True}).encode(),
        ) as response:
            assert response.status == 200
            return await response.json()


async def test_a_reader_sees_no_link_and_gets_the_missing_page(aiohttp_server: Any, tmp_path: Path) -> None:
    async with site(aiohttp_server, tmp_path) as s:
        reader = await logged_in(s.browser, READER)
        status, _, page = await reader.get("/ui/r/ci/app")
        assert status == 200 and "build-8" in page and "/ui/retention/" not in page
        refused = await reader.get("/ui/retention/ci/app")
        absent = await reader.get("/ui/r/no/such")
        assert refused[0] == absent[0] == 404 and refused[2] == absent[2]
        assert (await reader.get("/ui/retention/no/such"))[2] == absent[2]


async def test_a_delete_grant_user_sees_the_plan_of_that_repository_only(aiohttp_server: Any, tmp_path: Path) -> None:
    async with site(aiohttp_server, tmp_path) as s:
        dora = await logged_in(s.browser, DELETER)
        page = (await dora.get("/ui/r/ci/app"))[2]
        assert '<a href="/ui/retention/ci/app">Retention (dry run)</a>' in page
        status, headers, page = await dora.get("/ui/retention/ci/app")
        assert status == 200 and headers["Cache-Control"] == "no-store"
        assert "ci/*: keep-last 3" in page and "5 tags would go" in page
        assert [text.split()[0] for text in shown_lines(page)] == [f"ci/app:build-{i}" for i in range(1, 6)]
        assert "ci/app:v1.0 (kept: immutable ci/app v*)" in page  # older than build-1, yet kept
        assert len(s.images.repos["ci/app"]["tags"]) == 9  # a dry run: nothing deleted
        assert not [r for r in s.registry.app[STORE]["requests"] if r[0] not in ("GET", "HEAD")]
        # pull only elsewhere: ci/web is not hers to see at all
        assert (await dora.get("/ui/retention/ci/web"))[0] == 404


async def test_the_page_shows_exactly_the_engines_dry_run(aiohttp_server: Any, tmp_path: Path) -> None:
    async with site(aiohttp_server, tmp_path) as s:
        page = (await (await logged_in(s.browser, DELETER)).get("/ui/retention/ci/app"))[2]
        expected = await engine_dry_run(s.port, DELETER, "ci/app")
        assert expected["lines"] and shown_lines(page) == expected["lines"]
        assert f"({expected['freed_bytes']} bytes) freed once collected" in page


async def test_an_admin_sees_no_rule_where_none_applies(aiohttp_server: Any, tmp_path: Path) -> None:
    async with site(aiohttp_server, tmp_path) as s:
        admin = await logged_in(s.browser, ADMIN)
        assert "/ui/retention/team/app" in (await admin.get("/ui/r/team/app"))[2]
        status, _, page = await admin.get("/ui/retention/team/app")
        assert status == 200 and "no rule: never touched" in page and shown_lines(page) == []


async def test_a_long_plan_is_bounded_with_a_count_of_the_rest(aiohttp_server: Any, tmp_path: Path) -> None:
    async with site(aiohttp_server, tmp_path, builds=260) as s:
        status, _, page = await (await logged_in(s.browser, ADMIN)).get("/ui/retention/ci/app")
        assert status == 200 and len(page.encode()) < 100_000
        assert "257 tags would go" in page and len(shown_lines(page)) == 200 and "and 57 more." in page


async def test_a_registry_failure_is_a_502_page(aiohttp_server: Any, tmp_path: Path) -> None:
    async with site(aiohttp_server, tmp_path) as s:
        admin = await logged_in(s.browser, ADMIN)
        s.images.repos["ci/app"]["tags"]["build-1"] = "sha256:" + "0" * 64  # the registry answers 404: gone
        status, _, page = await admin.get("/ui/retention/ci/app")
        assert status == 200 and "ci/app:build-1 " not in page  # deleted meanwhile: not planned
        await s.registry.close()
        status, headers, page = await admin.get("/ui/retention/ci/app")
        assert status == 502 and headers["X-Frame-Options"] == "DENY"
