"""Garbage collection without downtime: the proxy pauses writes, asks the collector loop of the
registry container's real start command (taken from mreg.yml, with a stand-in ``registry``
binary), pulls keep working, and the pause is lifted whatever the collector answers."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from helpers import basic
from memory_registry import OCI_MANIFEST, STATE, image, make_registry, store
from proxy_harness import ADMIN, READER, ProxyClient, running_proxy, settings_for
from mreg_proxy.oci.writepause import CONTROL_REPOSITORY

MANIFEST = Path(__file__).resolve().parents[3] / "mreg.yml"
FAKE_REGISTRY = """#!/bin/sh
case "$1" in
  serve) exec sleep 600 ;;
  garbage-collect) echo "run" >> "$FAKE_RUNS"; echo "marking manifests"; sleep "$FAKE_SECONDS"; exit "$(cat "$FAKE_STATUS")" ;;
esac
exit 2
"""


def start_command() -> str:
    for doc in yaml.safe_load_all(MANIFEST.read_text()):
        if doc and doc.get("kind") == "Deployment":
            (registry,) = [c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == "registry"]
            return str(registry["command"][-1])
    raise AssertionError("no Deployment in mreg.yml")


def runs(tmp_path: Path) -> int:
    try:
        return len((tmp_path / "runs").read_text().splitlines())
    except FileNotFoundError:
        return 0


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Path]:
    """The registry container's start command, with ``registry`` a stand-in; yields the gc folder."""
    bin_dir, gc_dir, data = tmp_path / "bin", tmp_path / "gc", tmp_path / "data"
    for folder in (bin_dir, gc_dir, data):
        folder.mkdir()
    (bin_dir / "registry").write_text(FAKE_REGISTRY)
    (bin_dir / "registry").chmod(0o755)
    (tmp_path / "status").write_text("0")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "MREG_GC_DIR": str(gc_dir), "FAKE_RUNS": str(tmp_path / "runs"),
           "FAKE_SECONDS": "2", "FAKE_STATUS": str(tmp_path / "status")}
    script = start_command().replace("/var/lib/mreg-registry", str(data))
    process = subprocess.Popen(["/bin/sh", "-c", script], env=env)
    try:
        deadline = time.monotonic() + 10
        while runs(tmp_path) < 1 and time.monotonic() < deadline:  # the collection at start
            time.sleep(0.05)
        assert runs(tmp_path) == 1
        yield gc_dir
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=10) is not None  # the trap stops the registry, the loop ends
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
async def proxied(
    aiohttp_server: Callable[..., Awaitable[TestServer]], users_file: Path, tmp_path: Path, collector: Path
) -> AsyncIterator[tuple[ProxyClient, web.Application]]:
    server = await aiohttp_server(make_registry())
    store(server.app, "ci/app", "v1", image("a"))
    async with running_proxy(settings_for(server.make_url(""), tmp_path, gc_dir=collector)) as client:
        yield client, server.app


async def test_writes_pause_while_the_collector_runs_and_pulls_keep_working(proxied: tuple, tmp_path: Path) -> None:
    proxy, registry = proxied
    collecting = asyncio.ensure_future(proxy.post("/mreg/gc", data=b'{"min_age": 0}', headers=basic(*ADMIN)))
    await asyncio.sleep(1.0)  # within the drain and the collector's 2 s
    pushed = await proxy.put("/v2/ci/app/manifests/v2", data=image("b"),
                             headers={**basic(*ADMIN), "Content-Type": OCI_MANIFEST})
    assert pushed.status == 503 and int(pushed.headers["Retry-After"]) >= 1
    pulled = await proxy.get("/v2/ci/app/manifests/v1", headers=basic(*READER))
    assert pulled.status == 200
    response = await asyncio.wait_for(collecting, 30)
    result = json.loads(await response.read())
    assert response.status == 200 and result["status"] == 0 and "marking manifests" in result["output"]
    assert result["paused_seconds"] >= result["collector_seconds"] >= 2
    assert runs(tmp_path) == 2
    pushed = await proxy.put("/v2/ci/app/manifests/v2", data=image("b"),
                             headers={**basic(*ADMIN), "Content-Type": OCI_MANIFEST})
    assert pushed.status == 201
    assert CONTROL_REPOSITORY not in registry[STATE] or not registry[STATE][CONTROL_REPOSITORY].tags
    events = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [e["by"] for e in events if e["event"] == "garbage_collected"] == ["amy"]


async def test_a_failed_collection_is_reported_and_writes_resume(proxied: tuple, tmp_path: Path) -> None:
    proxy, _ = proxied
    (tmp_path / "status").write_text("1")
    response = await proxy.post("/mreg/gc", headers=basic(*ADMIN))
    body = json.loads(await response.read())
    assert response.status == 503 and "exited 1" in body["errors"][0]["message"]
    pushed = await proxy.put("/v2/ci/app/manifests/v3", data=image("c"),
                             headers={**basic(*ADMIN), "Content-Type": OCI_MANIFEST})
    assert pushed.status == 201


async def test_only_admins_collect(proxied: tuple) -> None:
    proxy, _ = proxied
    assert (await proxy.post("/mreg/gc", headers=basic(*READER))).status == 403
    assert (await proxy.post("/mreg/gc", data=b'{"min_age": -1}', headers=basic(*ADMIN))).status == 400


async def test_without_a_collector_the_answer_says_what_to_set(
    aiohttp_server: Callable[..., Awaitable[TestServer]], users_file: Path, tmp_path: Path
) -> None:
    server = await aiohttp_server(make_registry())
    async with running_proxy(settings_for(server.make_url(""), tmp_path)) as proxy:
        response = await proxy.post("/mreg/gc", headers=basic(*ADMIN))
        assert response.status == 503 and "MREG_GC_DIR" in (await response.text())


async def test_a_scheduled_run_deletes_then_collects(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path, collector: Path
) -> None:
    import aiohttp

    from mreg_proxy.auth.audit import AuditLog
    from mreg_proxy.oci.collect import Maintenance
    from mreg_proxy.oci.retention_runs import Registry
    from mreg_proxy.oci.schedule import run_once
    from mreg_proxy.oci.tagdelete import RepositoryLocks
    from mreg_proxy.oci.writepause import WritePause
    from mreg_proxy.policy.pulls import PullTimes
    from mreg_proxy.policy.rules import Policy, PolicyStore, make_retention_rule, write_policy
    from test_retention_runs import push

    server = await aiohttp_server(make_registry())
    root = tmp_path / "storage"
    push(server.app, root, "ci/app", "old", "a", 7200)
    push(server.app, root, "ci/app", "new", "b", 60)
    write_policy(tmp_path / "policy.yml", Policy(retention=(make_retention_rule("ci/*", keep_last=1),)))
    upstream = server.make_url("")
    async with aiohttp.ClientSession() as session:
        maintenance = Maintenance(
            Registry(session, upstream, root, PullTimes(tmp_path / "pulls.json")), WritePause(upstream, 1.0),
            RepositoryLocks(), AuditLog(str(tmp_path / "audit.log"), 1 << 20), collector, drain=0.1, timeout=30,
        )
        await run_once(maintenance, PolicyStore(tmp_path / "policy.yml"))
    assert set(server.app[STATE]["ci/app"].tags) == {"new"}
    assert runs(tmp_path) == 2  # the collection at start, then the scheduled one


def failing_marker_deletes(app: web.Application, failures: int) -> list[int]:
    """The first ``failures`` deletes of the write pause marker answer 500; returns the answers given."""
    answers: list[int] = []

    @web.middleware
    async def flaky(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.method == "DELETE" and request.path.startswith(f"/v2/{CONTROL_REPOSITORY}/manifests/"):
            if len(answers) < failures:
                answers.append(500)
                return web.Response(status=500)
            answers.append(202)
        return await handler(request)

    app.middlewares.append(flaky)
    return answers


async def collect_with(aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path, collector: Path,
                       failures: int) -> tuple[web.Application, list[int], object]:
    import aiohttp

    from mreg_proxy.auth.audit import AuditLog
    from mreg_proxy.oci.collect import Maintenance
    from mreg_proxy.oci.retention_runs import Registry
    from mreg_proxy.oci.tagdelete import RepositoryLocks
    from mreg_proxy.oci.writepause import WritePause
    from mreg_proxy.policy.pulls import PullTimes

    app = make_registry()
    answers = failing_marker_deletes(app, failures)
    server = await aiohttp_server(app)
    upstream = server.make_url("")
    pause = WritePause(upstream, 3600.0)
    async with aiohttp.ClientSession() as session:
        maintenance = Maintenance(
            Registry(session, upstream, None, PullTimes(tmp_path / "pulls.json")), pause,
            RepositoryLocks(), AuditLog(str(tmp_path / "audit.log"), 1 << 20), collector, drain=0.1, timeout=30,
        )
        result = await maintenance.collect("test")
        assert await pause.remaining(session) == 0.0  # this replica lifted the pause it remembered
    return app, answers, result


async def test_a_marker_delete_that_fails_for_a_moment_is_retried(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path, collector: Path
) -> None:
    app, answers, result = await collect_with(aiohttp_server, tmp_path, collector, failures=2)
    assert answers == [500, 500, 202] and result.status == 0
    assert not app[STATE][CONTROL_REPOSITORY].tags


async def test_a_marker_that_cannot_be_deleted_is_logged_with_the_pause_left(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path, collector: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, answers, result = await collect_with(aiohttp_server, tmp_path, collector, failures=99)
    assert answers == [500] * 4 and result.status == 0  # the collection's own outcome, not the marker's
    assert app[STATE][CONTROL_REPOSITORY].tags
    (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "could not be removed" in error and "writes stay paused for" in error
