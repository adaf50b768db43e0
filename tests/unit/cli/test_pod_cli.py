"""mreg-pod's pure parts: reading mreg.yml without PyYAML, and the copy it plays."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mreg_proxy.cli import Refusal
from mreg_proxy.cli.pod import Manifest, must_be_built, pod_names

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
