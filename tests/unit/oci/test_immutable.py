"""Immutable tags through the real proxy, in front of a registry 2.8 look-alike in memory."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from helpers import basic
from memory_registry import OCI_MANIFEST, STATE, digest_of, image, make_registry, store
from proxy_harness import ADMIN, ProxyClient, running_proxy, settings_for
from mreg_proxy.oci import immutable
from mreg_proxy.policy.rules import Policy, make_immutable_rule, write_policy

HEADERS = {**basic(*ADMIN), "Content-Type": OCI_MANIFEST}


@pytest.fixture
async def proxied(
    aiohttp_server: Callable[..., Awaitable[TestServer]], users_file: Path, tmp_path: Path
) -> AsyncIterator[tuple[ProxyClient, web.Application, Path]]:
    server = await aiohttp_server(make_registry())
    write_policy(tmp_path / "policy.yml", Policy(immutable=(make_immutable_rule("ci/**", ["v*"]),)))
    settings = settings_for(server.make_url(""), tmp_path, policy_file=tmp_path / "policy.yml")
    async with running_proxy(settings) as client:
        yield client, server.app, tmp_path


async def error_of(response: object) -> tuple[int, str, str]:
    body = json.loads(await response.read())  # type: ignore[attr-defined]
    return response.status, body["errors"][0]["code"], body["errors"][0]["message"]  # type: ignore[attr-defined]


async def test_an_immutable_tag_takes_its_first_push_and_the_same_digest_again(proxied: tuple) -> None:
    proxy, registry, _ = proxied
    for _ in range(2):  # a CI job that retries
        response = await proxy.put("/v2/ci/app/manifests/v1.0", data=image("a"), headers=HEADERS)
        assert response.status == 201
    assert registry[STATE]["ci/app"].tags["v1.0"] == digest_of(image("a"))


async def test_an_immutable_tag_refuses_another_digest_naming_the_rule(proxied: tuple) -> None:
    proxy, registry, tmp_path = proxied
    first = store(registry, "ci/app", "v1.0", image("a"))
    response = await proxy.put("/v2/ci/app/manifests/v1.0", data=image("b"), headers=HEADERS)
    status, code, message = await error_of(response)
    assert (status, code) == (403, "DENIED")
    assert "immutable ci/** v*" in message and first in message
    assert registry[STATE]["ci/app"].tags["v1.0"] == first  # the registry never saw the push
    events = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert any(e["event"] == "immutable_refused" and e["tag"] == "v1.0" for e in events)


async def test_other_tags_move_freely(proxied: tuple) -> None:
    proxy, registry, _ = proxied
    store(registry, "ci/app", "latest", image("a"))
    response = await proxy.put("/v2/ci/app/manifests/latest", data=image("b"), headers=HEADERS)
    assert response.status == 201


async def test_deleting_an_immutable_tag_is_refused(proxied: tuple) -> None:
    proxy, registry, _ = proxied
    store(registry, "ci/app", "v1.0", image("a"))
    response = await proxy.request("DELETE", "/v2/ci/app/manifests/v1.0", headers=basic(*ADMIN))
    assert (await error_of(response))[:2] == (403, "DENIED")
    assert "v1.0" in registry[STATE]["ci/app"].tags


async def test_a_delete_by_digest_that_would_take_an_immutable_tag_is_refused(proxied: tuple) -> None:
    proxy, registry, _ = proxied
    digest = store(registry, "ci/app", "v1.0", image("a"))
    store(registry, "ci/app", "build-1", image("a"))
    other = store(registry, "ci/app", "build-2", image("c"))
    response = await proxy.request("DELETE", f"/v2/ci/app/manifests/{digest}", headers=basic(*ADMIN))
    status, code, message = await error_of(response)
    assert (status, code) == (403, "DENIED") and "v1.0" in message
    response = await proxy.request("DELETE", f"/v2/ci/app/manifests/{other}", headers=basic(*ADMIN))
    assert response.status == 202


async def test_the_rule_applies_as_soon_as_the_file_changes(proxied: tuple) -> None:
    proxy, registry, tmp_path = proxied
    store(registry, "team/app", "v1", image("a"))
    assert (await proxy.put("/v2/team/app/manifests/v1", data=image("b"), headers=HEADERS)).status == 201
    write_policy(tmp_path / "policy.yml", Policy(immutable=(make_immutable_rule("team/app", ["v1"]),)))
    response = await proxy.put("/v2/team/app/manifests/v1", data=image("c"), headers=HEADERS)
    assert response.status == 403


Hook = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


@pytest.fixture
async def hooked(
    aiohttp_server: Callable[..., Awaitable[TestServer]], users_file: Path, tmp_path: Path
) -> AsyncIterator[tuple[ProxyClient, web.Application, list[Hook]]]:
    """The same proxy, in front of a registry whose requests first go through ``hooks`` (in
    order; the first answer is the registry's): a held push, a failing tag list."""
    hooks: list[Hook] = []

    @web.middleware
    async def run_hooks(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        for hook in hooks:
            if (answer := await hook(request)) is not None:
                return answer
        return await handler(request)

    registry = make_registry()
    registry.middlewares.append(run_hooks)
    server = await aiohttp_server(registry)
    write_policy(tmp_path / "policy.yml", Policy(immutable=(make_immutable_rule("ci/**", ["v*"]),)))
    settings = settings_for(server.make_url(""), tmp_path, policy_file=tmp_path / "policy.yml")
    async with running_proxy(settings) as client:
        yield client, server.app, hooks


def tag_list_of(name: str, answer: Callable[[], web.StreamResponse], asked: list[str]) -> Hook:
    async def hook(request: web.Request) -> web.StreamResponse | None:
        if request.method == "GET" and request.path == f"/v2/{name}/tags/list":
            asked.append(name)
            return answer()
        return None
    return hook


async def test_a_delete_by_digest_checks_immutable_tags_under_the_lock_after_a_push_taking_its_turn(hooked: tuple) -> None:
    proxy, registry, hooks = hooked
    digest = store(registry, "ci/app", "build-1", image("a"))
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hold_push(request: web.Request) -> None:
        if request.method == "PUT" and request.path == "/v2/ci/app/manifests/v1.0":
            arrived.set()
            await asyncio.wait_for(release.wait(), 10)

    hooks.append(hold_push)

    async def push() -> int:
        return (await proxy.put("/v2/ci/app/manifests/v1.0", data=image("a"), headers=HEADERS)).status

    async def delete() -> tuple[int, str, str]:
        return await error_of(await proxy.request("DELETE", f"/v2/ci/app/manifests/{digest}", headers=basic(*ADMIN)))

    pushing = asyncio.create_task(push())
    await asyncio.wait_for(arrived.wait(), 10)  # the first push of v1.0 holds the repository lock
    deleting = asyncio.create_task(delete())
    await asyncio.sleep(0.3)  # the delete reaches the lock (unlocked, its check would run meanwhile)
    release.set()
    assert await asyncio.wait_for(pushing, 10) == 201
    status, code, message = await asyncio.wait_for(deleting, 10)
    assert (status, code) == (403, "DENIED") and "v1.0" in message
    assert registry[STATE]["ci/app"].tags["v1.0"] == digest


@pytest.mark.parametrize("answer, why, retry", [
    (lambda: web.Response(status=500, text="boom"), "answered 500", True),
    (lambda: web.Response(status=200, text="<html>not json</html>"), "not a JSON list", True),
    (lambda: web.json_response({"name": "ci/app", "tags": ["a", "b", "c"]}), "more than the 2 checked", False),
])
async def test_a_delete_by_digest_is_refused_when_the_tags_cannot_be_read_whole(
    hooked: tuple, monkeypatch: pytest.MonkeyPatch, answer: Callable[[], web.StreamResponse], why: str, retry: bool
) -> None:
    proxy, registry, hooks = hooked
    monkeypatch.setattr(immutable, "MAX_TAGS_CHECKED", 2)
    digest = store(registry, "ci/app", "v1.0", image("a"))
    hooks.append(tag_list_of("ci/app", answer, []))
    response = await proxy.request("DELETE", f"/v2/ci/app/manifests/{digest}", headers=basic(*ADMIN))
    status, code, message = await error_of(response)
    assert (status, code) == (503, "UNAVAILABLE") and why in message and "nothing was deleted" in message
    assert ("Retry-After" in response.headers) is retry
    assert digest in registry[STATE]["ci/app"].manifests and registry[STATE]["ci/app"].tags["v1.0"] == digest


async def test_a_delete_by_digest_where_no_immutable_rule_matches_reads_no_tag_list(hooked: tuple) -> None:
    proxy, registry, hooks = hooked
    digest = store(registry, "team/app", "v1.0", image("a"))
    asked: list[str] = []
    hooks.append(tag_list_of("team/app", lambda: web.Response(status=500), asked))
    response = await proxy.request("DELETE", f"/v2/team/app/manifests/{digest}", headers=basic(*ADMIN))
    assert response.status == 202 and asked == []
    assert digest not in registry[STATE]["team/app"].manifests


async def test_a_delete_by_digest_with_the_registry_unreachable_says_when_to_come_back(
    aiohttp_server: Callable[..., Awaitable[TestServer]], users_file: Path, tmp_path: Path
) -> None:
    server = await aiohttp_server(make_registry())
    write_policy(tmp_path / "policy.yml", Policy(immutable=(make_immutable_rule("ci/**", ["v*"]),)))
    settings = settings_for(server.make_url(""), tmp_path, policy_file=tmp_path / "policy.yml")
    async with running_proxy(settings) as proxy:
        await server.close()
        response = await proxy.request("DELETE", f"/v2/ci/app/manifests/{digest_of(image('a'))}", headers=basic(*ADMIN))
        assert (await error_of(response))[:2] == (503, "UNAVAILABLE")
        assert response.headers["Retry-After"] == "5"
