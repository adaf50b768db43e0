"""Retention and garbage collection against the real registry, started by mreg.yml's own start
command (its collector loop, its storage settings over the stock config), behind the real proxy.

The space of the deleted tags comes back, the kept images (a multi-arch index, a signed image)
stay whole, and a push after the collection that needs a collected blob uploads it again: the
registry's blob descriptor cache is off, else it would still call the collected blob present.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from pathlib import Path
from typing import Iterator

import pytest

from bench.retention import start_pod_registry
from bench.services import Service, start_proxy, stop
from helpers import make_user, require_tool
from live import ADMIN, READER, http

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
LAYER = 256 * 1024


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Path]]:
    work = tmp_path_factory.mktemp("pod")
    root, gc_dir, auth = work / "data", work / "gc", work / "auth"
    for folder in (root, gc_dir, auth):
        folder.mkdir()
    (auth / "policy.yml").write_text("retention:\n  ci/app: {keep_last: 2}\nimmutable:\n  '**': ['v*']\n")
    registry = start_pod_registry(require_tool("docker-registry", "registry"), work, root, gc_dir)
    try:
        users = {u.name: u for u in (make_user(*ADMIN, role="admin"), make_user(*READER))}
        proxy = start_proxy(registry.url, auth, users, {
            "MREG_POLICY_FILE": str(auth / "policy.yml"), "MREG_REGISTRY_ROOT": str(root), "MREG_GC_DIR": str(gc_dir)})
        try:
            yield proxy, root
        finally:
            stop(proxy.process)
    finally:
        stop(registry.process)


def upload(base: str, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers, _ = http("POST", f"{base}/v2/{repo}/blobs/uploads/", auth=ADMIN)
    assert status == 202
    location = urllib.parse.urlsplit(headers["Location"])
    status, _, body = http("PUT", f"{base}{location.path}?{location.query}&digest={digest}", auth=ADMIN, data=data,
                           headers={"Content-Type": "application/octet-stream"})
    assert status == 201, body
    return digest


def image(base: str, repo: str, seed: str, subject: str | None = None) -> dict:
    layer = hashlib.sha256(seed.encode()).digest() * (LAYER // 32)
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    doc: dict = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                 "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                            "digest": upload(base, repo, config), "size": len(config)},
                 "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                             "digest": upload(base, repo, layer), "size": len(layer)}]}
    if subject:
        doc["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1}
    return doc


def put(base: str, repo: str, reference: str, doc: dict) -> str:
    status, headers, body = http("PUT", f"{base}/v2/{repo}/manifests/{reference}", auth=ADMIN,
                                 data=json.dumps(doc).encode(), headers={"Content-Type": doc["mediaType"]})
    assert status == 201, body
    return headers["Docker-Content-Digest"]


def blob_file(root: Path, digest: str) -> Path:
    hexa = digest.removeprefix("sha256:")
    return root / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexa[:2] / hexa / "data"


def test_retention_then_gc_frees_the_deleted_and_keeps_the_rest(pod: tuple[Service, Path]) -> None:
    proxy, root = pod
    base = proxy.url
    layers = {}
    put(base, "ci/app", "v1.0", image(base, "ci/app", "release"))  # first: the last 2 pushed are build-4, build-5
    for i in range(1, 6):
        doc = image(base, "ci/app", f"build {i}")
        put(base, "ci/app", f"build-{i}", doc)
        layers[i] = doc["layers"][0]["digest"]
    children = []
    for arch in ("amd64", "arm64"):
        doc = image(base, "kept/multi", f"platform {arch}")
        body = json.dumps(doc).encode()
        children.append({"mediaType": OCI_MANIFEST, "digest": put(base, "kept/multi", "sha256:" + hashlib.sha256(body).hexdigest(), doc),
                         "size": len(body), "platform": {"architecture": arch, "os": "linux"}})
    index = put(base, "kept/multi", "1", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
    signed = put(base, "kept/multi", "signed", image(base, "kept/multi", "signed"))
    signature_doc = image(base, "kept/multi", "signature", subject=signed)
    signature = put(base, "kept/multi", "sha256:" + hashlib.sha256(json.dumps(signature_doc).encode()).hexdigest(), signature_doc)

    status, _, body = http("POST", f"{base}/mreg/retention", auth=ADMIN, data=b'{"dry_run": true}')
    dry = json.loads(body)
    assert status == 200 and [line.split()[0] for line in dry["lines"]] == ["ci/app:build-1", "ci/app:build-2", "ci/app:build-3"]
    status, _, body = http("POST", f"{base}/mreg/retention", auth=ADMIN, data=b'{"dry_run": false}')
    real = json.loads(body)
    assert real["lines"] == dry["lines"] and real["deleted"] == 3

    status, _, body = http("POST", f"{base}/mreg/gc", auth=ADMIN, data=b'{"min_age": 0}')
    result = json.loads(body)
    assert status == 200 and result["status"] == 0, body
    assert result["forgotten_manifests"] >= 3
    for i in (1, 2, 3):
        assert not blob_file(root, layers[i]).exists(), f"build-{i}'s layer was not collected"
    for i in (4, 5):
        assert blob_file(root, layers[i]).exists()

    for reference in (index, *(c["digest"] for c in children), signed, signature):
        status, _, body = http("GET", f"{base}/v2/kept/multi/manifests/{reference}", auth=READER, headers=ACCEPT)
        assert status == 200, reference
        for blob in [json.loads(body).get("config"), *json.loads(body).get("layers", [])]:
            if blob:
                assert http("GET", f"{base}/v2/kept/multi/blobs/{blob['digest']}", auth=READER)[0] == 200
    status, _, body = http("GET", f"{base}/v2/kept/multi/referrers/{signed}", auth=READER)
    assert [m["digest"] for m in json.loads(body)["manifests"]] == [signature]

    # build-1's layer again: the registry must say it is gone (no stale cache), so it is uploaded again
    assert http("HEAD", f"{base}/v2/ci/app/blobs/{layers[1]}", auth=ADMIN)[0] == 404
    again = image(base, "ci/app", "build 1")
    assert again["layers"][0]["digest"] == layers[1]
    put(base, "ci/app", "rebuilt", again)
    assert http("GET", f"{base}/v2/ci/app/blobs/{layers[1]}", auth=READER)[0] == 200
