"""mreg-pod's pure parts: reading mreg.yml without PyYAML, and the copy it plays; the ConfigMaps of
the S3 variant, and the kube play they lead to (podman replaced by a recording double)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from mreg_proxy.cli import Refusal
from mreg_proxy.cli.pod import (
    MAX_MANIFEST_BYTES, Deploy, Manifest, Podman, load_configmaps, missing_configmaps, must_be_built, pod_names,
)

MREG_YML = Path(__file__).resolve().parents[3] / "mreg.yml"


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return Manifest.parse(MREG_YML.read_text())


def test_reads_the_deployment_claims_and_images_of_mreg_yml(manifest: Manifest) -> None:
    docs = [d for d in yaml.safe_load_all(MREG_YML.read_text()) if d]
    assert len(manifest.documents) == len(docs)
    assert manifest.deployment() == "mreg"
    assert manifest.named("PersistentVolumeClaim") == ["mreg-registry-data", "mreg-auth-data"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert manifest.images() == [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]


def test_the_played_copy_leaves_out_only_the_claims_of_existing_volumes(manifest: Manifest) -> None:
    full = [d for d in yaml.safe_load_all(MREG_YML.read_text()) if d]
    played = [d for d in yaml.safe_load_all(manifest.without_claims({"mreg-auth-data"})) if d]
    assert played == [d for d in full if d["metadata"]["name"] != "mreg-auth-data" or d["kind"] != "PersistentVolumeClaim"]
    assert [d for d in yaml.safe_load_all(manifest.without_claims(set())) if d] == full


def test_pod_names_of_both_podman_generations() -> None:
    assert pod_names("mreg") == ("mreg-pod", "mreg-pod-0")


def test_only_localhost_images_must_be_built_here(manifest: Manifest) -> None:
    assert must_be_built(manifest.images()) == ["localhost/mreg-proxy:latest"]


def test_metadata_name_is_the_direct_child_not_a_nested_one() -> None:
    text = "kind: PersistentVolumeClaim\nmetadata:\n  labels:\n    name: wrong\n  name: right # the claim\n"
    assert Manifest.parse(text).named("PersistentVolumeClaim") == ["right"]


def test_a_manifest_without_one_deployment_is_refused() -> None:
    with pytest.raises(Refusal, match="expected one Deployment"):
        Manifest.parse("kind: Service\nmetadata:\n  name: x\n").deployment()


# --- the S3 variant: ConfigMaps passed with --configmap ---

S3_YML = MREG_YML.parent / "deploy" / "podman" / "mreg-s3.yml"
SETTINGS = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: mreg-s3}  # as in docs/s3.md\ndata:\n  A: b\n"


def test_the_s3_variant_reads_the_configmap_mreg_s3_and_mreg_yml_none(manifest: Manifest) -> None:
    s3 = Manifest.parse(S3_YML.read_text())
    assert s3.configmaps_used() == ["mreg-s3"]
    assert manifest.configmaps_used() == []
    assert s3.named("PersistentVolumeClaim") == ["mreg-auth-data"] and s3.deployment() == "mreg"


@pytest.mark.parametrize("use", [
    "envFrom:\n  - configMapRef:\n      name: cm\n",
    "envFrom:\n  - configMapRef: {name: 'cm'}\n",
    "valueFrom:\n  configMapKeyRef:\n    name: cm\n    key: k\n",
    "volumes:\n  - name: v\n    configMap:\n      name: cm\n",
])
def test_every_way_a_pod_reads_a_configmap(use: str) -> None:
    text = "kind: Deployment\nmetadata:\n  name: d\nspec:\n" + "".join(f"  {line}\n" for line in use.splitlines())
    assert Manifest.parse(text).configmaps_used() == ["cm"]


def test_a_configmap_is_missing_unless_the_manifest_or_a_file_defines_it() -> None:
    s3 = Manifest.parse(S3_YML.read_text())
    assert missing_configmaps(s3, []) == ["mreg-s3"]
    assert missing_configmaps(s3, [Manifest.parse(SETTINGS.replace("mreg-s3", "other"))]) == ["mreg-s3"]
    assert missing_configmaps(s3, [Manifest.parse(SETTINGS)]) == []
    inline = Manifest.parse(S3_YML.read_text() + "\n---\nkind: ConfigMap\nmetadata:\n  name: mreg-s3\n")
    assert missing_configmaps(inline, []) == []


def test_configmap_files_are_checked_and_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("settings.yml").write_text(SETTINGS)
    paths, docs = load_configmaps([Path("settings.yml")])
    assert paths == (tmp_path / "settings.yml",) and docs[0].named("ConfigMap") == ["mreg-s3"]
    Path("a,b.yml").write_text(SETTINGS)
    Path("plain.yml").write_text("kind: Deployment\nmetadata:\n  name: d\n")
    Path("big.yml").write_bytes(b"#" * (MAX_MANIFEST_BYTES + 1))
    refusals = {
        "a,b.yml": "podman cannot take a path with a comma",
        "absent.yml": "--configmap absent.yml not found",
        "plain.yml": "holds no ConfigMap",
        ".": "is a folder",
        "big.yml": "is larger than",
    }
    for name, message in refusals.items():
        with pytest.raises(Refusal, match=re.escape(message)):
            load_configmaps([Path("settings.yml"), Path(name)])


class RecordingPodman(Podman):
    """podman as a test double: records each call; no pod, volume or image exists."""

    def __init__(self) -> None:
        super().__init__({})
        self.calls: list[tuple[str, ...]] = []

    def run(self, *args: str, timeout: float = 0) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        exists = len(args) > 1 and args[1] == "exists"
        return subprocess.CompletedProcess(["podman", *args], 1 if exists else 0, "", "")


def s3_deploy(tmp_path: Path, *configmaps: str) -> tuple[Deploy, RecordingPodman]:
    files = []
    for number, text in enumerate(configmaps):
        files.append(tmp_path / f"cm{number}.yml")
        files[-1].write_text(text)
    manifest = Manifest.parse(S3_YML.read_text().replace("localhost/", "quay.io/"))  # nothing to build
    podman = RecordingPodman()
    return Deploy(podman, S3_YML, manifest, *load_configmaps(files)), podman


def test_up_passes_every_configmap_to_kube_play(tmp_path: Path) -> None:
    deploy, podman = s3_deploy(tmp_path, SETTINGS, SETTINGS.replace("mreg-s3", "extra"))
    deploy.up()
    (play,) = [call for call in podman.calls if call[:2] == ("kube", "play")]
    assert play[2:6] == ("--configmap", str(tmp_path / "cm0.yml"), "--configmap", str(tmp_path / "cm1.yml"))
    assert play[6].endswith("mreg-s3.yml") and len(play) == 7


def test_restart_without_the_configmap_stops_nothing(tmp_path: Path) -> None:
    deploy, podman = s3_deploy(tmp_path)
    with pytest.raises(Refusal, match="reads the ConfigMap mreg-s3, which no --configmap FILE defines"):
        deploy.restart()
    assert all(call[1] == "exists" for call in podman.calls) and not any(c[0] == "kube" for c in podman.calls)
