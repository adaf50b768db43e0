"""The processes under test: a real registry and mreg-proxy, each on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from mreg_proxy.auth.passwords import hash_cost
from mreg_proxy.auth.users import User, read_users_file, write_users_file

HOST = "127.0.0.1"
SRC = Path(__file__).resolve().parent.parent / "src"

_REGISTRY_LOG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
"""
# filesystem storage, with the header the stock image's config adds to every answer (mreg's
# storage reads must learn and add it too)
REGISTRY_CONFIG = _REGISTRY_LOG + """\
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {host}:{port}
  headers:
    X-Content-Type-Options: [nosniff]
"""

# Replicas on one bucket: the redirect is off so that every byte passes the proxy (a client would
# otherwise be sent to a presigned S3 URL), and they share http.secret so that an upload started
# on one can be finished on another.
REGISTRY_S3_CONFIG = _REGISTRY_LOG + """\
storage:
  s3:
    region: {s3.region}
    regionendpoint: {s3.endpoint}
    bucket: {s3.bucket}
    accesskey: {s3.access_key}
    secretkey: {s3.secret_key}
    secure: false
    v4auth: true
    rootdirectory: /registry
  redirect:
    disable: true
  delete:
    enabled: true
http:
  addr: {host}:{port}
  secret: {secret}
"""


@dataclass(frozen=True)
class S3:
    """A bucket on an S3 engine, and the credentials of its user."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


class BenchError(RuntimeError):
    """The benchmark could not run correctly (a digest mismatch, a failed request, ...)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{process.args[0]} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{url} did not answer within {timeout}s")


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
class Service:
    url: str
    process: subprocess.Popen[bytes]


def _started(process: subprocess.Popen[bytes], url: str, probe: str) -> Service:
    """The service once ``url + probe`` answers; stopped again if it never does."""
    try:
        wait_http(url + probe, process)
    except BaseException:
        stop(process)
        raise
    return Service(url, process)


def registry_config(workdir: Path, port: int, s3: S3 | None = None, secret: str = "") -> Path:
    """The registry's config file: filesystem storage under ``workdir``, or the bucket ``s3``."""
    config = workdir / "registry.yml"
    if s3 is None:
        registry_root(workdir).mkdir(exist_ok=True)  # mreg's MREG_REGISTRY_ROOT must exist at start
        config.write_text(REGISTRY_CONFIG.format(root=registry_root(workdir), host=HOST, port=port))
    else:
        config.write_text(REGISTRY_S3_CONFIG.format(s3=s3, host=HOST, port=port, secret=secret))
    return config


def registry_root(workdir: Path) -> Path:
    """The filesystem storage of the registry started in ``workdir``."""
    return workdir / "registry-data"


def registry_env() -> dict[str, str]:
    """The registry's environment: this machine's AWS_CA_BUNDLE makes registry 2.8 panic at start
    (LoadCustomCABundleError) when its storage is S3."""
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}


def start_registry(binary: str, workdir: Path, s3: S3 | None = None, secret: str = "") -> Service:
    """docker-registry on a free loopback port; on ``s3``, replicas share ``secret`` (http.secret)."""
    port = free_port()
    config = registry_config(workdir, port, s3, secret)
    with open(workdir / "registry.log", "wb") as log:
        process = subprocess.Popen(
            [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, env=registry_env()
        )
    return _started(process, f"http://{HOST}:{port}", "/v2/")


# What the image's Containerfile sets for the proxy's process, so that the bench measures it as
# deployed (tests/test_deploy_manifest.py checks that the two agree)
IMAGE_ENV = {"PYTHONMALLOC": "malloc"}


def start_proxy(
    upstream: str, workdir: Path, users: Mapping[str, User] | Path, extra_env: Mapping[str, str] | None = None
) -> Service:
    """mreg-proxy from this checkout, as operators run it (settings from the environment, its
    default log level), with ``users`` in its users file (or the users file ``users``, which
    replicas share); its log is ``workdir/proxy.log``. ``MREG_BCRYPT_COST`` is the costliest of
    the users' hashes unless ``extra_env`` says otherwise: a cheaper hash would be re-hashed at the
    first login (a bcrypt run in the background, the users file rewritten under the caller)."""
    if isinstance(users, Path):
        users_file = users
        present = read_users_file(users)
    else:
        users_file = workdir / "users.yml"
        write_users_file(users_file, users)
        present = dict(users)
    costs = [hash_cost(user.password_hash) for user in present.values()]
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
        "MREG_LISTEN": f"{HOST}:{port}",
        "MREG_UPSTREAM": upstream,
        "MREG_USERS_FILE": str(users_file),
        "MREG_TLS_CERT": str(users_file.parent / "tls.crt"),
        "MREG_TLS_KEY": str(users_file.parent / "tls.key"),
        **IMAGE_ENV,
        **({"MREG_BCRYPT_COST": str(max(costs))} if costs else {}),
        **(extra_env or {}),
    }
    with open(workdir / "proxy.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mreg_proxy"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return _started(process, f"http://{HOST}:{port}", "/healthz")


def memory_kib(pid: int, field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of a process, in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"{field} missing from /proc/{pid}/status")


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread; ``peak`` is the highest seen.

    VmHWM alone would include start-up; sampling also shows that memory stays flat per workload.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, memory_kib(self._pid, "VmRSS"))

    def __enter__(self) -> RssSampler:
        self.peak = memory_kib(self._pid, "VmRSS")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
