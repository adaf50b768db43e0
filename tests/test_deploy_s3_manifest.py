"""deploy/kubernetes/mreg-s3.yml: valid Kubernetes, and what replicas on one bucket depend on."""

from __future__ import annotations

import pytest
import yaml

from s3manifest import CONTAINERS, CRONJOB_POD, DEPLOYMENT, DOCS, MANIFEST, POD, env_of, only

kubernetes_validate = pytest.importorskip("kubernetes_validate")

LABELS = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
ALL_CONTAINERS = [*POD["containers"], *CRONJOB_POD["initContainers"], *CRONJOB_POD["containers"]]


@pytest.mark.parametrize("doc", DOCS, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in DOCS])
def test_every_document_validates_against_the_kubernetes_schema(doc: dict) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_documents() -> None:
    assert sorted(d["kind"] for d in DOCS) == ["CronJob", "Deployment", "Namespace", "PodDisruptionBudget", "Service"]
    assert {d["metadata"].get("namespace") for d in DOCS if d["kind"] != "Namespace"} == {"mreg"}


def test_several_replicas_replaced_one_at_a_time_without_downtime() -> None:
    assert DEPLOYMENT["spec"]["replicas"] >= 2
    strategy = DEPLOYMENT["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_a_disruption_budget_keeps_a_replica_serving() -> None:
    budget = only("PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= LABELS.items()
    assert 1 <= budget["minAvailable"] < DEPLOYMENT["spec"]["replicas"]


def test_service_spreads_over_the_replicas_on_the_auth_port() -> None:
    service = only("Service")["spec"]
    assert service["selector"].items() <= LABELS.items()
    (port,) = service["ports"]
    assert port["targetPort"] == CONTAINERS["auth"]["ports"][0]["name"]
    assert "hostPort" not in CONTAINERS["auth"]["ports"][0], "two replicas on one node would clash"


def test_registry_stores_in_s3_from_the_secret_without_redirects() -> None:
    registry = CONTAINERS["registry"]
    env = env_of(registry)
    assert env["REGISTRY_STORAGE"] == "s3"
    assert env["REGISTRY_STORAGE_REDIRECT_DISABLE"] == "true", "every byte must pass the proxy"
    assert env["REGISTRY_STORAGE_DELETE_ENABLED"] == "true"
    assert env["REGISTRY_HTTP_ADDR"] == "127.0.0.1:5001"
    assert registry["envFrom"] == [{"secretRef": {"name": "mreg-s3"}}]
    # credentials and the shared http.secret come from the Secret, never from the manifest
    assert not {"REGISTRY_HTTP_SECRET", "REGISTRY_STORAGE_S3_ACCESSKEY", "REGISTRY_STORAGE_S3_SECRETKEY"} & set(env)


def test_no_garbage_collection_at_start() -> None:
    assert "garbage-collect" not in " ".join(CONTAINERS["registry"]["command"])


def test_auth_reads_users_and_tls_from_a_read_only_secret() -> None:
    (mount,) = [m for m in CONTAINERS["auth"]["volumeMounts"] if m["mountPath"] == "/auth"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in POD["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "mreg-auth"
    env = env_of(CONTAINERS["auth"])
    assert env["MREG_USERS_FILE"] == "/auth/users.yml"
    assert env["MREG_UPSTREAM"] == "http://127.0.0.1:5001"
    # the files are the group's (fsGroup) and readable to the proxy's group
    assert volume["secret"]["defaultMode"] & 0o040 and POD["securityContext"]["fsGroup"] == CONTAINERS["auth"]["securityContext"]["runAsGroup"]


@pytest.mark.parametrize("container", ["registry", "auth"])
def test_probes(container: str) -> None:
    assert {"livenessProbe", "readinessProbe"} <= set(CONTAINERS[container])


@pytest.mark.parametrize("container", ALL_CONTAINERS, ids=[c["name"] for c in ALL_CONTAINERS])
def test_every_container_has_requests_and_limits(container: dict) -> None:
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])


def test_gc_job_pauses_prunes_collects_then_always_resumes() -> None:
    pause, prune, collect = CRONJOB_POD["initContainers"]
    assert "python3 -m mreg_proxy.storage.prune --s3 ||" in " ".join(prune["command"]), "a failed prune must not stop GC"
    assert prune["envFrom"] == CONTAINERS["registry"]["envFrom"]
    (resume,) = CRONJOB_POD["containers"]
    assert pause["command"][0] == "mreg-manage" and "pause" in pause["command"]
    script = " ".join(collect["command"])
    assert "registry garbage-collect" in script and "--delete-untagged" not in script and " -m" not in script
    assert "; echo $?" in script, "a failed collection must still reach the resume step"
    assert "resume" in " ".join(resume["command"])
    assert only("CronJob")["spec"]["concurrencyPolicy"] == "Forbid"


def test_gc_job_collects_the_bucket_the_replicas_serve() -> None:
    collect = CRONJOB_POD["initContainers"][2]
    registry = CONTAINERS["registry"]
    assert collect["image"] == registry["image"]
    assert collect["envFrom"] == registry["envFrom"]
    storage = {k: v for k, v in env_of(registry).items() if k.startswith("REGISTRY_STORAGE_S3") or k == "REGISTRY_STORAGE"}
    assert storage.items() <= env_of(collect).items()


def test_images_are_the_ones_of_the_single_pod_manifest() -> None:
    single = [d for d in yaml.safe_load_all((MANIFEST.parents[2] / "mreg.yml").read_text()) if d and d["kind"] == "Deployment"][0]
    images = {c["name"]: c["image"] for c in single["spec"]["template"]["spec"]["containers"]}
    assert {c["name"]: c["image"] for c in POD["containers"]} == images


PODMAN = MANIFEST.parents[1] / "podman" / "mreg-s3.yml"
PODMAN_DOCS = [d for d in yaml.safe_load_all(PODMAN.read_text()) if d]
PODMAN_CONTAINERS = {
    c["name"]: c for d in PODMAN_DOCS if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]
}


@pytest.mark.parametrize("doc", PODMAN_DOCS, ids=[f"podman-{d['kind']}/{d['metadata']['name']}" for d in PODMAN_DOCS])
def test_podman_variant_validates(doc: dict) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_podman_variant_runs_the_registry_as_the_kubernetes_variant_does() -> None:
    registry = PODMAN_CONTAINERS["registry"]
    assert env_of(registry) == env_of(CONTAINERS["registry"])
    assert registry["command"] == CONTAINERS["registry"]["command"]
    assert registry["envFrom"] == [{"configMapRef": {"name": "mreg-s3"}}]  # podman kube play --configmap


def test_podman_variant_keeps_the_auth_volume_of_the_single_pod_setup() -> None:
    mounts = {m["mountPath"]: m for m in PODMAN_CONTAINERS["auth"]["volumeMounts"]}
    assert not mounts["/auth"].get("readOnly"), "manage-user edits it through podman exec"
    assert PODMAN_CONTAINERS["auth"]["ports"][0]["hostPort"] == 5000


@pytest.mark.parametrize("auth", [CONTAINERS["auth"], PODMAN_CONTAINERS["auth"]], ids=["kubernetes", "podman"])
def test_s3_variants_forward_every_read(auth: dict) -> None:
    """No folder to read: the storage read path stays off (MREG_REGISTRY_ROOT unset)."""
    assert "MREG_REGISTRY_ROOT" not in env_of(auth)
