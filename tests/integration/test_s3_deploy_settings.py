"""The registry settings of deploy/kubernetes/mreg-s3.yml, on a real S3 engine.

The Deployment configures the registry through environment variables over the registry image's
own config file (filesystem storage, in-memory blob cache). Here the same variables, with the
Secret mreg-s3 filled in for the test bucket, run over a copy of that file: the registry must
store in the bucket and nowhere else, and the CronJob's garbage-collect must work the same way.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.ceph import Ceph
from bench.services import free_port, registry_env, start_registry, stop, wait_http
from e2e.harness import REGISTRY_CONFIG as IMAGE_CONFIG  # the registry image's own config file
from live import Mreg, http
from registry_calls import push_tiny
from s3live import registry_binary
from s3manifest import CONTAINERS, CRONJOB_POD, env_of

pytestmark = pytest.mark.integration


def test_the_manifest_registry_settings_store_in_the_bucket_and_gc_runs(ceph: Ceph, tmp_path: Path) -> None:
    binary = registry_binary()
    s3 = ceph.bucket("deploy-settings")
    secret = {  # what an operator puts into the Secret mreg-s3
        "REGISTRY_STORAGE_S3_REGION": s3.region, "REGISTRY_STORAGE_S3_REGIONENDPOINT": s3.endpoint,
        "REGISTRY_STORAGE_S3_BUCKET": s3.bucket, "REGISTRY_STORAGE_S3_ACCESSKEY": s3.access_key,
        "REGISTRY_STORAGE_S3_SECRETKEY": s3.secret_key, "REGISTRY_STORAGE_S3_SECURE": "false",
        "REGISTRY_STORAGE_S3_ROOTDIRECTORY": "/registry", "REGISTRY_HTTP_SECRET": "deploy-test-secret",
    }
    config = tmp_path / "config.yml"
    config.write_text(IMAGE_CONFIG.replace("/var/lib/registry", str(tmp_path / "filesystem")))
    port = free_port()
    env = {**registry_env(), **env_of(CONTAINERS["registry"]), **secret, "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}"}
    with open(tmp_path / "registry.log", "wb") as log:
        process = subprocess.Popen([binary, "serve", str(config)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/", process)
        # straight to the registry (it has no auth and ignores the proxy's credentials)
        digest = push_tiny(Mreg(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"), "deploy/app", ["1"])
    finally:
        stop(process)
    assert not (tmp_path / "filesystem").exists(), "the image's filesystem storage was used"

    # a registry with the test suite's own S3 settings sees the image in the bucket
    other = start_registry(binary, tmp_path, s3, "x")
    try:
        status, headers, _ = http("HEAD", f"{other.url}/v2/deploy/app/manifests/1",
                                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert status == 200 and headers["Docker-Content-Digest"] == digest
    finally:
        stop(other.process)

    (collect,) = [c for c in CRONJOB_POD["initContainers"] if c["name"] == "collect"]
    gc_env = {**registry_env(), **env_of(collect), **secret}
    gc = subprocess.run([binary, "garbage-collect", str(config)], env=gc_env, capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert not (tmp_path / "filesystem").exists()
