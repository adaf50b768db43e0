"""The Docker client itself, with a private dockerd started for the session."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from live import ADMIN, READER, Mreg, manage_user, run, stop, token_secret
from helpers import require_tool
from imagegen import rootfs_tar

pytestmark = pytest.mark.integration


class Docker:
    def __init__(self, client: str, host: str) -> None:
        self.client = client
        self.host = host

    def __call__(self, *args: str, config: Path, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CONFIG": str(config)}
        return run([self.client, *args], input=input, env=env)


@pytest.fixture(scope="session")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docker]:
    dockerd = require_tool("dockerd")
    client = require_tool("docker")
    # the daemon's sockets go in a short path: unix socket paths are limited to 108 bytes
    base = Path(subprocess.check_output(["mktemp", "-d", "/tmp/mreg-dockerd.XXXXXX"], text=True).strip())
    host = f"unix://{base}/docker.sock"
    log = open(tmp_path_factory.mktemp("dockerd") / "dockerd.log", "wb")
    process = subprocess.Popen(
        [dockerd, "--data-root", str(base / "data"), "--exec-root", str(base / "exec"), "-H", host,
         "--pidfile", str(base / "docker.pid"), "--iptables=false", "--bridge=none"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    docker = Docker(client, host)
    try:
        deadline = time.monotonic() + 60
        while docker("version", config=base).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dockerd did not start; see {log.name}")
            time.sleep(0.5)
        yield docker
    finally:
        stop(process, timeout=30)
        log.close()
        subprocess.run(["rm", "-rf", str(base)], check=False)


def _login(docker: Docker, mreg: Mreg, config: Path, who: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    return docker("login", "-u", who[0], "--password-stdin", mreg.host, config=config, input=who[1])


@pytest.fixture(scope="module")
def pushed(docker: Docker, mreg: Mreg, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """An image imported into dockerd and pushed by the admin: (reference, repo digest)."""
    base = tmp_path_factory.mktemp("docker-admin")
    rootfs = base / "rootfs.tar"
    rootfs_tar(rootfs, 6 << 20, seed=42)
    ref = f"{mreg.host}/team/dimg:1"
    assert docker("import", str(rootfs), ref, config=base).returncode == 0
    login = _login(docker, mreg, base, ADMIN)
    assert login.returncode == 0, login.stderr
    push = docker("push", ref, config=base)
    assert push.returncode == 0, push.stderr + push.stdout
    digest = next(line.split("digest: ")[1].split()[0] for line in push.stdout.splitlines() if "digest: " in line)
    return ref, digest


def test_docker_login_wrong_password(docker: Docker, mreg: Mreg, tmp_path: Path) -> None:
    result = _login(docker, mreg, tmp_path, (ADMIN[0], "wrong"))
    assert result.returncode != 0
    assert "unauthorized" in result.stderr.lower()


def test_docker_pull_as_reader(docker: Docker, mreg: Mreg, pushed: tuple[str, str], tmp_path: Path) -> None:
    ref, digest = pushed
    assert docker("rmi", ref, config=tmp_path).returncode == 0
    assert _login(docker, mreg, tmp_path, READER).returncode == 0
    pull = docker("pull", ref, config=tmp_path)
    assert pull.returncode == 0, pull.stderr
    assert f"Digest: {digest}" in pull.stdout


def test_docker_push_as_reader_is_denied(docker: Docker, mreg: Mreg, pushed: tuple[str, str], tmp_path: Path) -> None:
    ref, _ = pushed
    other = f"{mreg.host}/team/dimg:reader"
    assert docker("tag", ref, other, config=tmp_path).returncode == 0
    assert _login(docker, mreg, tmp_path, READER).returncode == 0
    push = docker("push", other, config=tmp_path)
    assert push.returncode != 0
    message = push.stderr + push.stdout
    assert "denied: requested access to the resource is denied: user 'reader' may not push" in message, message


def test_docker_login_and_push_with_a_ci_token(
    docker: Docker, mreg: Mreg, mreg_home: Path, pushed: tuple[str, str], tmp_path: Path
) -> None:
    ref, _ = pushed
    users_file = mreg_home / "users.yml"
    secret = token_secret(manage_user(users_file, "token", "add", "dci", "--grant", "team/dtoken=push"))
    try:
        assert _login(docker, mreg, tmp_path, ("dci", secret)).returncode == 0
        mine, other = f"{mreg.host}/team/dtoken:1", f"{mreg.host}/team/dother:1"
        for target in (mine, other):
            assert docker("tag", ref, target, config=tmp_path).returncode == 0
        push = docker("push", mine, config=tmp_path)
        assert push.returncode == 0, push.stderr + push.stdout
        refused = docker("push", other, config=tmp_path)
        assert refused.returncode != 0 and "denied" in refused.stderr + refused.stdout
    finally:
        assert manage_user(users_file, "token", "rm", "dci").returncode == 0
    assert docker("rmi", mine, config=tmp_path).returncode == 0
    gone = docker("pull", mine, config=tmp_path)
    assert gone.returncode != 0 and "unauthorized" in (gone.stderr + gone.stdout).lower()
