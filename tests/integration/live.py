"""The real registry (Debian's docker-registry) and the real proxy, on free loopback ports."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from bench.services import SRC, registry_root, start_proxy, start_registry, stop
from helpers import make_user, require_tool

ADMIN = ("admin", "admin-Secret1")
READER = ("reader", "read:er-Secret2")  # a colon on purpose


@dataclass
class Registry:
    url: str
    root: Path  # its storage.filesystem.rootdirectory
    config: Path  # its config file (garbage-collect reads it)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The registry as the benchmark runs it: its own config, storage and free loopback port."""
    workdir = tmp_path_factory.mktemp("registry")
    service = start_registry(require_tool("docker-registry", "registry"), workdir)
    try:
        yield Registry(service.url, registry_root(workdir), workdir / "registry.yml")
    finally:
        stop(service.process)


@dataclass
class Mreg:
    host: str  # HOST:PORT as clients write it
    url: str


@pytest.fixture(scope="session")
def mreg_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session proxy's folder: its users file (users.yml, what manage-user edits) and the
    audit log beside it."""
    return tmp_path_factory.mktemp("mreg")


@pytest.fixture(scope="session")
def mreg(registry: Registry, mreg_home: Path) -> Iterator[Mreg]:
    """mreg-proxy started as operators start it: its own process, settings from the environment,
    reads answered from the registry's storage as in the pod (mreg.yml)."""
    users = {u.name: u for u in (make_user(*ADMIN, role="admin"), make_user(*READER))}
    service = start_proxy(registry.url, mreg_home, users, {"MREG_REGISTRY_ROOT": str(registry.root)})
    try:
        host = service.url.removeprefix("http://")
        yield Mreg(host, service.url)
    finally:
        stop(service.process)


def http(method: str, url: str, *, auth: tuple[str, str] | None = None, headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}), data=data)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def error_code(body: bytes) -> str:
    return json.loads(body)["errors"][0]["code"]


def run(cmd: list[str], *, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=input, env=env, capture_output=True, text=True, timeout=timeout)


def manage_user(users_file: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """manage-user of this tree on ``users_file``, as an operator runs it in the auth container."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
        "MREG_USERS_FILE": str(users_file),
        "MREG_BCRYPT_COST": "4",
        "MREG_ACTOR": "tests",
    }
    return run([sys.executable, "-m", "mreg_proxy.cli.manage_user", *args], input=stdin, env=env, timeout=60)


def token_secret(created: subprocess.CompletedProcess[str]) -> str:
    """The secret ``manage-user token add`` printed (once)."""
    assert created.returncode == 0, created.stderr
    return next(line.split(": ", 1)[1] for line in created.stdout.splitlines() if line.startswith("secret: "))
