"""Immutable tags through the real proxy, in front of a registry 2.8 look-alike in memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from helpers import basic
from memory_registry import OCI_MANIFEST, STATE, digest_of, image, make_registry, store
from proxy_harness import ADMIN, ProxyClient, running_proxy, settings_for
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
