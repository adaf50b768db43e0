"""Retention runs through the real proxy (POST /mreg/retention), in front of a registry 2.8
look-alike in memory, push times from link files in a storage folder, pull times from the proxy."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from helpers import basic, make_user, write_users
from memory_registry import STATE, image, make_registry, store
from proxy_harness import ADMIN, READER, ProxyClient, running_proxy, settings_for
from mreg_proxy.auth.grants import Grant, Level
from mreg_proxy.auth.audit import AuditLog
from mreg_proxy.oci.retention_runs import Registry, RetentionError, run_retention
from mreg_proxy.oci.tagdelete import RepositoryLocks
from mreg_proxy.policy.pulls import PullTimes
from mreg_proxy.policy.rules import Policy, make_immutable_rule, make_retention_rule, write_policy
from mreg_proxy.spec.referrers_index import MAX_MANIFEST
from mreg_proxy.storage.tree import V2

DAY = 86400.0
DELETER = ("dora", "dora-pw")


def push(registry: web.Application, root: Path, name: str, tag: str, seed: str, age: float) -> str:
    """A tag as if pushed ``age`` seconds ago: in the fake registry, and its link in the storage."""
    digest = store(registry, name, tag, image(seed))
    link = root / V2 / "repositories" / name / "_manifests" / "tags" / tag / "current" / "link"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.write_text(digest)
    moment = time.time() - age
    os.utime(link, (moment, moment))
    return digest


@pytest.fixture
async def setup(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> AsyncIterator[tuple[ProxyClient, web.Application, Path]]:
    deleter = dataclasses.replace(make_user(*DELETER, role="none"), grants=(Grant("ci/app", Level.DELETE),))
    write_users(tmp_path / "users.yml", make_user(*ADMIN, role="admin"), make_user(*READER), deleter)
    server = await aiohttp_server(make_registry())
    root = tmp_path / "registry"
    for i in range(1, 31):
        push(server.app, root, "ci/app", f"build-{i}", f"b{i}", (31 - i) * 3600)
    push(server.app, root, "ci/app", "v1.0", "release", 40 * DAY)
    push(server.app, root, "ci/app", "latest", "b30", 60)
    for i in range(1, 8):  # build-1 is the newest
        push(server.app, root, "ci/web", f"build-{i}", f"w{i}", i * DAY)
    push(server.app, root, "team/app", "old", "t", 99 * DAY)
    write_policy(tmp_path / "policy.yml", Policy(
        retention=(make_retention_rule("ci/*", keep_last=5, keep_tags=["v*", "latest"]),),
        immutable=(make_immutable_rule("ci/web", ["build-7"]),),
    ))
    settings = settings_for(server.make_url(""), tmp_path, policy_file=tmp_path / "policy.yml", registry_root=root)
    async with running_proxy(settings) as client:
        yield client, server.app, tmp_path


async def run(proxy: ProxyClient, user: tuple[str, str], **body: object) -> tuple[int, dict]:
    response = await proxy.post("/mreg/retention", data=json.dumps(body).encode(), headers=basic(*user))
    return response.status, json.loads(await response.read())


async def test_the_dry_run_lists_exactly_what_the_real_run_deletes(setup: tuple) -> None:
    proxy, registry, tmp_path = setup
    status, dry = await run(proxy, ADMIN, dry_run=True)
    assert status == 200 and dry["deleted"] == 0
    assert len(registry[STATE]["ci/app"].tags) == 32  # nothing deleted
    listed = [text.split()[0] for text in dry["lines"]]
    # ci/app: latest, build-30..27 are the last 5 pushed; v1.0 matches v*; ci/web: build-7 is immutable
    expected = sorted(f"ci/app:build-{i}" for i in range(1, 27)) + ["ci/web:build-6"]
    assert sorted(listed) == sorted(expected)
    assert all("rule ci/*: not among the last 5 pushed" in text for text in dry["lines"])
    assert dry["freed_bytes"] > 26 * 1000
    status, real = await run(proxy, ADMIN, dry_run=False)
    assert status == 200 and real["lines"] == dry["lines"] and real["deleted"] == len(expected)
    remaining = {f"{name}:{tag}" for name, repo in registry[STATE].items() for tag in repo.tags}
    assert remaining.isdisjoint(listed)
    assert {"ci/app:v1.0", "ci/app:latest", "ci/app:build-30", "ci/web:build-7", "team/app:old"} <= remaining
    events = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert sorted(f"{e['repository']}:{e['tag']}" for e in events if e["event"] == "retention_deleted") == sorted(listed)
    _, again = await run(proxy, ADMIN, dry_run=True)
    assert again["lines"] == []


async def test_one_repository_and_a_user_with_delete_grants_only(setup: tuple) -> None:
    proxy, registry, _ = setup
    status, body = await run(proxy, DELETER, dry_run=True)
    assert status == 200 and {text.split(":")[0] for text in body["lines"]} == {"ci/app"}
    assert (await run(proxy, DELETER, repository="ci/web", dry_run=True))[0] == 403
    assert (await run(proxy, READER, dry_run=True))[0] == 403
    status, body = await run(proxy, ADMIN, repository="ci/web", dry_run=False)
    assert body["deleted"] == 1 and len(registry[STATE]["ci/app"].tags) == 32


async def test_a_pull_through_the_proxy_keeps_an_image(setup: tuple, tmp_path: Path) -> None:
    proxy, registry, _ = setup
    write_policy(tmp_path / "policy.yml", Policy(retention=(make_retention_rule("ci/*", keep_last=5, pulled_within="1d"),)))
    response = await proxy.get("/v2/ci/app/manifests/build-2", headers=basic(*READER))
    assert response.status == 200
    _, body = await run(proxy, ADMIN, repository="ci/app", dry_run=True)
    listed = {text.split()[0] for text in body["lines"]}
    assert "ci/app:build-1" in listed and "ci/app:build-2" not in listed
    assert "never pulled, not within 1d" in body["lines"][0]


async def test_a_rule_emptying_a_repository_is_left_alone_unless_allowed(setup: tuple, tmp_path: Path) -> None:
    proxy, registry, _ = setup
    write_policy(tmp_path / "policy.yml", Policy(retention=(make_retention_rule("team/*", keep_tags=["v*"]),)))
    _, body = await run(proxy, ADMIN, dry_run=False)
    assert body["deleted"] == 0 and "would delete all 1 tags" in body["left_alone"][0]
    _, body = await run(proxy, ADMIN, dry_run=False, allow_empty=True)
    assert body["deleted"] == 1 and not registry[STATE]["team/app"].tags


@pytest.mark.parametrize("body", [b"[]", b'{"dry_run": "yes"}', b'{"repository": "Bad"}', b'{"x": 1}', b"{"])
async def test_bad_requests_are_refused(setup: tuple, body: bytes) -> None:
    proxy, _, _ = setup
    response = await proxy.post("/mreg/retention", data=body, headers=basic(*ADMIN))
    assert response.status == 400


async def dribbling_registry(aiohttp_server: Callable[..., Awaitable[TestServer]], body: bytes) -> TestServer:
    """A registry whose tag list arrives in small pieces, slowly: more than one read's buffer."""
    async def tags_list(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for start in range(0, len(body), 64 << 10):
            await response.write(body[start:start + (64 << 10)])
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/v2/ci/app/tags/list", tags_list)
    return await aiohttp_server(app)


async def test_a_long_tag_list_is_read_whole(aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path) -> None:
    tags = [f"build-{i:06d}" for i in range(30_000)]  # ~420 KB
    server = await dribbling_registry(aiohttp_server, json.dumps({"name": "ci/app", "tags": tags}).encode())
    async with aiohttp.ClientSession() as session:
        registry = Registry(session, server.make_url(""), None, PullTimes(tmp_path / "pulls.json"))
        assert await registry.tags("ci/app") == tags


@pytest.mark.parametrize("body, message", [
    (b"[" + b" " * MAX_MANIFEST + b"]", "over"), (b'{"tags": [', "not a JSON object"),
], ids=["too-large", "cut-short"])
async def test_a_bad_tag_list_is_a_retention_error(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path, body: bytes, message: str
) -> None:
    server = await dribbling_registry(aiohttp_server, body)
    async with aiohttp.ClientSession() as session:
        registry = Registry(session, server.make_url(""), None, PullTimes(tmp_path / "pulls.json"))
        with pytest.raises(RetentionError, match=message):
            await registry.tags("ci/app")


async def test_a_tag_pushed_again_while_its_delete_waits_for_the_lock_stays(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> None:
    server = await aiohttp_server(make_registry())
    root = tmp_path / "registry"
    push(server.app, root, "ci/app", "old", "a", 7200)
    push(server.app, root, "ci/app", "new", "b", 60)
    locks = RepositoryLocks()
    lock = locks("ci/app")
    async with aiohttp.ClientSession() as session:
        registry = Registry(session, server.make_url(""), root, PullTimes(tmp_path / "pulls.json"))
        async with lock:  # a push of ci/app through the proxy holds it (put_manifest)
            running = asyncio.create_task(run_retention(
                registry, Policy(retention=(make_retention_rule("ci/*", keep_last=1),)), lambda name: True,
                repository="ci/app", dry_run=False, locks=locks, audit=AuditLog(str(tmp_path / "audit.log"), 1 << 20),
                by="test",
            ))
            for _ in range(1000):  # until the delete waits for the lock (asyncio.Lock has no public count)
                if running.done() or lock._waiters:
                    break
                await asyncio.sleep(0.01)
            assert lock._waiters and not running.done()
            pushed = store(server.app, "ci/app", "old", image("pushed again"))
        report = await asyncio.wait_for(running, 30)
    assert [f"{d.repository}:{d.tag}" for d in report.moved] == ["ci/app:old"] and not report.deleted
    assert server.app[STATE]["ci/app"].tags["old"] == pushed
