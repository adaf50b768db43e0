"""Fixtures and hooks of the end-to-end tests; the helpers are in harness.py.

The e2e builds stand-in base images from Debian packages, builds the auth image from the real
Containerfile, plays the real mreg.yml with podman (see harness.py for the few harness-only
changes), and removes everything it made at the end: pod, volumes, the auth image, test images.

Kept on purpose between runs: the two stand-in base images, tagged
localhost/mreg-e2e-standin/python:3.11-slim and localhost/mreg-e2e-standin/registry:2, which take
~50 s to build. MREG_E2E_REBUILD_STANDINS=1 rebuilds them; MREG_E2E_KEEP_STANDINS=0 removes them
at the end. Missing tools skip the e2e tests with the reason, except under CI=true: there they fail.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import (  # noqa: E402
    CONTAINERS_CONF, PORT, REPO, STANDIN_PYTHON, STANDIN_REGISTRY, TEST_IMAGES, Cmd, Pod, build_python_standin,
    build_registry_standin, claim_names, host_port_free, load_manifest, missing_requirements, podman_version,
    remove_leftovers,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without the tools: skip, with the reason; under CI=true, pytest_runtest_setup fails instead."""
    if os.environ.get("CI") == "true":
        return
    e2e_items = [item for item in items if item.get_closest_marker("e2e")]
    missing = missing_requirements() if e2e_items else []
    if missing:
        marker = pytest.mark.skip(reason="e2e needs: " + ", ".join(missing))
        for item in e2e_items:
            item.add_marker(marker)


# Ordered flows: once a step failed, the later steps of the same module are skipped as such.
_FAILED_STEP: dict[str, str] = {}


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    if (item.get_closest_marker("e2e") and call.excinfo is not None and call.when in ("setup", "call")
            and not call.excinfo.errisinstance(pytest.skip.Exception)):
        _FAILED_STEP.setdefault(item.module.__name__, item.name)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("e2e"):
        missing = missing_requirements() if os.environ.get("CI") == "true" else []
        if missing:
            pytest.fail("CI=true and the e2e cannot run; missing: " + ", ".join(missing))
        failed = _FAILED_STEP.get(item.module.__name__)
        if failed:
            pytest.skip(f"an earlier step failed: {failed}")


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mreg-e2e")


@pytest.fixture(scope="session")
def cmd(e2e_dir: Path) -> Cmd:
    conf = e2e_dir / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    return Cmd(env, e2e_dir / "commands.log")


@pytest.fixture(scope="session")
def standins(cmd: Cmd, e2e_dir: Path) -> Iterator[dict[str, str]]:
    rebuild = os.environ.get("MREG_E2E_REBUILD_STANDINS") == "1"
    for ref, build in ((STANDIN_PYTHON, build_python_standin), (STANDIN_REGISTRY, build_registry_standin)):
        if rebuild or not cmd.image_exists(ref):
            cmd.podman("rmi", "--ignore", ref)  # a rebuild must not leave the old one dangling
            build(cmd, e2e_dir)
    yield {"python": STANDIN_PYTHON, "registry": STANDIN_REGISTRY}
    if os.environ.get("MREG_E2E_KEEP_STANDINS") == "0":
        cmd.podman("rmi", STANDIN_PYTHON, STANDIN_REGISTRY, check=False)


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def foreign_volumes(cmd: Cmd) -> list[str]:
    """First of all: clear what a crashed run left; name the volumes that are someone else's."""
    return remove_leftovers(cmd, claim_names(load_manifest()))


@pytest.fixture(scope="session")
def auth_image(cmd: Cmd, standins: dict[str, str], run_id: str, foreign_volumes: list[str]) -> Iterator[str]:
    """The auth image, built from the real Containerfile on the python stand-in."""
    ref = f"{TEST_IMAGES}mreg-proxy:{run_id}"
    # --layers=false: no intermediate cache images are left behind.
    cmd.podman("build", "--layers=false", "--pull=never", "-f", str(REPO / "Containerfile"),
               "--build-arg", f"BASE_IMAGE={standins['python']}", "-t", ref, str(REPO), timeout=600)
    yield ref
    cmd.podman("rmi", "--force", ref, check=False)


@pytest.fixture(scope="module")
def pod(cmd: Cmd, e2e_dir: Path, auth_image: str, standins: dict[str, str],
        foreign_volumes: list[str]) -> Iterator[Pod]:
    volumes = claim_names(load_manifest())
    if foreign_volumes:
        pytest.fail(f"podman volumes {foreign_volumes} exist and are not the e2e's (a real mreg here?); "
                    "the e2e will not touch them")
    if not host_port_free(PORT):
        pytest.fail(f"port {PORT} is in use; the e2e plays mreg.yml with hostPort {PORT}")
    pod = Pod(cmd, e2e_dir, {"registry": standins["registry"], "auth": auth_image},
              podman_version(cmd), volumes=volumes)
    try:
        pod.play()
        yield pod
    finally:
        pod.down()
        for volume in volumes:
            cmd.podman("volume", "rm", "--force", volume, check=False)


@pytest.fixture(scope="module")
def client_dir(e2e_dir: Path) -> Iterator[Path]:
    path = e2e_dir / "clients"
    path.mkdir(exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def made_images(cmd: Cmd) -> Iterator[list[str]]:
    """Local images (and manifest lists) the tests create or pull; removed at the end."""
    refs: list[str] = []
    yield refs
    for ref in reversed(refs):
        cmd.podman("manifest", "rm", ref, check=False)
        cmd.podman("rmi", "--force", ref, check=False)
