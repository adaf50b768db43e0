"""End to end, the one-host S3 variant (deploy/podman/mreg-s3.yml) as a new user runs it, on a real
S3 engine (a single-node Ceph radosgw on loopback, bench/ceph.py): `mreg-pod up --configmap` with
the settings file of docs/s3.md, a user, a push whose blobs land in the bucket, `mreg-pod restart`
twice (the second play is what podman 4.3 refused: the auth volume exists), and the documented
garbage collection (pause, `registry garbage-collect` in the registry container that `mreg-pod up`
names, resume).

The harness's copy of the manifest differs from deploy/podman/mreg-s3.yml only in what this machine
needs (see on_this_machine): the stand-in images; the pod on the host's network, because radosgw
listens on the host's loopback, which the pod's own network namespace cannot reach; the proxy on
127.0.0.1:5000 and the registry on a free loopback port, no port mappings (on the host's network
the pod's ports are the host's); and its own names (Deployment mreg-e2e-s3, volume mreg-e2e-s3-auth), so that it
meets no other mreg pod or volume on this machine.

One ordered flow; once a step fails the later ones are skipped. Run under flock /tmp/mreg-heavy.lock.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

from bench.ceph import DAEMONS, Ceph, ceph_cluster
from bench.services import free_port
from harness import (
    HOST, PORT, REGISTRY, REPO, TEST_IMAGES, Client, Cmd, Pod, container_of, deployment_of, host_port_free,
    http, make_tiny_image, podman_version, remove_leftovers,
)
from helpers import require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

S3_MANIFEST = REPO / "deploy" / "podman" / "mreg-s3.yml"
DEPLOYMENT = "mreg-e2e-s3"
CLAIM = "mreg-e2e-s3-auth"
BUCKET = "mreg-e2e-s3"
ADMIN, ADMIN_PW = "s3admin", "s3-adm1n pass"
KEPT = f"{REGISTRY}/e2e-s3/kept:1"
DOOMED = f"{REGISTRY}/e2e-s3/doomed:1"
MANIFEST_TYPES = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def on_this_machine(registry_port: int) -> Callable[[list[dict]], None]:
    """The harness's changes to deploy/podman/mreg-s3.yml (module docstring: why each)."""

    def edit(docs: list[dict]) -> None:
        for doc in docs:
            if doc["kind"] == "PersistentVolumeClaim":
                doc["metadata"]["name"] = CLAIM
        deployment = deployment_of(docs)
        deployment["metadata"]["name"] = DEPLOYMENT
        spec = deployment["spec"]["template"]["spec"]
        spec["hostNetwork"] = True
        for volume in spec["volumes"]:
            if "persistentVolumeClaim" in volume:
                volume["persistentVolumeClaim"]["claimName"] = CLAIM
        auth = container_of(docs, "auth")
        del auth["ports"]  # podman 4.3: "PortMappings can only be used with Bridge or slirp4netns networking"
        for variable in auth["env"]:
            if variable["name"] == "MREG_LISTEN":
                variable["value"] = f"{HOST}:{PORT}"
        # the registry's loopback address is the host's here: a free port, wherever the manifest names it
        moved = json.loads(json.dumps(docs).replace(f"{HOST}:5001", f"{HOST}:{registry_port}"))
        docs[:] = moved

    return edit


@pytest.fixture(scope="module")
def ceph(e2e_dir: Path) -> Iterator[Ceph]:
    for tool in DAEMONS:
        require_tool(tool)
    with ceph_cluster(e2e_dir / "ceph") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def settings(ceph: Ceph, e2e_dir: Path) -> Path:
    """mreg-s3-settings.yml as docs/s3.md has the operator write it, for the test bucket."""
    s3 = ceph.bucket(BUCKET)
    data = {
        "REGISTRY_STORAGE_S3_REGION": s3.region, "REGISTRY_STORAGE_S3_REGIONENDPOINT": s3.endpoint,
        "REGISTRY_STORAGE_S3_BUCKET": s3.bucket, "REGISTRY_STORAGE_S3_ACCESSKEY": s3.access_key,
        "REGISTRY_STORAGE_S3_SECRETKEY": s3.secret_key, "REGISTRY_STORAGE_S3_SECURE": "false",
        "REGISTRY_STORAGE_S3_ROOTDIRECTORY": "/registry", "REGISTRY_HTTP_SECRET": os.urandom(16).hex(),
    }
    path = e2e_dir / "mreg-s3-settings.yml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: mreg-s3}\n"
                    + yaml.safe_dump({"data": data}, sort_keys=False))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def s3pod(cmd: Cmd, e2e_dir: Path, auth_image: str, standins: dict[str, str], settings: Path) -> Iterator[Pod]:
    """The pod is played by the first step (mreg-pod up); removed with its volume at the end."""
    foreign = remove_leftovers(cmd, [CLAIM], images=False)  # the session removed old images
    if foreign:
        pytest.fail(f"podman volume {CLAIM} exists and is not the e2e's; the e2e will not touch it")
    if not host_port_free(PORT):
        pytest.fail(f"port {PORT} is in use; the S3 e2e serves on {HOST}:{PORT}")
    registry_port = free_port()
    pod = Pod(cmd, e2e_dir, {"registry": standins["registry"], "auth": auth_image}, podman_version(cmd),
              volumes=[CLAIM], source=S3_MANIFEST, edit=on_this_machine(registry_port))
    try:
        yield pod
    finally:
        pod.mreg_pod("down", check=False)
        cmd.podman("volume", "rm", "--force", CLAIM, check=False)


@pytest.fixture(scope="module")
def admin(cmd: Cmd, e2e_dir: Path) -> Iterator[Client]:
    client = Client(cmd, e2e_dir / "s3-admin-auth.json")
    yield client
    client.logout()


@pytest.fixture(scope="module")
def pushed() -> dict[str, tuple[str, list[str]]]:
    """repo:tag -> (manifest digest, blob digests), filled by the push step."""
    return {}


def bucket_keys(ceph: Ceph) -> set[str]:
    listing = json.loads(ceph.run("radosgw-admin", "bucket", "list", f"--bucket={BUCKET}", "--max-entries=100000"))
    return {entry["name"] for entry in listing}


def blob_key(digest: str) -> str:
    hexdigest = digest.removeprefix("sha256:")
    return f"registry/docker/registry/v2/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data"


def image(ref: str) -> tuple[str, str]:
    name, _, tag = ref.removeprefix(f"{REGISTRY}/").rpartition(":")
    return name, tag


def fetch_manifest(ref: str) -> tuple[int, str, dict]:
    name, tag = image(ref)
    status, headers, body = http(f"http://{REGISTRY}/v2/{name}/manifests/{tag}", auth=(ADMIN, ADMIN_PW),
                                 headers={"Accept": MANIFEST_TYPES})
    return status, headers.get("Docker-Content-Digest", ""), json.loads(body) if status == 200 else {}


def assert_kept_image_intact(pushed: dict[str, tuple[str, list[str]]]) -> None:
    digest, blobs = pushed[KEPT]
    status, served, _ = fetch_manifest(KEPT)
    assert (status, served) == (200, digest)
    name, _ = image(KEPT)
    for blob in blobs:
        status, _, body = http(f"http://{REGISTRY}/v2/{name}/blobs/{blob}", auth=(ADMIN, ADMIN_PW))
        assert status == 200 and "sha256:" + hashlib.sha256(body).hexdigest() == blob


def test_01_mreg_pod_up_plays_the_s3_variant_with_its_configmap(s3pod: Pod, settings: Path) -> None:
    out = s3pod.mreg_pod("up", "--configmap", str(settings)).stdout
    assert f"mreg is up: pod {s3pod.pod_name}, auth container {s3pod.auth}" in out
    assert f"containers: {s3pod.auth}, {s3pod.registry}" in out  # the names the GC step uses
    s3pod.exec("manage-user", "add", ADMIN, input=ADMIN_PW + "\n")
    s3pod.exec("manage-user", "toggle", ADMIN)
    assert http(f"http://{REGISTRY}/v2/", auth=(ADMIN, ADMIN_PW))[0] == 200


def test_02_a_push_stores_its_blobs_in_the_bucket(s3pod: Pod, cmd: Cmd, admin: Client, ceph: Ceph, e2e_dir: Path,
                                                  run_id: str, pushed: dict[str, tuple[str, list[str]]]) -> None:
    admin.login(ADMIN, ADMIN_PW)
    for ref in (KEPT, DOOMED):
        local = f"{TEST_IMAGES}s3-{image(ref)[0].rpartition('/')[2]}:{run_id}"
        make_tiny_image(cmd, e2e_dir, local)
        try:
            cmd.podman("push", "--authfile", str(admin.authfile), "--tls-verify=false", local, ref)
        finally:
            cmd.podman("rmi", "--force", local, check=False)
        status, digest, doc = fetch_manifest(ref)
        assert status == 200
        pushed[ref] = (digest, [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])])
    keys = bucket_keys(ceph)
    for _, blobs in pushed.values():
        assert {blob_key(blob) for blob in blobs} <= keys


def test_03_mreg_pod_restart_twice_keeps_users_and_images(s3pod: Pod, settings: Path, admin: Client,
                                                          pushed: dict[str, tuple[str, list[str]]]) -> None:
    for _ in range(2):
        out = s3pod.mreg_pod("restart", "--configmap", str(settings)).stdout
        assert f"reusing the volumes {CLAIM}" in out
        assert f"mreg is up: pod {s3pod.pod_name}" in out
        admin.login(ADMIN, ADMIN_PW)
        assert_kept_image_intact(pushed)
        assert fetch_manifest(DOOMED)[1] == pushed[DOOMED][0]


def test_04_a_restart_without_the_configmap_is_refused_and_stops_nothing(s3pod: Pod) -> None:
    refused = s3pod.mreg_pod("restart", check=False)
    assert refused.returncode == 1
    assert "reads the ConfigMap mreg-s3, which no --configmap FILE defines" in refused.stderr
    assert http(f"http://{REGISTRY}/readyz")[0] == 200


def test_05_gc_as_docs_s3_md_says_in_the_registry_container_mreg_pod_names(
    s3pod: Pod, cmd: Cmd, admin: Client, ceph: Ceph, pushed: dict[str, tuple[str, list[str]]]
) -> None:
    cmd.run(["skopeo", "delete", "--authfile", str(admin.authfile), "--tls-verify=false", f"docker://{DOOMED}"])
    manage = [str(REPO / "bin" / "mreg-manage")]
    env = {**cmd.env, "REGISTRY_AUTH_FILE": str(admin.authfile)}
    operator = Cmd(env, cmd.log)
    operator.run([*manage, "pause", f"http://{REGISTRY}", "600"], timeout=120)
    try:
        gc = cmd.podman("exec", s3pod.registry, "registry", "garbage-collect", "/etc/docker/registry/config.yml",
                        timeout=300)
    finally:
        operator.run([*manage, "resume", f"http://{REGISTRY}"], timeout=120)
    assert "blobs and 0 manifests eligible for deletion" in gc.stdout
    keys = bucket_keys(ceph)
    doomed_only = set(pushed[DOOMED][1]) - set(pushed[KEPT][1])
    assert doomed_only and not {blob_key(blob) for blob in doomed_only} & keys
    assert {blob_key(blob) for blob in pushed[KEPT][1]} <= keys
    assert_kept_image_intact(pushed)
