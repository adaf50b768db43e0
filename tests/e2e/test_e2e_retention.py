"""End to end: retention rules, immutable tags and garbage collection without downtime, in the
real pod (mreg.yml played with podman), as an operator runs them.

A CI-like repository gets 30 tags pushed one after the other plus ``v1.0`` and ``latest``
(pushed first); the rule keeps the last 5, ``v*`` and ``latest``. The dry run lists exactly what
the real run deletes; ``mreg-manage gc`` frees the space (disk use of the registry volume before
and after) while a loop of pulls runs throughout without one failed request, a push during the
collection gets 503 with Retry-After and succeeds after it; a multi-arch index and a signed image
(a referrer) in another repository are intact; an immutable tag refuses a different digest.

One ordered flow, like test_e2e_deploy.py (a failed step skips the later ones); the pod is this
module's own. Run it only under the shared lock: flock /tmp/mreg-heavy.lock.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import REGISTRY, REPO, Cmd, Pod, http

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

ADMIN, ADMIN_PW = "ops", "ops-pass:with colon"
CI_REPO = "e2e/ci"
KEEP_REPO = "e2e/kept"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = f"{OCI_MANIFEST}, {OCI_INDEX}"
LAYER_BYTES = 1 << 20  # each CI image holds 1 MiB of its own: what a collection frees is visible


@dataclass
class State:
    ci_digests: dict[str, str] = field(default_factory=dict)  # tag -> digest
    kept: dict[str, str] = field(default_factory=dict)  # reference in KEEP_REPO -> digest
    dry_lines: list[str] = field(default_factory=list)
    freed_before: int = 0


@pytest.fixture(scope="module")
def state() -> State:
    return State()


def url(pod: Pod, path: str) -> str:
    return f"{pod.scheme}://{REGISTRY}{path}"


def api(pod: Pod, path: str, *, method: str = "GET", data: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return http(url(pod, path), method=method, auth=(ADMIN, ADMIN_PW), data=data, verify=False,
                headers={"Accept": ACCEPT, **(headers or {})})


def upload(pod: Pod, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers, _ = api(pod, f"/v2/{repo}/blobs/uploads/", method="POST")
    assert status == 202
    location = urllib.parse.urlsplit(headers["Location"])
    status, _, body = api(pod, f"{location.path}?{location.query}&digest={digest}", method="PUT", data=data,
                          headers={"Content-Type": "application/octet-stream"})
    assert status == 201, body
    return digest


def image_doc(pod: Pod, repo: str, seed: str, size: int = 4096, subject: dict | None = None) -> dict:
    layer = (seed.encode() * (size // len(seed) + 1))[:size]
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": upload(pod, repo, config),
                      "size": len(config)},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": upload(pod, repo, layer),
                       "size": len(layer)}]}
    if subject:
        doc["subject"] = subject
        doc["artifactType"] = "application/vnd.example.signature.v1"
    return doc


def put_manifest(pod: Pod, repo: str, reference: str, doc: dict) -> tuple[int, dict[str, str], bytes]:
    return api(pod, f"/v2/{repo}/manifests/{reference}", method="PUT", data=json.dumps(doc).encode(),
               headers={"Content-Type": doc["mediaType"]})


def push(pod: Pod, repo: str, tag: str, seed: str, size: int = 4096) -> str:
    status, headers, body = put_manifest(pod, repo, tag, image_doc(pod, repo, seed, size))
    assert status == 201, body
    return headers["Docker-Content-Digest"]


def mreg_manage(cmd: Cmd, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return cmd.run([sys.executable, str(REPO / "bin" / "mreg-manage"), *args, "--user", ADMIN, "--password-stdin",
                    "--plain-http"], input=ADMIN_PW, check=check, timeout=900)


def disk_use(pod: Pod) -> int:
    """Bytes under the registry volume's blobs folder, as du counts them."""
    (claim,) = [v for v in pod.volumes if "registry" in v]
    blobs = pod.volume_path(claim) / "docker" / "registry" / "v2" / "blobs"
    return int(subprocess.run(["du", "-sb", str(blobs)], capture_output=True, text=True, check=True,
                              timeout=120).stdout.split()[0])


def test_01_an_admin_and_the_policy_set_with_podman_exec(pod: Pod) -> None:
    assert pod.scheme == "http"  # no TLS installed: mreg-manage talks --plain-http
    pod.exec("manage-user", "add", ADMIN, "--role", "admin", input=ADMIN_PW + "\n")
    pod.exec("manage-policy", "retain", "e2e/ci", "--keep-last", "5", "--keep-tag", "v*", "--keep-tag", "latest")
    pod.exec("manage-policy", "immutable", "e2e/**", "v*")
    listing = pod.exec("manage-policy", "ls").stdout.splitlines()
    assert listing == ["retain e2e/ci --keep-last 5 --keep-tag v* --keep-tag latest", "immutable e2e/** v*"]


def test_02_ci_pushes_30_tags_over_time_plus_v1_and_latest(pod: Pod, state: State) -> None:
    state.ci_digests["v1.0"] = push(pod, CI_REPO, "v1.0", "release 1.0", LAYER_BYTES)
    state.ci_digests["latest"] = push(pod, CI_REPO, "latest", "latest build", LAYER_BYTES)
    for i in range(1, 31):
        state.ci_digests[f"build-{i}"] = push(pod, CI_REPO, f"build-{i}", f"ci build {i} ", LAYER_BYTES)
        time.sleep(0.05)  # distinct push times (the tag links' mtimes)


def test_03_a_multi_arch_index_and_a_signed_image_elsewhere(pod: Pod, state: State) -> None:
    platforms = []
    for arch in ("amd64", "arm64"):
        doc = image_doc(pod, KEEP_REPO, f"platform {arch}")
        body = json.dumps(doc).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        assert put_manifest(pod, KEEP_REPO, digest, doc)[0] == 201
        platforms.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body),
                          "platform": {"architecture": arch, "os": "linux"}})
        state.kept[arch] = digest
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": platforms}
    status, headers, _ = put_manifest(pod, KEEP_REPO, "multi", index)
    assert status == 201
    state.kept["multi"] = headers["Docker-Content-Digest"]
    state.kept["signed"] = push(pod, KEEP_REPO, "signed", "a signed image")
    signature = image_doc(pod, KEEP_REPO, "signature", subject={"mediaType": OCI_MANIFEST, "digest": state.kept["signed"],
                                                                "size": 1})
    body = json.dumps(signature).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    status, headers, _ = put_manifest(pod, KEEP_REPO, digest, signature)
    assert status == 201 and headers.get("OCI-Subject") == state.kept["signed"]
    state.kept["signature"] = digest


def test_04_the_dry_run_lists_what_would_go_and_deletes_nothing(pod: Pod, cmd: Cmd, state: State) -> None:
    result = mreg_manage(cmd, "retention", REGISTRY, "--dry-run")
    state.dry_lines = result.stdout.splitlines()
    listed = [line.split()[0] for line in state.dry_lines]
    assert sorted(listed) == sorted(f"{CI_REPO}:build-{i}" for i in range(1, 26)), result.stdout
    assert all("rule e2e/ci: not among the last 5 pushed" in line and "bytes freed once collected" in line
               for line in state.dry_lines)
    assert "25 tags would go" in result.stderr
    status, _, body = api(pod, f"/v2/{CI_REPO}/tags/list")
    assert status == 200 and len(json.loads(body)["tags"]) == 32


def test_05_the_real_run_deletes_exactly_what_the_dry_run_listed(pod: Pod, cmd: Cmd, state: State) -> None:
    result = mreg_manage(cmd, "retention", REGISTRY)
    assert result.stdout.splitlines() == state.dry_lines
    status, _, body = api(pod, f"/v2/{CI_REPO}/tags/list")
    remaining = set(json.loads(body)["tags"])
    assert remaining == {"v1.0", "latest", *(f"build-{i}" for i in range(26, 31))}
    events = [json.loads(line) for line in pod.exec("cat", "/auth/audit.log").stdout.splitlines()]
    deleted = sorted(f"{e['repository']}:{e['tag']}" for e in events if e["event"] == "retention_deleted")
    assert deleted == sorted(line.split()[0] for line in state.dry_lines)


def test_06_gc_frees_the_space_while_pulls_never_fail_and_a_push_waits(pod: Pod, cmd: Cmd, state: State) -> None:
    before = disk_use(pod)
    failures: list[str] = []
    pulls = [0]
    stop = threading.Event()

    def pull_loop() -> None:
        digest = state.ci_digests["build-30"]
        doc_bytes = b"{}"
        for _ in range(100_000):  # bounded; stopped by the event long before
            if stop.is_set():
                return
            for path in (f"/v2/{CI_REPO}/manifests/latest", f"/v2/{KEEP_REPO}/manifests/multi",
                         f"/v2/{CI_REPO}/manifests/{digest}"):
                try:
                    status, _, doc_bytes = api(pod, path)
                except OSError as exc:
                    failures.append(f"{path}: {exc}")
                    continue
                if status != 200:
                    failures.append(f"{path}: {status}")
            doc = json.loads(doc_bytes or b"{}")
            layer = doc.get("layers", [{}])[0].get("digest")
            if layer:
                status, _, _ = api(pod, f"/v2/{CI_REPO}/blobs/{layer}")
                if status != 200:
                    failures.append(f"blob {layer}: {status}")
            pulls[0] += 1

    puller = threading.Thread(target=pull_loop, daemon=True)
    puller.start()
    collecting = threading.Thread(target=lambda: state.__setattr__(
        "gc_result", mreg_manage(cmd, "gc", REGISTRY, "--min-age", "0", check=False)), daemon=True)
    time.sleep(1.0)
    collecting.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, _, body = api(pod, "/mreg/write-pause")
        if status == 200 and json.loads(body)["paused"]:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("writes never paused")
    status, headers, body = put_manifest(pod, KEEP_REPO, "during-gc", {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                                                       "config": {}, "layers": []})
    assert status == 503 and int(headers["Retry-After"]) >= 1, body
    collecting.join(timeout=900)
    stop.set()
    puller.join(timeout=60)
    result = state.gc_result  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stderr
    assert "garbage collected" in result.stdout
    after = disk_use(pod)
    print(f"registry blobs: {before} bytes before, {after} after; {pulls[0]} pull rounds during gc; {result.stdout}")
    assert failures == [] and pulls[0] > 0
    assert before - after >= 25 * LAYER_BYTES, (before, after)
    assert push(pod, KEEP_REPO, "after-gc", "pushed after gc")


def test_07_multi_arch_signed_and_kept_images_are_intact(pod: Pod, state: State) -> None:
    for reference, digest in state.kept.items():
        status, headers, body = api(pod, f"/v2/{KEEP_REPO}/manifests/{digest}")
        assert status == 200 and headers["Docker-Content-Digest"] == digest, reference
        doc = json.loads(body)
        for blob in [doc.get("config"), *doc.get("layers", [])]:
            if blob:
                assert api(pod, f"/v2/{KEEP_REPO}/blobs/{blob['digest']}")[0] == 200, (reference, blob)
    status, _, body = api(pod, f"/v2/{KEEP_REPO}/referrers/{state.kept['signed']}")
    assert status == 200 and [m["digest"] for m in json.loads(body)["manifests"]] == [state.kept["signature"]]
    for tag in ("v1.0", "latest", "build-26", "build-30"):
        status, _, body = api(pod, f"/v2/{CI_REPO}/manifests/{tag}")
        assert status == 200
        layer = json.loads(body)["layers"][0]["digest"]
        assert api(pod, f"/v2/{CI_REPO}/blobs/{layer}")[0] == 200, tag
    gone = state.ci_digests["build-1"]
    assert api(pod, f"/v2/{CI_REPO}/manifests/{gone}")[0] == 404


def test_08_an_immutable_tag_refuses_a_different_digest(pod: Pod, state: State) -> None:
    status, _, body = put_manifest(pod, CI_REPO, "v1.0", image_doc(pod, CI_REPO, "another release"))
    answer = json.loads(body)["errors"][0]
    assert (status, answer["code"]) == (403, "DENIED") and "immutable e2e/** v*" in answer["message"]
    status, _, doc = api(pod, f"/v2/{CI_REPO}/manifests/v1.0")
    assert api(pod, f"/v2/{CI_REPO}/manifests/v1.0", method="PUT", data=doc,
               headers={"Content-Type": OCI_MANIFEST})[0] == 201  # the same digest again: a CI retry
    assert api(pod, f"/v2/{CI_REPO}/manifests/v1.0", method="DELETE")[0] == 403
