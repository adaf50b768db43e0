"""Garbage collection with two replicas on one bucket: the shared write pause, then GC.

The operator's sequence (docs/s3.md): pause writes on every replica through any one of them, run
``registry garbage-collect`` on the bucket, lift the pause through any one of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.ceph import Ceph
from bench.services import registry_env
from helpers import require_tool
from imagegen import layout_blobs, layout_digest, make_oci_index_layout, make_oci_layout
from live import ADMIN, READER, error_code, http, run
from registry_calls import digest_of, push_tiny
from s3live import Replica, bucket_env, operator_env, replicas_on
from test_manage import manage
from test_s3_replicas import WAIT, skopeo_pull, skopeo_push

pytestmark = pytest.mark.integration

MB = 1 << 20


def pause(replica: Replica, seconds: float) -> dict[str, object]:
    status, _, body = http("POST", f"{replica.url}/mreg/write-pause", auth=ADMIN,
                           data=json.dumps({"seconds": seconds}).encode(), headers={"Content-Type": "application/json"})
    assert status == 200, body
    return json.loads(body)


def start_upload(replica: Replica) -> tuple[int, dict[str, str], bytes]:
    return http("POST", f"{replica.url}/v2/team/after/blobs/uploads/", auth=ADMIN)


def wait_for_upload_status(replica: Replica, status: int) -> tuple[int, dict[str, str], bytes]:
    deadline = time.monotonic() + WAIT
    while True:
        answer = start_upload(replica)
        if answer[0] == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def copy_all(source: str, destination: str, side: str, who: tuple[str, str]) -> None:
    """skopeo copy --all: a multi-arch image with every platform; ``side`` is --src or --dest."""
    skopeo = require_tool("skopeo")
    copied = run([skopeo, "copy", "--all", f"{side}-tls-verify=false", f"{side}-creds", ":".join(who), source, destination])
    assert copied.returncode == 0, copied.stderr


def blob_status(replica: Replica, repo: str, digest: str) -> int:
    return http("HEAD", f"{replica.url}/v2/{repo}/blobs/{digest}", auth=READER)[0]


def test_pause_refuses_writes_on_both_replicas_and_gc_keeps_every_tagged_image(ceph: Ceph, tmp_path: Path) -> None:
    registry = require_tool("docker-registry", "registry")
    with replicas_on(ceph, tmp_path, "collected") as group:
        a, b = group.a, group.b
        kept, gone, multi = tmp_path / "kept", tmp_path / "gone", tmp_path / "multi"
        make_oci_layout(kept, [2 * MB, 1000], seed=60)
        make_oci_layout(gone, [2 * MB, 1001], seed=61)
        make_oci_index_layout(multi, ["linux/amd64", "linux/arm64"])
        assert skopeo_push(kept, a, "team/kept:1").returncode == 0
        assert skopeo_push(gone, a, "team/gone:1").returncode == 0
        copy_all(f"oci:{multi}:latest", f"docker://{a.host}/team/multi:1", "--dest", ADMIN)
        # the image to reclaim: deleted by digest through the other replica (its only tag goes too)
        status, _, body = http("DELETE", f"{b.url}/v2/team/gone/manifests/{layout_digest(gone)}", auth=ADMIN)
        assert status == 202, body
        # its layers and config (the manifest itself went with the delete)
        gone_blobs = {f"sha256:{hex}" for hex in layout_blobs(gone) - layout_blobs(kept)} - {layout_digest(gone)}
        assert all(blob_status(a, "team/gone", d) == 200 for d in gone_blobs)

        env = operator_env(tmp_path, a, b)
        paused = manage("--plain-http", "pause", a.host, "600", env=env)
        assert paused.returncode == 0, paused.stderr
        assert "paused on every replica" in paused.stdout
        for replica in (a, b):  # b sees the pause through the bucket, within its poll interval
            status, headers, body = wait_for_upload_status(replica, 503)
            assert status == 503, body
            assert error_code(body) == "UNAVAILABLE"
            assert 1 <= int(headers["Retry-After"]) <= 60
            status, _, body = http("DELETE", f"{replica.url}/v2/team/kept/manifests/1", auth=ADMIN)
            assert status == 503, body
            assert digest_of(replica, "team/kept", "1") == layout_digest(kept)  # pulls keep working
        state_b = json.loads(http("GET", f"{b.url}/mreg/write-pause", auth=ADMIN)[2])
        assert state_b["paused"] is True and 0 < state_b["remaining_seconds"] <= 600

        gc = subprocess.run([registry, "garbage-collect", str(a.workdir / "registry.yml")],
                            capture_output=True, text=True, timeout=300, env=registry_env())
        assert gc.returncode == 0, gc.stdout + gc.stderr

        resumed = manage("--plain-http", "resume", b.host, env=env)
        assert resumed.returncode == 0, resumed.stderr
        for replica in (a, b):
            status, _, body = wait_for_upload_status(replica, 202)
            assert status == 202, body

        assert all(blob_status(b, "team/gone", d) == 404 for d in gone_blobs), "GC left the deleted image's blobs"
        out = tmp_path / "kept-out"
        assert skopeo_pull(b, "team/kept:1", out).returncode == 0
        assert layout_blobs(out) == layout_blobs(kept)
        copy_all(f"docker://{b.host}/team/multi:1", f"oci:{tmp_path / 'multi-out'}:latest", "--src", READER)
        assert layout_digest(tmp_path / "multi-out") == layout_digest(multi)
        assert layout_blobs(tmp_path / "multi-out") == layout_blobs(multi)


def test_pause_expires_on_its_own(ceph: Ceph, tmp_path: Path) -> None:
    """A GC job that dies with the pause on does not leave the registry read-only."""
    with replicas_on(ceph, tmp_path, "expiry") as group:
        pause(group.a, 1)
        assert wait_for_upload_status(group.b, 503)[0] == 503
        assert wait_for_upload_status(group.b, 202)[0] == 202
        push_tiny(group.a, "team/after", ["1"])


def test_clients_cannot_write_the_pause_marker(replicas) -> None:  # noqa: ANN001
    for method in ("POST", "DELETE"):
        path = "blobs/uploads/" if method == "POST" else "manifests/active"
        status, _, body = http(method, f"{replicas.a.url}/v2/mreg-internal/write-pause/{path}", auth=ADMIN)
        assert status == 403 and error_code(body) == "DENIED", body


def test_only_admins_pause(replicas) -> None:  # noqa: ANN001
    status, _, _ = http("POST", f"{replicas.a.url}/mreg/write-pause", auth=READER, data=b'{"seconds": 5}')
    assert status == 403
    status, _, _ = http("POST", f"{replicas.a.url}/mreg/write-pause", data=b'{"seconds": 5}')
    assert status == 401


def test_prune_on_the_bucket_lets_gc_reclaim_an_overwritten_image(ceph: Ceph, tmp_path: Path) -> None:
    """prune reads and edits the bucket as it does a folder: the image a newer push replaced goes,
    the platform manifests of a multi-arch image (untagged themselves) stay."""
    registry = require_tool("docker-registry", "registry")
    with replicas_on(ceph, tmp_path, "pruned") as group:
        a, b = group.a, group.b
        old, new, multi = tmp_path / "old", tmp_path / "new", tmp_path / "multi"
        make_oci_layout(old, [1 * MB, 1002], seed=70)
        make_oci_layout(new, [1 * MB, 1003], seed=71)
        make_oci_index_layout(multi, ["linux/amd64", "linux/arm64"])
        assert skopeo_push(old, a, "team/app:1").returncode == 0
        assert skopeo_push(new, b, "team/app:1").returncode == 0  # the old image is untagged now
        copy_all(f"oci:{multi}:latest", f"docker://{a.host}/team/multi:1", "--dest", ADMIN)

        env = operator_env(tmp_path, a, b)
        assert manage("--plain-http", "pause", a.host, "600", env=env).returncode == 0
        pruned = subprocess.run([sys.executable, "-m", "mreg_proxy.storage.prune", "--s3", "--min-age", "0"],
                                env=bucket_env(group.s3), capture_output=True, text=True, timeout=120)
        assert pruned.returncode == 0, pruned.stderr
        assert f"team/app@{layout_digest(old)}" in pruned.stderr
        assert "1 untagged manifest(s) forgotten" in pruned.stderr, pruned.stderr
        gc = subprocess.run([registry, "garbage-collect", str(a.workdir / "registry.yml")],
                            capture_output=True, text=True, timeout=300, env=registry_env())
        assert gc.returncode == 0, gc.stdout + gc.stderr
        assert manage("--plain-http", "resume", b.host, env=env).returncode == 0

        old_only = {f"sha256:{hex}" for hex in layout_blobs(old) - layout_blobs(new)} - {layout_digest(old)}
        assert old_only and all(blob_status(b, "team/app", d) == 404 for d in old_only)
        assert digest_of(a, "team/app", "1") == layout_digest(new)
        out = tmp_path / "multi-out"
        copy_all(f"docker://{b.host}/team/multi:1", f"oci:{out}:latest", "--src", READER)
        assert layout_blobs(out) == layout_blobs(multi)
