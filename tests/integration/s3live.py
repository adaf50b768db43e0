"""Replicas of mreg on one S3 bucket, on a real S3 engine (Ceph's radosgw, bench/ceph.py).

Each replica is a registry (S3 driver, shared http.secret, redirect off) with its own mreg-proxy in
front, as a pod of the S3 Deployment is. The proxies read one users file laid out as a mounted
Kubernetes Secret (tests/secretmount.py): what one replica's users are, all replicas' users are.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from bench.ceph import DAEMONS, Ceph, ceph_cluster
from bench.services import S3, SRC, Service, registry_env, start_proxy, start_registry, stop
from helpers import make_user, require_tool
from live import ADMIN, READER, Mreg
from mreg_proxy.auth.users import User, dump_users
from secretmount import write_secret

# replicas look at the shared pause marker this often (seconds); small, so the tests stay quick
PAUSE_POLL = "0.2"
USERS = (make_user(*ADMIN, role="admin"), make_user(*READER))


@pytest.fixture(scope="session")
def ceph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ceph]:
    """One single-node Ceph cluster for the whole session; every daemon stopped at its end."""
    for tool in DAEMONS:
        require_tool(tool)
    registry_binary()
    with ceph_cluster(tmp_path_factory.mktemp("ceph")) as cluster:
        yield cluster


def registry_binary() -> str:
    return require_tool("docker-registry", "registry")


@dataclass
class Replica(Mreg):
    registry: Service
    proxy: Service
    workdir: Path


@dataclass
class Replicas:
    s3: S3
    secret: str  # the registries' shared http.secret
    auth: Path  # the users "Secret" every proxy reads
    members: list[Replica]
    workdir: Path

    @property
    def a(self) -> Replica:
        return self.members[0]

    @property
    def b(self) -> Replica:
        return self.members[1]

    def set_users(self, users: list[User]) -> None:
        """What ``kubectl apply`` of the users Secret does on every node: one symlink swap."""
        write_secret(self.auth, {"users.yml": dump_users({u.name: u for u in users}).encode()})

    def start(self, index: int, s3: S3 | None = None) -> Replica:
        """A registry and its proxy on this bucket (replica ``index``'s own folder); ``s3`` is the
        bucket as this replica reaches it, when not directly."""
        workdir = self.workdir / f"replica-{index}"
        workdir.mkdir(exist_ok=True)
        registry = start_registry(registry_binary(), workdir, s3 or self.s3, self.secret)
        try:
            proxy = start_proxy(registry.url, workdir, self.auth / "users.yml", {"MREG_PAUSE_POLL_INTERVAL": PAUSE_POLL, "MREG_SHARED_STORAGE": "true"})
        except BaseException:
            stop(registry.process)
            raise
        return Replica(proxy.url.removeprefix("http://"), proxy.url, registry, proxy, workdir)


def operator_env(tmp_path: Path, *replicas: Replica) -> dict[str, str]:
    """mreg-manage's environment: the admin's login for every replica, as podman stores it."""
    token = base64.b64encode(":".join(ADMIN).encode()).decode()
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {r.host: {"auth": token} for r in replicas}}))
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "REGISTRY_AUTH_FILE": str(auth)}


def bucket_env(s3: S3) -> dict[str, str]:
    """The environment ``python3 -m mreg_proxy.storage.prune --s3`` reads the bucket from."""
    return {**registry_env(), "PYTHONPATH": str(SRC), "REGISTRY_STORAGE_S3_REGION": s3.region,
            "REGISTRY_STORAGE_S3_REGIONENDPOINT": s3.endpoint, "REGISTRY_STORAGE_S3_BUCKET": s3.bucket,
            "REGISTRY_STORAGE_S3_ACCESSKEY": s3.access_key, "REGISTRY_STORAGE_S3_SECRETKEY": s3.secret_key,
            "REGISTRY_STORAGE_S3_ROOTDIRECTORY": "/registry"}


@contextlib.contextmanager
def replicas_on(ceph: Ceph, workdir: Path, bucket: str, count: int = 2) -> Iterator[Replicas]:
    """``count`` replicas on a new bucket; all stopped on the way out."""
    group = Replicas(ceph.bucket(bucket), secrets.token_hex(16), workdir / "auth", [], workdir)
    group.set_users(list(USERS))
    try:
        for index in range(count):
            group.members.append(group.start(index))
        yield group
    finally:
        for member in group.members:
            stop(member.proxy.process)
            stop(member.registry.process)


@pytest.fixture(scope="session")
def replicas(ceph: Ceph, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two replicas on the bucket ``shared``, for the tests that only add images."""
    with replicas_on(ceph, tmp_path_factory.mktemp("replicas"), "shared") as group:
        yield group
