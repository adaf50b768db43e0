"""``python -m bench --retention``: retention runs over many tags, and the write pause of a collection.

1. 10,000 tags in 100 repositories (100 tags each, one image per tag), written straight into a
   filesystem store (the layout registry 2.8 writes; link times spread over 100 days), then the
   registry and mreg-proxy started on it. The rule ``**: keep_last 50`` makes 5,000 tags go: the
   dry run and the real run (POST /mreg/retention, what ``mreg-manage retention`` calls) are timed.
2. A store of a few GB (images of 64 MiB layers), half of them then untagged: ``POST /mreg/gc``
   (what ``mreg-manage gc`` calls) with the registry started by mreg.yml's own start command (the
   collector loop), and the write pause it holds is measured as the proxy reports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from mreg_proxy.auth.users import User

from .services import HOST, BenchError, Service, free_port, registry_env, start_proxy, stop, wait_http

MiB = 1 << 20
REPO_ROOT = Path(__file__).resolve().parents[1]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
V2 = "docker/registry/v2"


@dataclass(frozen=True)
class RetentionPlan:
    repositories: int
    tags_per_repository: int
    gc_images: int
    gc_layer_bytes: int


FULL = RetentionPlan(100, 100, 48, 64 * MiB)  # 10,000 tags; a 3 GiB store for the collection
QUICK = RetentionPlan(10, 20, 4, 4 * MiB)


def _blob(root: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    hexa = digest[7:]
    path = root / V2 / "blobs" / "sha256" / hexa[:2] / hexa / "data"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return digest


def _link(path: Path, digest: str, moment: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(digest)
    os.utime(path, (moment, moment))


def write_image(root: Path, name: str, tag: str | None, layer: bytes, moment: float) -> str:
    """One image as registry 2.8 stores it: blobs, the repository's layer and revision links, the tag."""
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    blobs = [(_blob(root, config), len(config)), (_blob(root, layer), len(layer))]
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0][0], "size": blobs[0][1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blobs[1][0], "size": blobs[1][1]}],
    }).encode()
    digest = _blob(root, manifest)
    repo = root / V2 / "repositories" / name
    for blob, _size in blobs:
        _link(repo / "_layers" / "sha256" / blob[7:] / "link", blob, moment)
    _link(repo / "_manifests" / "revisions" / "sha256" / digest[7:] / "link", digest, moment)
    if tag is not None:
        _link(repo / "_manifests" / "tags" / tag / "current" / "link", digest, moment)
        _link(repo / "_manifests" / "tags" / tag / "index" / "sha256" / digest[7:] / "link", digest, moment)
    return digest


def registry_container() -> dict:
    for doc in yaml.safe_load_all((REPO_ROOT / "mreg.yml").read_text()):
        if doc and doc.get("kind") == "Deployment":
            (registry,) = [c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == "registry"]
            return dict(registry)
    raise BenchError("no Deployment in mreg.yml")


# the stock image's storage cache, which mreg.yml's environment turns off
STOCK_CACHE = "  cache:\n    blobdescriptor: inmemory\n"


def start_pod_registry(binary: str, work: Path, root: Path, gc_dir: Path) -> Service:
    """The registry as mreg.yml starts it (start-up collection, the collector loop, its storage
    settings over the stock image's config), on ``root``."""
    port = free_port()
    config = work / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n{STOCK_CACHE}  filesystem:\n"
                      f"    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: {HOST}:{port}\n")
    container = registry_container()
    storage_env = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("REGISTRY_STORAGE_CACHE")}
    bin_dir = work / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "registry").unlink(missing_ok=True)
    (bin_dir / "registry").symlink_to(binary)
    script = str(container["command"][-1]).replace("/var/lib/mreg-registry", str(root)).replace(
        "/etc/docker/registry/config.yml", str(config))
    env = {**registry_env(), **storage_env, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "MREG_GC_DIR": str(gc_dir)}
    with open(work / "registry.log", "wb") as log:
        process = subprocess.Popen(["/bin/sh", "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}"
    try:
        wait_http(url + "/v2/", process, timeout=600)
    except BaseException:
        stop(process)
        raise
    return Service(url, process)


def post(service: Service, path: str, body: dict, auth: tuple[str, str], timeout: float = 3600) -> tuple[float, dict]:
    import base64
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(service.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Basic {token}"})
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read())
    return time.monotonic() - started, answer


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def run(plan: RetentionPlan, binary: str, work: Path, users: dict[str, User], auth: tuple[str, str]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    now = time.time()
    # 1. many tags
    root = work / "tags-store"
    started = time.monotonic()
    for r in range(plan.repositories):
        for t in range(plan.tags_per_repository):
            write_image(root, f"bench/repo{r:03d}", f"build-{t}", f"layer {r} {t}".encode() * 16, now - (t + 1) * 86400)
    tags = plan.repositories * plan.tags_per_repository
    rows.append((f"write {tags} tags in {plan.repositories} repositories into the store (s)", f"{time.monotonic() - started:.1f}"))
    (work / "tags").mkdir()
    policy = work / "tags" / "policy.yml"
    policy.write_text(f"retention:\n  '**': {{keep_last: {plan.tags_per_repository // 2}}}\n")
    gc_dir = work / "tags-gc"
    gc_dir.mkdir()
    registry = start_pod_registry(binary, work, root, gc_dir)
    proxy = None
    try:
        proxy = start_proxy(registry.url, work / "tags", users, {
            "MREG_POLICY_FILE": str(policy), "MREG_REGISTRY_ROOT": str(root), "MREG_GC_DIR": str(gc_dir)})
        seconds, dry = post(proxy, "/mreg/retention", {"dry_run": True}, auth)
        rows.append((f"retention dry run over {tags} tags, {dry['tags']} would go (s)", f"{seconds:.1f}"))
        seconds, real = post(proxy, "/mreg/retention", {"dry_run": False}, auth)
        if real["lines"] != dry["lines"] or real["deleted"] != dry["tags"] or real["failed"]:
            raise BenchError(f"the real run differs from the dry run: {real['deleted']} deleted, {real['failed'][:3]}")
        rows.append((f"retention real run over {tags} tags, {real['deleted']} deleted (s)", f"{seconds:.1f}"))
    finally:
        if proxy is not None:
            stop(proxy.process)
        stop(registry.process)
    # 2. a collection on a store of a few GB
    root = work / "gc-store"
    for i in range(plan.gc_images):
        layer = os.urandom(1024) * (plan.gc_layer_bytes // 1024)
        write_image(root, "bench/big", f"image-{i}" if i % 2 == 0 else None, layer, now - 86400)
    before = du(root)
    gc_dir = work / "big-gc"
    gc_dir.mkdir()
    (work / "big").mkdir()
    registry = start_pod_registry(binary, work, root, gc_dir)
    proxy = None
    try:
        proxy = start_proxy(registry.url, work / "big", users, {"MREG_REGISTRY_ROOT": str(root), "MREG_GC_DIR": str(gc_dir)})
        seconds, result = post(proxy, "/mreg/gc", {"min_age": 0}, auth)
        after = du(root)
        rows.append((f"store before / after the collection (MiB)", f"{before / MiB:.0f} / {after / MiB:.0f}"))
        rows.append(("write pause of the collection (s)", f"{result['paused_seconds']:.1f}"))
        rows.append(("of which registry garbage-collect (s)", f"{result['collector_seconds']:.1f}"))
        rows.append(("untagged manifests forgotten", str(result["forgotten_manifests"])))
    finally:
        if proxy is not None:
            stop(proxy.process)
        stop(registry.process)
    return rows


def markdown(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| measure | value |", "|---|---:|", *(f"| {label} | {value} |" for label, value in rows)])
