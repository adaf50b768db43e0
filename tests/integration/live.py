"""The real registry (Debian's docker-registry) and the real proxy, on free loopback ports."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from helpers import free_port, make_user, require_tool, write_users

ADMIN = ("admin", "admin-Secret1")
READER = ("reader", "read:er-Secret2")  # a colon on purpose


def wait_http(url: str, *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout}s") from None
            time.sleep(0.1)


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Stop a process we started, by its PID; SIGKILL if it lingers."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@dataclass
class Registry:
    url: str
    storage: Path
    config: Path


REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    binary = require_tool("docker-registry", "registry")
    base = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = base / "config.yml"
    config.write_text(REGISTRY_CONFIG.format(root=base / "data", port=port))
    log = open(base / "registry.log", "wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/")
        yield Registry(f"http://127.0.0.1:{port}", base / "data", config)
    finally:
        stop(process)
        log.close()


@dataclass
class Mreg:
    host: str  # HOST:PORT as clients write it
    url: str
    users_file: Path
    log: Path


@pytest.fixture(scope="session")
def mreg(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mreg]:
    """mreg-proxy started as operators start it: its own process, settings from the environment."""
    base = tmp_path_factory.mktemp("mreg")
    users = base / "users.yml"
    write_users(users, make_user(*ADMIN, role="admin"), make_user(*READER))
    port = free_port()
    env = {
        **os.environ,
        "MREG_LISTEN": f"127.0.0.1:{port}",
        "MREG_UPSTREAM": registry.url,
        "MREG_USERS_FILE": str(users),
        "MREG_TLS_CERT": str(base / "tls.crt"),
        "MREG_TLS_KEY": str(base / "tls.key"),
    }
    log_path = base / "proxy.log"
    log = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-m", "mreg_proxy"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield Mreg(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}", users, log_path)
    finally:
        stop(process)
        log.close()


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
