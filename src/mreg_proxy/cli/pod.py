"""mreg-pod: start, stop and replace mreg's pod with podman, the same way on podman 4.3 and 4.4+.

    mreg-pod up        play mreg.yml (removing what a failed or stopped play left behind first)
    mreg-pod down      remove the pod; the volumes (images, users, TLS) stay
    mreg-pod restart   down, then up: what ``podman kube play --replace`` should have been

Other variants: ``-f deploy/podman/mreg-s3.yml --configmap mreg-s3-settings.yml`` (``--configmap``
repeatable, passed to ``podman kube play`` as is). A ConfigMap the manifest reads but no file
defines is refused before anything is stopped: a restart must not end with the registry down.

Why not ``podman kube play --replace mreg.yml``: on podman 4.3 (Debian 12) it removes the pod and
then fails with "volume with name mreg-auth-data already exists" (podman issue 16348), leaving the
registry down. A PersistentVolumeClaim document is only needed to create its volume, so ``up``
plays a copy without the claims whose volumes exist: the ``claimName`` alone reuses them, on every
podman version. ``up`` also refuses to play before the auth image is built (the play would try to
pull ``localhost/...`` and leave a half-made pod), and cleans up after a play that fails.

Runs on the host, from a checkout (``bin/mreg-pod``) or installed; only the standard library.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import OneLineParser, Refusal, one_line_errors

PROG = "mreg-pod"
PLAY_TIMEOUT = 600.0  # the registry's garbage collection runs before it serves, but play returns before
COMMAND_TIMEOUT = 180.0  # stopping a pod waits up to 10 s per container, then kills
MAX_MANIFEST_BYTES = 1 << 20

_DOCUMENT_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)
_KIND = re.compile(r"^kind:[ \t]*(\S+)", re.MULTILINE)
_FLOW_NAME = re.compile(r"^metadata:[ \t]*\{[^}]*?\bname:[ \t]*[\"']?([^\"',}\s]+)", re.MULTILINE)
# envFrom.configMapRef, env.valueFrom.configMapKeyRef and volumes[].configMap, block or flow style,
# with name as the first key (as kubectl and the manifests here write them)
_CONFIGMAP_USE = re.compile(
    r"\bconfigMap(?:Key)?(?:Ref)?:[ \t]*(?:\{[ \t]*|\n[ \t]*)name:[ \t]*[\"']?([A-Za-z0-9.-]+)"
)
_IMAGE = re.compile(r"^[ \t]*(?:-[ \t]+)?image:[ \t]*[\"']?([^\"'\s#]+)", re.MULTILINE)


# --- the manifest (pure) ---


@dataclass(frozen=True)
class Manifest:
    documents: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Manifest:
        return cls(tuple(doc for doc in _DOCUMENT_SEPARATOR.split(text) if _KIND.search(doc)))

    def named(self, kind: str) -> list[str]:
        return [_name(doc) for doc in self.documents if _kind(doc) == kind]

    def deployment(self) -> str:
        names = self.named("Deployment")
        if len(names) != 1:
            raise Refusal(f"expected one Deployment in the manifest, found {len(names)}")
        return names[0]

    def images(self) -> list[str]:
        return [image for doc in self.documents for image in _IMAGE.findall(doc)]

    def configmaps_used(self) -> list[str]:
        """The ConfigMaps the manifest's pods read (``podman kube play --configmap`` supplies them)."""
        used = [name for doc in self.documents for name in _CONFIGMAP_USE.findall(doc)]
        return list(dict.fromkeys(used))

    def without_claims(self, volumes: set[str]) -> str:
        """The manifest without the PersistentVolumeClaims of ``volumes`` (which exist already)."""
        kept = [doc for doc in self.documents
                if not (_kind(doc) == "PersistentVolumeClaim" and _name(doc) in volumes)]
        return "---".join(kept)


def _kind(doc: str) -> str | None:
    match = _KIND.search(doc)
    return match[1] if match else None


def _name(doc: str) -> str:
    """``metadata.name``: the ``name:`` line at the first indentation under a top-level ``metadata:``,
    or the ``name`` of a one-line ``metadata: {name: ...}`` (docs/s3.md writes the ConfigMap so)."""
    flow = _FLOW_NAME.search(doc)
    if flow:
        return flow[1]
    lines = doc.splitlines()
    for number, line in enumerate(lines):
        if line.rstrip() != "metadata:":
            continue
        children = [child for child in lines[number + 1:] if child.strip() and not child.lstrip().startswith("#")]
        indent = None
        for child in children:
            depth = len(child) - len(child.lstrip())
            if depth == 0:
                break
            indent = depth if indent is None else indent
            key, _, value = child.strip().partition(":")
            if depth == indent and key == "name":
                return value.split("#")[0].strip().strip("\"'")
    raise Refusal(f"a {_kind(doc)} document of the manifest has no metadata.name")


def pod_names(deployment: str) -> tuple[str, str]:
    """What ``podman kube play`` names the pod of a Deployment: podman 4.4 and later, podman 4.3."""
    return f"{deployment}-pod", f"{deployment}-pod-0"


def must_be_built(images: Sequence[str]) -> list[str]:
    """Images that no registry has: ``localhost/...`` exists only once built on this machine."""
    return [image for image in images if image.startswith("localhost/")]


def missing_configmaps(manifest: Manifest, supplied: Sequence[Manifest]) -> list[str]:
    """ConfigMaps the manifest reads that neither it nor a ``--configmap`` file defines."""
    defined = set(manifest.named("ConfigMap"))
    for configmaps in supplied:
        defined.update(configmaps.named("ConfigMap"))
    return [name for name in manifest.configmaps_used() if name not in defined]


# --- podman ---


class Podman:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(["podman", *args], capture_output=True, text=True, env=self.env,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise Refusal("podman is not installed (or not on PATH)") from None
        except subprocess.TimeoutExpired:
            raise Refusal(f"podman {' '.join(args)} did not finish within {timeout:.0f} s") from None

    def exists(self, what: str, name: str) -> bool:
        return self.run(what, "exists", name).returncode == 0

    def pod_state(self, name: str) -> str | None:
        done = self.run("pod", "inspect", name, "--format", "{{.State}}")
        return done.stdout.strip() if done.returncode == 0 else None

    def containers(self, pod: str) -> list[str]:
        """The names of the pod's containers, its infra container left out."""
        done = self.run("ps", "--all", "--filter", f"pod={pod}", "--format", "{{.Names}} {{.IsInfra}}")
        rows = [line.split() for line in done.stdout.splitlines()] if done.returncode == 0 else []
        return sorted(row[0] for row in rows if len(row) == 2 and row[1] == "false")

    def remove_pod(self, name: str) -> None:
        done = self.run("pod", "rm", "--force", "--ignore", name)
        if done.returncode:
            raise Refusal(f"podman pod rm {name} failed: {last_line(done.stderr)}")


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and "failed to connect to syslog" not in line]
    return lines[-1].strip() if lines else "no message"


# --- the commands ---


@dataclass(frozen=True)
class Deploy:
    podman: Podman
    path: Path
    manifest: Manifest
    configmaps: tuple[Path, ...] = ()  # absolute paths, each holding a ConfigMap (read by load_configmaps)
    configmap_docs: tuple[Manifest, ...] = ()

    @property
    def pods(self) -> tuple[str, str]:
        return pod_names(self.manifest.deployment())

    def existing_pods(self) -> list[str]:
        return [pod for pod in self.pods if self.podman.exists("pod", pod)]

    def check_images(self) -> None:
        for image in must_be_built(self.manifest.images()):
            if not self.podman.exists("image", image):
                raise Refusal(
                    f"the image {image} is not built yet: run 'podman build --layers=false -t {image} .' in the mreg "
                    f"checkout first (nothing was started)"
                )

    def check_configmaps(self) -> None:
        missing = missing_configmaps(self.manifest, self.configmap_docs)
        if missing:
            raise Refusal(
                f"{self.path} reads the ConfigMap {', '.join(missing)}, which no --configmap FILE defines "
                f"(docs/s3.md shows one); nothing was stopped or started"
            )

    def check(self) -> None:
        """What must hold before anything is stopped or played."""
        self.check_configmaps()
        self.check_images()

    def up(self) -> None:
        self.check()
        for pod in self.existing_pods():
            state = self.podman.pod_state(pod)
            if state == "Running":
                print(f"mreg is already running (pod {pod}); to replace it: {PROG} restart")
                return
            print(f"removing the pod {pod} ({state or 'unknown state'}) that an earlier play left")
            self.podman.remove_pod(pod)
        volumes = {v for v in self.manifest.named("PersistentVolumeClaim") if self.podman.exists("volume", v)}
        if volumes:
            print(f"reusing the volumes {', '.join(sorted(volumes))}")
        with tempfile.TemporaryDirectory(prefix="mreg-pod-") as work:
            play = Path(work) / self.path.name
            play.write_text(self.manifest.without_claims(volumes))
            options = [arg for path in self.configmaps for arg in ("--configmap", str(path))]
            done = self.podman.run("kube", "play", *options, str(play), timeout=PLAY_TIMEOUT)
        if done.returncode:
            for pod in self.existing_pods():
                self.podman.remove_pod(pod)
            raise Refusal(
                f"podman kube play failed: {last_line(done.stderr)}; removed what it left "
                "(the volumes are kept); fix the cause and run it again"
            )
        pods = self.existing_pods()
        pod = pods[0] if pods else self.pods[0]
        print(f"mreg is up: pod {pod}, auth container {pod}-auth")
        print(f"  containers: {', '.join(self.podman.containers(pod))}")
        print(f"  add a user:  podman exec -it {pod}-auth manage-user add NAME")

    def down(self) -> None:
        pods = self.existing_pods()
        for pod in pods:
            self.podman.remove_pod(pod)
        volumes = ", ".join(self.manifest.named("PersistentVolumeClaim"))
        if pods:
            print(f"removed the pod {', '.join(pods)}; the volumes stay: {volumes}")
        else:
            print(f"no mreg pod to remove; the volumes stay: {volumes}")

    def restart(self) -> None:
        self.check()  # before down: a restart must not end with the registry down
        self.down()
        self.up()


def load(path: Path, missing: str | None = None) -> Manifest:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise Refusal(missing or f"{path} not found: run {PROG} in the mreg checkout, or pass -f PATH/mreg.yml") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise Refusal(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes: not a manifest or ConfigMap of mreg")
    try:
        return Manifest.parse(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise Refusal(f"{path} is not UTF-8 text") from None


def load_configmaps(paths: Sequence[Path]) -> tuple[tuple[Path, ...], tuple[Manifest, ...]]:
    """The ``--configmap`` files, absolute, and what they define; each must define a ConfigMap."""
    absolute, parsed = [], []
    for path in paths:
        if "," in str(path):  # podman splits the option's value at commas
            raise Refusal(f"--configmap {path}: podman cannot take a path with a comma; rename the file")
        if path.is_dir():
            raise Refusal(f"--configmap {path} is a folder, not a file holding a ConfigMap")
        configmaps = load(path, missing=f"--configmap {path} not found")
        if not configmaps.named("ConfigMap"):
            raise Refusal(f"--configmap {path} holds no ConfigMap (a document with kind: ConfigMap)")
        absolute.append(path.resolve())
        parsed.append(configmaps)
    return tuple(absolute), tuple(parsed)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Start, stop or replace mreg's pod with podman (4.3 and later). "
        "The volumes (images, users, TLS files) are always kept.",
    )
    parser.add_argument("command", choices=["up", "down", "restart"],
                        help="up: play the manifest; down: remove the pod; restart: down, then up")
    parser.add_argument("-f", "--file", type=Path, default=Path("mreg.yml"), metavar="MANIFEST",
                        help="the manifest (default: mreg.yml in the current folder)")
    parser.add_argument("--configmap", type=Path, action="append", default=[], metavar="FILE",
                        help="a ConfigMap the manifest reads (repeatable), passed to podman kube play; "
                        "deploy/podman/mreg-s3.yml needs one: see docs/s3.md")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_intermixed_args(argv)
    with one_line_errors(PROG):
        deploy = Deploy(Podman(dict(os.environ)), args.file, load(args.file), *load_configmaps(args.configmap))
        deploy.manifest.deployment()  # refuse a manifest that is not mreg's before touching podman
        {"up": deploy.up, "down": deploy.down, "restart": deploy.restart}[args.command]()


if __name__ == "__main__":
    main()
