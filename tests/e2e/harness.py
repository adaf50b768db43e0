"""Helpers of the end-to-end harness (plain functions and classes; the fixtures are in conftest.py).

Everything machine-specific lives here and in conftest.py, never in mreg.yml or the Containerfile:
  * CONTAINERS_CONF with runc and bounded ulimits (podman 4.3 on Debian 12: crun cannot run on
    hybrid cgroups, and the default nofile/nproc ulimits exceed the host's hard limits);
  * stand-ins for python:3.11-slim and registry:2 built from Debian packages (nothing can be
    pulled from Docker Hub on these machines);
  * podman < 4.4 workarounds: PersistentVolumeClaim documents make a second `kube play` fail when
    the volume exists (podman #16348), so replays leave them out (claimName alone reuses the
    volume); the auth container is `mreg-pod-0-auth` there and `mreg-pod-auth` on later podman.

The played copy of mreg.yml differs from the real one only in: image names (the stand-in registry
and the auth image built by the test), `hostIP: 127.0.0.1` on the hostPort (the test registry is
not exposed beyond loopback), and the PVC documents left out on replays with podman < 4.4.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "mreg.yml"

PORT = 5000  # mreg.yml's hostPort; this machine reserves it for this test
HOST = "127.0.0.1"
REGISTRY = f"{HOST}:{PORT}"

STANDIN_PYTHON = "localhost/mreg-e2e-standin/python:3.11-slim"
STANDIN_REGISTRY = "localhost/mreg-e2e-standin/registry:2"
TEST_IMAGES = "localhost/mreg-e2e/"  # every image a run makes is named under this; removed after
VOLUME_MARK = ".mreg-e2e"  # written into the volumes a run creates, so that a crashed run's are known

TOOLS = ("podman", "skopeo", "runc", "mmdebstrap")
FILES = {  # file -> the Debian package that installs it
    Path("/usr/bin/docker-registry"): "docker-registry",  # the registry:2 stand-in's binary
    Path("/bin/busybox"): "busybox-static",  # sh and wget in the registry:2 stand-in
}
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")  # extra CAs the host trusts (PyPI may be re-signed)
PATH_ENV = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
"""

# The official registry:2 image's /etc/docker/registry/config.yml and /entrypoint.sh (2.8.x).
REGISTRY_CONFIG = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""
REGISTRY_ENTRYPOINT = """\
#!/bin/sh
set -e
case "$1" in
    *.yaml|*.yml) set -- registry serve "$@" ;;
    serve|garbage-collect|help|-*) set -- registry "$@" ;;
esac
exec "$@"
"""


def missing_requirements() -> list[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    missing += [f"{path} (apt package {package})" for path, package in FILES.items() if not path.exists()]
    if os.geteuid() != 0:
        missing.append("root (rootful podman, mmdebstrap)")
    return missing


class Cmd:
    """Runs commands with the harness's environment; every command has a timeout."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log

    def run(
        self,
        args: Sequence[str],
        *,
        input: bytes | str | None = None,
        check: bool = True,
        timeout: float = 300,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        data = input.encode() if isinstance(input, str) else input
        started = time.monotonic()
        proc = subprocess.run(
            list(args), input=data, capture_output=True, env=self.env, timeout=timeout, cwd=cwd,
            stdin=subprocess.DEVNULL if data is None else None,
        )
        result = subprocess.CompletedProcess(
            proc.args, proc.returncode,
            proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"),
        )
        with self.log.open("a") as fh:
            fh.write(f"$ {' '.join(args)}  # rc={result.returncode} {time.monotonic() - started:.1f}s\n")
            if result.returncode:
                fh.write(result.stdout[-2000:] + result.stderr[-4000:] + "\n")
        if check and result.returncode:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-4000:]}"
            )
        return result

    def podman(self, *args: str, **kw) -> subprocess.CompletedProcess[str]:
        return self.run(["podman", *args], **kw)

    def image_exists(self, ref: str) -> bool:
        return self.podman("image", "exists", ref, check=False).returncode == 0


def podman_version(cmd: Cmd) -> tuple[int, int]:
    out = cmd.podman("version", "--format", "{{.Client.Version}}").stdout.strip()
    major, minor = re.match(r"(\d+)\.(\d+)", out).groups()  # type: ignore[union-attr]
    return int(major), int(minor)


def build_python_standin(cmd: Cmd, work: Path) -> None:
    """python:3.11-slim stand-in: Debian's python3 3.11 with pip, /usr/local/bin on PATH."""
    rootfs = work / "python-rootfs.tar"
    cas = sorted(str(p) for p in HOST_CA_DIR.glob("*.crt"))
    hooks = []
    if cas:
        hooks += ["--customize-hook", f"copy-in {' '.join(cas)} {HOST_CA_DIR}/",
                  "--customize-hook", 'chroot "$1" update-ca-certificates']
    hooks += ["--customize-hook", 'rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED']
    cmd.run(["mmdebstrap", "--quiet", "--variant=apt",
             "--include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates",
             *hooks, "bookworm", str(rootfs)], timeout=600)
    cmd.podman("import", "--change", PATH_ENV, "--change", 'CMD ["python3"]',
               str(rootfs), STANDIN_PYTHON)
    rootfs.unlink()


def build_registry_standin(cmd: Cmd, work: Path) -> None:
    """registry:2 stand-in with the official image's layout: Debian's docker-registry binary as
    /bin/registry, busybox for sh and wget, the official config.yml and entrypoint.sh."""
    rootfs = work / "registry-rootfs.tar"

    def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))

    def add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, mode
        tar.addfile(info)

    busybox_applets = subprocess.run(
        ["/bin/busybox", "--list"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    with tarfile.open(rootfs, "w") as tar:
        for d in ("bin", "lib", "lib/x86_64-linux-gnu", "lib64", "etc", "etc/docker",
                  "etc/docker/registry", "var", "var/lib", "var/lib/registry"):
            add_dir(tar, d)
        add_dir(tar, "tmp", 0o1777)
        tar.add("/bin/busybox", "bin/busybox")
        for applet in busybox_applets:
            if applet != "busybox":
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
        tar.add("/usr/bin/docker-registry", "bin/registry")
        for lib in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"):
            tar.add(os.path.realpath(lib), lib.lstrip("/"))
        add_file(tar, "etc/docker/registry/config.yml", REGISTRY_CONFIG.encode(), 0o644)
        add_file(tar, "entrypoint.sh", REGISTRY_ENTRYPOINT.encode(), 0o755)
        add_file(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n", 0o644)
        add_file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
    cmd.podman("import", "--change", PATH_ENV,
               "--change", 'ENTRYPOINT ["/entrypoint.sh"]',
               "--change", 'CMD ["/etc/docker/registry/config.yml"]',
               "--change", "EXPOSE 5000", str(rootfs), STANDIN_REGISTRY)
    rootfs.unlink()


def load_manifest(path: Path = MANIFEST) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def deployment_of(docs: list[dict]) -> dict:
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    return dep


def container_of(docs: list[dict], name: str) -> dict:
    (c,) = [c for c in deployment_of(docs)["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def claim_names(docs: list[dict]) -> list[str]:
    vols = deployment_of(docs)["spec"]["template"]["spec"]["volumes"]
    return [v["persistentVolumeClaim"]["claimName"] for v in vols if "persistentVolumeClaim" in v]


@dataclass
class Pod:
    """The played mreg.yml (or ``source``, another variant, changed by ``edit`` for this machine);
    restart() is `kube down` + `kube play`, as a user does it."""

    cmd: Cmd
    work: Path
    images: dict[str, str]
    podman_version: tuple[int, int]
    played: int = 0
    scheme: str = "http"
    volumes: list[str] = field(default_factory=list)
    pod_name: str = ""
    auth: str = ""
    registry: str = ""
    source: Path = MANIFEST
    edit: Callable[[list[dict]], None] | None = None  # the harness's changes to a variant, in place

    def docs(self) -> list[dict]:
        docs = load_manifest(self.source)
        if self.edit:
            self.edit(docs)
        return docs

    def manifest_copy(self, *, claims: bool = False, images: dict[str, str] | None = None) -> Path:
        """The copy to play; ``claims`` keeps the PVC documents whatever the podman version (for
        mreg-pod, which deals with them itself), ``images`` overrides the test images by container."""
        docs = self.docs()
        if self.played and self.podman_version < (4, 4) and not claims:
            docs = [d for d in docs if d["kind"] != "PersistentVolumeClaim"]
        # The stand-ins replace the registry and auth images wherever mreg.yml uses them.
        chosen = {**self.images, **(images or {})}
        replace = {container_of(docs, name)["image"]: image for name, image in chosen.items()}
        spec = deployment_of(docs)["spec"]["template"]["spec"]
        for container in spec["containers"] + spec.get("initContainers", []):
            container["image"] = replace.get(container["image"], container["image"])
        for port in container_of(docs, "auth").get("ports", []):
            if "hostPort" in port:
                port["hostIP"] = HOST
        path = self.work / f"{self.source.stem}-play-{self.played}{'-claims' if claims else ''}{'-images' if images else ''}.yml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return path

    def play(self) -> None:
        path = self.manifest_copy()
        self.cmd.podman("kube", "play", str(path), timeout=120)
        self.attach()

    def mreg_pod(self, command: str, *options: str, manifest: Path | None = None,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        """bin/mreg-pod COMMAND -f MANIFEST [OPTIONS], as an operator runs it from a checkout; after
        a successful up or restart, the harness follows the new pod."""
        self.save_logs()
        path = manifest or self.manifest_copy(claims=True)
        result = self.cmd.run([sys.executable, str(REPO / "bin" / "mreg-pod"), command, "-f", str(path), *options],
                              check=check, timeout=900)
        if result.returncode == 0 and command in ("up", "restart"):
            self.attach()
        return result

    def attach(self) -> None:
        """After a play: find the pod and its containers (podman 4.3 or later names), wait until ready."""
        self.played += 1
        for volume in self.volumes:
            (self.volume_path(volume) / VOLUME_MARK).touch()
        dep = deployment_of(self.docs())["metadata"]["name"]
        for pod_name in (f"{dep}-pod", f"{dep}-pod-0"):  # current podman, podman < 4.4
            if self.cmd.podman("container", "exists", f"{pod_name}-auth", check=False).returncode == 0:
                self.pod_name = pod_name
                break
        else:
            raise AssertionError(f"kube play made no auth container named {dep}-pod-auth or {dep}-pod-0-auth")
        self.auth, self.registry = f"{self.pod_name}-auth", f"{self.pod_name}-registry"
        self.wait_ready()

    def down(self) -> None:
        self.save_logs()
        self.cmd.podman("kube", "down", str(self.manifest_copy()), timeout=120, check=False)
        if self.pod_name:
            self.cmd.podman("pod", "rm", "--force", "--ignore", self.pod_name, timeout=120, check=False)

    def restart(self) -> None:
        self.down()
        self.play()

    def save_logs(self) -> None:
        for name in (self.auth, self.registry):
            if name:
                out = self.cmd.podman("logs", name, check=False, timeout=60)
                with (self.work / f"{name}.log").open("a") as fh:
                    fh.write(f"--- play {self.played}\n{out.stdout}{out.stderr}")

    def exec(self, *args: str, input: str | bytes | None = None, check: bool = True,
             container: str | None = None) -> subprocess.CompletedProcess[str]:
        flags = ["-i"] if input is not None else []
        return self.cmd.podman("exec", *flags, container or self.auth, *args,
                               input=input, check=check, timeout=120)

    def wait_ready(self, timeout: float = 90) -> None:
        """Poll /readyz in whichever protocol the proxy speaks (bounded)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for scheme in ("https", "http"):
                try:
                    status, _, _ = http(f"{scheme}://{REGISTRY}/readyz", verify=False, timeout=3)
                except OSError as exc:
                    last = f"{scheme}: {exc}"
                    continue
                if status == 200:
                    self.scheme = scheme
                    return
                last = f"{scheme}: {status}"
            time.sleep(0.5)
        self.save_logs()
        raise AssertionError(f"mreg not ready after {timeout}s: {last}; logs in {self.work}")

    def volume_path(self, claim: str) -> Path:
        out = self.cmd.podman("volume", "inspect", "--format", "{{.Mountpoint}}", claim)
        return Path(out.stdout.strip())


def remove_leftovers(cmd: Cmd, volumes: Sequence[str], *, images: bool = True) -> list[str]:
    """Remove what a crashed e2e run left: its test images (unless not ``images``: once this run
    built its own), and pod and volumes it marked as its own. Returns the volumes that exist and are
    NOT the e2e's (never touched)."""
    listed = cmd.podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split() if images else []
    for ref in listed:
        if ref.startswith((TEST_IMAGES, f"{REGISTRY}/e2e/")):
            cmd.podman("manifest", "rm", ref, check=False)
            cmd.podman("rmi", "--force", ref, check=False)
    foreign = []
    for volume in volumes:
        if cmd.podman("volume", "exists", volume, check=False).returncode:
            continue
        path = Path(cmd.podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip())
        if not (path / VOLUME_MARK).exists():
            foreign.append(volume)
            continue
        users = cmd.podman("ps", "-a", "--filter", f"volume={volume}", "--format", "{{.PodName}}").stdout.split()
        for pod_name in set(users):
            cmd.podman("pod", "rm", "--force", "--ignore", pod_name, check=False, timeout=120)
        cmd.podman("volume", "rm", "--force", volume, check=False)
    return foreign


def host_port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def http(
    url: str,
    *,
    method: str = "GET",
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
    verify: bool | str = True,
    timeout: float = 30,
    data: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request; verify=False skips certificate checks, verify=PATH trusts only that PEM."""
    req = urllib.request.Request(url, method=method, headers=dict(headers or {}), data=data)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    context = None
    if url.startswith("https:"):
        if verify is False:
            context = ssl._create_unverified_context()
        elif isinstance(verify, str):
            context = ssl.create_default_context(cafile=verify)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@dataclass
class Client:
    cmd: Cmd
    authfile: Path
    tls_args: list[str] = field(default_factory=lambda: ["--tls-verify=false"])

    def login(self, user: str, password: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cmd.podman("login", "--authfile", str(self.authfile), *self.tls_args,
                               "--username", user, "--password-stdin", REGISTRY,
                               input=password + "\n", check=check, timeout=60)

    def logout(self) -> None:
        self.cmd.podman("logout", "--authfile", str(self.authfile), REGISTRY, check=False, timeout=60)


def make_tiny_image(cmd: Cmd, work: Path, ref: str, *, arch: str = "amd64", payload: bytes | None = None) -> None:
    """An image with one layer of unique content (so its blobs are its own), imported offline."""
    rootfs = work / f"{uuid.uuid4().hex}.tar"
    data = payload if payload is not None else f"{ref} {arch} {uuid.uuid4()}\n".encode() * 64
    with tarfile.open(rootfs, "w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    cmd.podman("import", "--arch", arch, "--change", 'CMD ["/hello.txt"]', str(rootfs), ref)
    rootfs.unlink()
