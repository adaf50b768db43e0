"""The referrers handlers when the registry fails them: the real proxy, a fake registry that
stores manifests but refuses or breaks the steps under test."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from helpers import basic
from proxy_harness import ADMIN, READER, ProxyClient, running_proxy, settings_for
from mreg_proxy.spec.referrers_index import INDEX, MAX_MANIFEST

SUBJECT = "sha256:" + "ab" * 32
INDEX_TAG = "sha256-" + "ab" * 32
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX_ANSWER = web.AppKey("index_answer", int)  # the fake's answer to reads (500) and writes of the index
SEEN = web.AppKey("seen", list)

REFERRER = json.dumps({
    "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x.sig",
    "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:" + "4" * 64, "size": 2},
    "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": SUBJECT, "size": 9},
}).encode()


async def manifests(request: web.Request) -> web.Response:
    reference = request.match_info["reference"]
    request.app[SEEN].append((request.method, reference))
    if request.method == "PUT":
        body = await request.read()
        if reference == INDEX_TAG:
            return web.Response(status=request.app[INDEX_ANSWER], text='{"errors":[{"code":"UNKNOWN"}]}')
        return web.Response(status=201, headers={"Docker-Content-Digest": "sha256:" + hashlib.sha256(body).hexdigest()})
    if reference == INDEX_TAG and request.app[INDEX_ANSWER] == 500:  # a registry failing all along
        return web.Response(status=500, text='{"errors":[{"code":"UNKNOWN"}]}')
    return web.Response(status=404, text='{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')


def fake_registry(index_answer: int) -> web.Application:
    app = web.Application()
    app[INDEX_ANSWER] = index_answer
    app[SEEN] = []
    app.router.add_route("*", "/v2/team/app/manifests/{reference}", manifests)
    return app


@pytest.fixture
async def failing(
    aiohttp_server: Callable[..., Awaitable[TestServer]], users_file: Path, tmp_path: Path
) -> AsyncIterator[tuple[ProxyClient, web.Application]]:
    """The proxy in front of a registry that refuses every write of the referrers index."""
    server = await aiohttp_server(fake_registry(500))
    async with running_proxy(settings_for(server.make_url(""), tmp_path)) as client:
        yield client, server.app


async def test_a_referrer_whose_index_cannot_be_written_is_stored_without_oci_subject(
    failing: tuple[ProxyClient, web.Application], caplog: pytest.LogCaptureFixture
) -> None:
    proxy, registry = failing
    digest = "sha256:" + hashlib.sha256(REFERRER).hexdigest()
    with caplog.at_level(logging.WARNING, logger="mreg.referrers"):
        response = await proxy.put(f"/v2/team/app/manifests/{digest}", data=REFERRER,
                                   headers={**basic(*ADMIN), "Content-Type": OCI_MANIFEST})
    assert response.status == 201
    assert "OCI-Subject" not in response.headers  # the client keeps its fallback tag itself
    assert [r.getMessage() for r in caplog.records if "not updated" in r.getMessage()] != []
    assert ("PUT", INDEX_TAG) not in registry[SEEN]  # the index could not even be read


async def test_referrers_when_the_registry_fails_pass_its_answer_on(failing: tuple[ProxyClient, web.Application]) -> None:
    proxy, _ = failing
    response = await proxy.get(f"/v2/team/app/referrers/{SUBJECT}", headers=basic(*READER))
    assert response.status == 500


async def test_referrers_of_an_unknown_digest_are_an_empty_index(
    aiohttp_server: Callable[..., Awaitable[TestServer]], users_file: Path, tmp_path: Path
) -> None:
    server = await aiohttp_server(fake_registry(201))
    async with running_proxy(settings_for(server.make_url(""), tmp_path)) as proxy:
        response = await proxy.get(f"/v2/team/app/referrers/{SUBJECT}?artifactType=x", headers=basic(*READER))
        assert (response.status, response.headers["Content-Type"], response.headers["OCI-Filters-Applied"]) == (200, INDEX, "artifactType")
        assert await response.json(content_type=None) == {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}


async def test_a_manifest_beyond_the_cap_never_reaches_the_registry(
    failing: tuple[ProxyClient, web.Application]
) -> None:
    proxy, registry = failing

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the cap must hold while reading
        for _ in range(MAX_MANIFEST // 65536 + 2):
            yield b" " * 65536

    response = await proxy.put("/v2/team/app/manifests/v1", data=chunked(),
                               headers={**basic(*ADMIN), "Content-Type": OCI_MANIFEST})
    assert response.status == 413
    assert registry[SEEN] == []


# --- another replica on the same bucket writing the index from a stale read ---

STORED = web.AppKey("stored", dict)  # reference -> (media type, bytes), what the fake registry holds
STALE = web.AppKey("stale", list)  # index documents "another replica" writes, one after each proxy write
THEIRS = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "cd" * 32, "size": 7}


async def storing(request: web.Request) -> web.Response:
    reference = request.match_info["reference"]
    stored = request.app[STORED]
    if request.method == "PUT":
        body = await request.read()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        stored[reference] = stored[digest] = (request.headers["Content-Type"], body)
        if reference == INDEX_TAG and request.app[STALE]:
            # the other replica read the index before this write and its own write lands now
            stored[INDEX_TAG] = (INDEX, json.dumps(request.app[STALE].pop(0)).encode())
        return web.Response(status=201, headers={"Docker-Content-Digest": digest})
    if request.method == "DELETE":
        return web.Response(status=202) if stored.pop(reference, None) else web.Response(status=404)
    if reference not in stored:
        return web.Response(status=404, text='{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
    media_type, body = stored[reference]
    return web.Response(body=body if request.method == "GET" else None, content_type=media_type)


@pytest.fixture
async def shared(
    aiohttp_server: Callable[..., Awaitable[TestServer]], users_file: Path, tmp_path: Path
) -> AsyncIterator[tuple[ProxyClient, web.Application]]:
    app = web.Application()
    app[STORED], app[STALE] = {}, []
    app.router.add_route("*", "/v2/team/app/manifests/{reference}", storing)
    server = await aiohttp_server(app)
    async with running_proxy(settings_for(server.make_url(""), tmp_path, shared_storage=True)) as client:
        yield client, server.app


def stored_index(registry: web.Application) -> list[str]:
    return [e["digest"] for e in json.loads(registry[STORED][INDEX_TAG][1])["manifests"]]


def index_of(*entries: dict) -> dict:
    return {"schemaVersion": 2, "mediaType": INDEX, "manifests": list(entries)}


async def test_an_entry_another_replica_wrote_over_is_merged_again(
    shared: tuple[ProxyClient, web.Application], caplog: pytest.LogCaptureFixture
) -> None:
    proxy, registry = shared
    registry[STALE].append(index_of(THEIRS))
    digest = "sha256:" + hashlib.sha256(REFERRER).hexdigest()
    with caplog.at_level(logging.WARNING, logger="mreg.referrers"):
        response = await proxy.put(f"/v2/team/app/manifests/{digest}", data=REFERRER,
                                   headers={**basic(*ADMIN), "Content-Type": OCI_MANIFEST})
    assert (response.status, response.headers.get("OCI-Subject")) == (201, SUBJECT)
    assert stored_index(registry) == [THEIRS["digest"], digest]
    assert any("overwritten by another replica" in r.getMessage() for r in caplog.records)


async def test_a_deleted_entry_another_replica_wrote_back_is_dropped_again(
    shared: tuple[ProxyClient, web.Application]
) -> None:
    proxy, registry = shared
    digest = "sha256:" + hashlib.sha256(REFERRER).hexdigest()
    response = await proxy.put(f"/v2/team/app/manifests/{digest}", data=REFERRER,
                               headers={**basic(*ADMIN), "Content-Type": OCI_MANIFEST})
    assert response.status == 201
    ours = json.loads(registry[STORED][INDEX_TAG][1])["manifests"][0]
    registry[STALE].append(index_of(THEIRS, ours))  # their write still lists the deleted referrer
    response = await proxy.request("DELETE", f"/v2/team/app/manifests/{digest}", headers=basic(*ADMIN))
    assert response.status == 202
    assert stored_index(registry) == [THEIRS["digest"]]


async def test_a_replica_that_keeps_writing_over_the_index_gets_no_oci_subject(
    shared: tuple[ProxyClient, web.Application]
) -> None:
    proxy, registry = shared
    registry[STALE].extend([index_of(THEIRS)] * 10)
    digest = "sha256:" + hashlib.sha256(REFERRER).hexdigest()
    response = await proxy.put(f"/v2/team/app/manifests/{digest}", data=REFERRER,
                               headers={**basic(*ADMIN), "Content-Type": OCI_MANIFEST})
    assert response.status == 201
    assert "OCI-Subject" not in response.headers
    assert len(registry[STALE]) == 10 - 3  # three writes (REPAIRS = 2), then it gives up


async def test_one_proxy_writes_the_index_once_without_reading_it_back(
    aiohttp_server: Callable[..., Awaitable[TestServer]], users_file: Path, tmp_path: Path
) -> None:
    """Without shared storage the repository lock orders every write: no wait, no read-back (a
    stale index left by a replica is then not noticed, which is the point of the setting)."""
    app = web.Application()
    app[STORED], app[STALE] = {}, [index_of(THEIRS)]
    app.router.add_route("*", "/v2/team/app/manifests/{reference}", storing)
    server = await aiohttp_server(app)
    async with running_proxy(settings_for(server.make_url(""), tmp_path)) as proxy:
        digest = "sha256:" + hashlib.sha256(REFERRER).hexdigest()
        response = await proxy.put(f"/v2/team/app/manifests/{digest}", data=REFERRER,
                                   headers={**basic(*ADMIN), "Content-Type": OCI_MANIFEST})
    assert (response.status, response.headers.get("OCI-Subject")) == (201, SUBJECT)
    assert stored_index(app) == [THEIRS["digest"]]  # the replica's overwrite stands: nobody looked
