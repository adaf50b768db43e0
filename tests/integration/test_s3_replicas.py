"""Two mreg replicas on one S3 bucket (a real Ceph radosgw): what one does, the other sees."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.ceph import Ceph
from helpers import make_user, require_tool
from imagegen import layout_blobs, layout_digest, make_oci_layout
from live import ADMIN, READER, http, run
from registry_calls import digest_of, push_tiny, tag_list
from s3live import USERS, Replica, Replicas, operator_env, replicas_on
from test_manage import manage

pytestmark = pytest.mark.integration

MB = 1 << 20
WAIT = 30.0  # bound on every wait for something the other replica should see


def skopeo_push(layout: Path, replica: Replica, ref: str) -> subprocess.CompletedProcess[str]:
    skopeo = require_tool("skopeo")
    return run([skopeo, "copy", "--dest-tls-verify=false", "--dest-creds", ":".join(ADMIN),
                f"oci:{layout}:latest", f"docker://{replica.host}/{ref}"])


def skopeo_pull(replica: Replica, ref: str, out: Path) -> subprocess.CompletedProcess[str]:
    skopeo = require_tool("skopeo")
    return run([skopeo, "copy", "--src-tls-verify=false", "--src-creds", ":".join(READER),
                f"docker://{replica.host}/{ref}", f"oci:{out}:latest"])


def test_skopeo_push_through_one_pull_through_the_other(replicas: Replicas, tmp_path: Path) -> None:
    layout = tmp_path / "img"
    make_oci_layout(layout, [6 * MB, 1 * MB + 3], seed=31)
    pushed = skopeo_push(layout, replicas.a, "team/skopeo:1")
    assert pushed.returncode == 0, pushed.stderr
    pulled = skopeo_pull(replicas.b, "team/skopeo:1", tmp_path / "out")
    assert pulled.returncode == 0, pulled.stderr
    assert layout_digest(tmp_path / "out") == layout_digest(layout)
    assert layout_blobs(tmp_path / "out") == layout_blobs(layout)


def test_podman_push_through_one_pull_through_the_other(replicas: Replicas, tmp_path: Path) -> None:
    podman = require_tool("podman")
    layout = tmp_path / "img"
    make_oci_layout(layout, [2 * MB], seed=32)
    auth = tmp_path / "auth.json"
    for replica, who in ((replicas.a, ADMIN), (replicas.b, READER)):
        login = run([podman, "login", "--tls-verify=false", "--authfile", str(auth), "-u", who[0],
                     "--password-stdin", replica.host], input=who[1] + "\n")
        assert login.returncode == 0, login.stderr
    # a private image store: nothing touches the machine's own podman storage (the run root's
    # path is limited to 50 characters)
    runroot = Path(tempfile.mkdtemp(prefix="mreg-pm-", dir="/tmp"))
    base = [podman, "--root", str(tmp_path / "root"), "--runroot", str(runroot), "--storage-driver", "vfs"]
    try:
        _podman_round_trip(base, replicas, layout, auth, tmp_path)
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


def _podman_round_trip(base: list[str], replicas: Replicas, layout: Path, auth: Path, tmp_path: Path) -> None:

    def podman_run(*args: str) -> str:
        result = run([*base, *args])
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    podman_run("pull", f"oci:{layout}:latest")
    image = podman_run("images", "-q", "--no-trunc")
    podman_run("push", "--authfile", str(auth), "--tls-verify=false", "--digestfile", str(tmp_path / "digest"),
               image.splitlines()[0], f"docker://{replicas.a.host}/team/podman:1")
    pushed = (tmp_path / "digest").read_text().strip()
    podman_run("pull", "--authfile", str(auth), "--tls-verify=false", f"{replicas.b.host}/team/podman:1")
    repo_digests = podman_run("image", "inspect", "--format", "{{.RepoDigests}}", f"{replicas.b.host}/team/podman:1")
    assert pushed == digest_of(replicas.b, "team/podman", "1")
    assert f"{replicas.b.host}/team/podman@{pushed}" in repo_digests


def test_tag_delete_on_one_is_seen_by_the_other(replicas: Replicas) -> None:
    digest = push_tiny(replicas.a, "team/tags", ["keep", "drop"])
    assert digest_of(replicas.b, "team/tags", "drop") == digest
    status, _, body = http("DELETE", f"{replicas.a.url}/v2/team/tags/manifests/drop", auth=ADMIN)
    assert status == 202, body
    assert digest_of(replicas.b, "team/tags", "drop") is None
    assert tag_list(replicas.b, "team/tags") == ["keep"]
    assert digest_of(replicas.b, "team/tags", "keep") == digest


def test_concurrent_pushes_on_both_to_one_repository_and_to_different_ones(replicas: Replicas, tmp_path: Path) -> None:
    layouts = []
    for index in range(4):
        layout = tmp_path / f"img{index}"
        make_oci_layout(layout, [3 * MB, 64 * 1024 + index], seed=40 + index)
        layouts.append(layout)
    jobs = [  # (layout, replica, reference): two on each replica into team/same, one each elsewhere
        (layouts[0], replicas.a, "team/same:a"), (layouts[1], replicas.b, "team/same:b"),
        (layouts[2], replicas.a, "team/only-a:1"), (layouts[3], replicas.b, "team/only-b:1"),
    ]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: skopeo_push(*job), jobs))
    for result in results:
        assert result.returncode == 0, result.stderr
    for index, (layout, replica, ref) in enumerate(jobs):
        other = replicas.b if replica is replicas.a else replicas.a
        repo, _, tag = ref.partition(":")
        assert digest_of(other, repo, tag) == layout_digest(layout)
        pulled = skopeo_pull(other, ref, tmp_path / f"out{index}")
        assert pulled.returncode == 0, pulled.stderr
        assert layout_blobs(tmp_path / f"out{index}") == layout_blobs(layout)
    assert tag_list(replicas.a, "team/same") == ["a", "b"]


def test_upload_started_on_one_is_finished_on_the_other(replicas: Replicas) -> None:
    first, second = os.urandom(MB), os.urandom(MB // 2)
    digest = "sha256:" + hashlib.sha256(first + second).hexdigest()
    status, headers, _ = http("POST", f"{replicas.a.url}/v2/team/moving/blobs/uploads/", auth=ADMIN)
    assert status == 202
    location = headers["Location"]
    chunk = {"Content-Type": "application/octet-stream"}
    status, headers, body = http("PATCH", location, auth=ADMIN, data=first, headers=chunk)
    assert status == 202, body
    # the rest goes to the other replica: same path and _state, another host
    path = headers["Location"].split(replicas.a.host, 1)[1]
    status, headers, body = http("PATCH", replicas.b.url + path, auth=ADMIN, data=second, headers=chunk)
    assert status == 202, body
    path = headers["Location"].split(replicas.b.host, 1)[1]
    status, _, body = http("PUT", f"{replicas.b.url}{path}&digest={digest}", auth=ADMIN, data=b"", headers=chunk)
    assert status == 201, body
    status, _, body = http("GET", f"{replicas.a.url}/v2/team/moving/blobs/{digest}", auth=READER)
    assert status == 200 and body == first + second


def test_user_added_once_applies_on_both(replicas: Replicas) -> None:
    newcomer = ("newcomer", "newcomer-Secret3")
    url = "/v2/"
    for replica in replicas.members:
        assert http("GET", replica.url + url, auth=newcomer)[0] == 401
    replicas.set_users([*USERS, make_user(*newcomer)])
    try:
        deadline = time.monotonic() + WAIT
        waiting = set(range(len(replicas.members)))
        while waiting and time.monotonic() < deadline:
            waiting = {i for i in waiting if http("GET", replicas.members[i].url + url, auth=newcomer)[0] != 200}
            time.sleep(0.1)
        assert not waiting, f"replicas {waiting} never accepted the new user"
    finally:
        replicas.set_users(list(USERS))


def _wait_for_line(log: Path, fragment: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT
    while fragment not in log.read_text(errors="replace"):
        assert process.poll() is None, "the push ended before the replica could be killed"
        assert time.monotonic() < deadline, f"{fragment!r} never appeared in {log}"
        time.sleep(0.05)


def test_one_replica_killed_mid_push_while_the_other_serves(ceph: Ceph, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    with replicas_on(ceph, tmp_path, "killed") as group:
        served = tmp_path / "served"
        make_oci_layout(served, [1 * MB], seed=50)
        assert skopeo_push(served, group.a, "team/served:1").returncode == 0
        big = tmp_path / "big"
        make_oci_layout(big, [1 * MB, 48 * MB, 48 * MB], seed=51)
        push = subprocess.Popen(
            [skopeo, "copy", "--dest-tls-verify=false", "--dest-creds", ":".join(ADMIN),
             f"oci:{big}:latest", f"docker://{group.a.host}/team/big:1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            # one layer is in: the push is under way
            _wait_for_line(group.a.workdir / "proxy.log", "PUT /v2/team/big/blobs/uploads/", push)
            for process in (group.a.proxy.process, group.a.registry.process):
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            _, stderr = push.communicate(timeout=120)
            assert push.returncode != 0, "the push survived its replica"
        finally:
            if push.poll() is None:
                push.kill()
                push.communicate()
        assert skopeo_pull(group.b, "team/served:1", tmp_path / "out").returncode == 0
        assert layout_digest(tmp_path / "out") == layout_digest(served)
        retried = skopeo_push(big, group.b, "team/big:1")
        assert retried.returncode == 0, retried.stderr
        assert digest_of(group.b, "team/big", "1") == layout_digest(big)


def test_mreg_manage_lists_and_removes_across_replicas(replicas: Replicas, tmp_path: Path) -> None:
    env = operator_env(tmp_path, replicas.a, replicas.b)
    digest = push_tiny(replicas.a, "team/managed", ["keep", "drop"], seed="managed")
    listed = manage("--plain-http", "ls", f"{replicas.b.host}/team/managed", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "keep" in listed.stdout and "drop" in listed.stdout and digest in listed.stdout
    removed = manage("--plain-http", "rm", f"{replicas.b.host}/team/managed:drop", env=env)
    assert removed.returncode == 0, removed.stderr
    assert tag_list(replicas.a, "team/managed") == ["keep"]
