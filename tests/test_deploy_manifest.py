"""mreg.yml: valid Kubernetes, and the properties the design depends on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

MANIFEST = Path(__file__).resolve().parents[1] / "mreg.yml"
DOCS = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def _only(kind: str) -> dict:
    (doc,) = [d for d in DOCS if d["kind"] == kind]
    return doc


DEPLOYMENT = _only("Deployment")
POD = DEPLOYMENT["spec"]["template"]["spec"]
CONTAINERS = {c["name"]: c for c in POD["containers"]}


def _env(container: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in CONTAINERS[container].get("env", [])}


def _script(container: str) -> str:
    return " ".join(CONTAINERS[container].get("command", []) + CONTAINERS[container].get("args", []))


@pytest.mark.parametrize("doc", DOCS, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in DOCS])
def test_every_document_validates_against_the_kubernetes_schema(doc: dict) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_documents_are_namespace_service_two_claims_and_the_deployment() -> None:
    kinds = sorted(d["kind"] for d in DOCS)
    assert kinds == ["Deployment", "Namespace", "PersistentVolumeClaim", "PersistentVolumeClaim", "Service"]
    assert _only("Namespace")["metadata"]["name"] == "mreg"
    assert {d["metadata"].get("namespace") for d in DOCS if d["kind"] != "Namespace"} == {"mreg"}


def test_deployment_is_mreg_with_registry_and_auth_and_auth_is_the_default_container() -> None:
    assert DEPLOYMENT["metadata"]["name"] == "mreg"
    assert set(CONTAINERS) == {"registry", "auth"}
    annotations = DEPLOYMENT["spec"]["template"]["metadata"]["annotations"]
    assert annotations["kubectl.kubernetes.io/default-container"] == "auth"


def test_one_replica_recreated_never_two_pods_on_the_same_storage() -> None:
    assert DEPLOYMENT["spec"]["replicas"] == 1
    assert DEPLOYMENT["spec"]["strategy"]["type"] == "Recreate"


def test_service_selects_the_pod_and_reaches_the_auth_port() -> None:
    service = _only("Service")
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    (auth_port,) = CONTAINERS["auth"]["ports"]
    assert port["port"] == 5000
    assert port["targetPort"] in (auth_port["name"], auth_port["containerPort"])


def test_registry_image_is_a_pinned_registry_2_release() -> None:
    image = CONTAINERS["registry"]["image"]
    repo, _, tag = image.rpartition(":")
    assert repo.endswith("registry") and tag.startswith("2.") and tag.count(".") == 2, image


def test_registry_listens_on_the_pod_loopback_only_and_auth_points_at_it() -> None:
    assert _env("registry")["REGISTRY_HTTP_ADDR"] == "127.0.0.1:5001"
    assert _env("auth")["MREG_UPSTREAM"] == "http://127.0.0.1:5001"
    assert "ports" not in CONTAINERS["registry"]


def test_registry_allows_deletes() -> None:
    assert _env("registry")["REGISTRY_STORAGE_DELETE_ENABLED"] == "true"


def test_registry_garbage_collects_before_serving_even_when_gc_fails() -> None:
    script = _script("registry")
    gc, serve = script.index("registry garbage-collect"), script.index("registry serve")
    assert gc < serve
    between = script[gc:serve]
    assert ";" in between and "&&" not in between, "GC exits 1 on empty storage: `;`, never `&&`"


def test_registry_never_deletes_untagged_manifests_with_the_broken_flag() -> None:
    words = _script("registry").replace(";", " ").split()
    assert "--delete-untagged" not in words and "-m" not in words
    assert not any(w.startswith("--delete-untagged") for w in words)


def test_auth_listens_on_5000_published_with_host_port_5000() -> None:
    (port,) = CONTAINERS["auth"]["ports"]
    assert port["containerPort"] == 5000 and port["hostPort"] == 5000
    assert _env("auth")["MREG_LISTEN"].endswith(":5000")


@pytest.mark.parametrize("probe", ["livenessProbe", "readinessProbe"])
def test_auth_probes_ask_healthz_and_readyz(probe: str) -> None:
    command = CONTAINERS["auth"][probe]["exec"]["command"]
    assert command[:3] == ["python3", "-m", "mreg_proxy.cli.probe"]
    assert command[3] == {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}[probe]


PROBES = [(c, p) for c in CONTAINERS for p in ("startupProbe", "livenessProbe", "readinessProbe")
          if p in CONTAINERS[c]]


@pytest.mark.parametrize(("container", "probe"), PROBES)
def test_probe_words_have_no_spaces_because_podman_4_3_joins_them(container: str, probe: str) -> None:
    command = CONTAINERS[container][probe]["exec"]["command"]
    assert all(" " not in word and "\n" not in word for word in command)


@pytest.mark.parametrize("probe", ["startupProbe", "livenessProbe", "readinessProbe"])
def test_registry_probes_ask_the_loopback_from_inside_the_pod(probe: str) -> None:
    command = CONTAINERS["registry"][probe]["exec"]["command"]
    assert command[-1] == "http://127.0.0.1:5001/v2/"


def test_garbage_collection_at_start_has_minutes_before_liveness_counts() -> None:
    startup = CONTAINERS["registry"]["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_auth_security_context_is_restrictive() -> None:
    sc = CONTAINERS["auth"]["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert POD["securityContext"]["fsGroup"] == sc["runAsGroup"], "the auth volume must be writable"


def test_registry_has_no_privilege_escalation_and_no_capabilities() -> None:
    sc = CONTAINERS["registry"]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]


def test_writable_paths_are_only_the_volumes() -> None:
    volumes = {v["name"]: v for v in POD["volumes"]}
    mounts = {
        c: {m["mountPath"]: m["name"] for m in CONTAINERS[c]["volumeMounts"] if not m.get("readOnly")}
        for c in CONTAINERS
    }
    assert set(mounts["auth"]) == {"/auth", "/tmp", "/run/mreg-gc"}
    assert set(mounts["registry"]) == {"/var/lib/mreg-registry", "/tmp", "/run/mreg-gc"}
    # the collector's folder is shared by the two containers, in memory
    assert "emptyDir" in volumes[mounts["auth"]["/run/mreg-gc"]]
    assert mounts["auth"]["/run/mreg-gc"] == mounts["registry"]["/run/mreg-gc"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v}
    assert claims == {d["metadata"]["name"] for d in DOCS if d["kind"] == "PersistentVolumeClaim"}
    for container in CONTAINERS.values():
        tmp = volumes[{m["mountPath"]: m["name"] for m in container["volumeMounts"]}["/tmp"]]
        assert "emptyDir" in tmp


def test_auth_container_settings_match_the_auth_volume() -> None:
    env = _env("auth")
    assert env["MREG_USERS_FILE"].startswith("/auth/")
    assert env["MREG_TLS_CERT"].startswith("/auth/") and env["MREG_TLS_KEY"].startswith("/auth/")


def test_images_are_not_pulled_when_present() -> None:
    assert {c["imagePullPolicy"] for c in CONTAINERS.values()} == {"IfNotPresent"}



CONTAINERFILE = (MANIFEST.parent / "Containerfile").read_text()


def _instructions(keyword: str) -> list[str]:
    return [line.split(None, 1)[1] for line in CONTAINERFILE.splitlines() if line.startswith(keyword + " ")]


def test_containerfile_base_defaults_to_the_official_python_slim_image() -> None:
    assert _instructions("ARG")[0] == "BASE_IMAGE=docker.io/library/python:3.11-slim"
    assert _instructions("FROM") == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]


def test_containerfile_runs_mreg_proxy_as_the_user_the_manifest_expects() -> None:
    (user,) = _instructions("USER")
    uid, _, gid = user.partition(":")
    sc = CONTAINERS["auth"]["securityContext"]
    assert (int(uid), int(gid)) == (sc["runAsUser"], sc["runAsGroup"]) and int(uid) != 0
    assert _instructions("ENTRYPOINT") == ['["mreg-proxy"]']


def test_the_bench_runs_the_proxy_with_the_image_environment() -> None:
    from bench.services import IMAGE_ENV

    final_stage = CONTAINERFILE.rsplit("\nFROM ", 1)[1]
    env = " ".join(line.strip(" \\") for line in final_stage.split("\nENV ", 1)[1].split("\n#", 1)[0].splitlines())
    settings = dict(item.split("=", 1) for item in env.split())
    assert settings["PYTHONMALLOC"] == "malloc"
    assert IMAGE_ENV.items() <= settings.items()


def test_containerfile_carries_oci_labels() -> None:
    assert "org.opencontainers.image.title=" in CONTAINERFILE
    assert "org.opencontainers.image.version=" in CONTAINERFILE


def test_no_service_links_in_the_environment_and_no_api_token() -> None:
    # A Service named mreg would inject MREG_PORT, MREG_SERVICE_HOST, ...: mreg-proxy's namespace.
    assert POD["enableServiceLinks"] is False
    assert POD["automountServiceAccountToken"] is False


# --- Pod Security "restricted" (kubernetes.io/docs/concepts/security/pod-security-standards) ----

RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}


def restricted_violations(pod: dict) -> list[str]:
    """Every control of the baseline and restricted profiles that the pod spec breaks, in words."""
    found = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            found.append(flag)
    pod_sc = pod.get("securityContext", {})
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            found.append(f"volume {volume['name']}: {sorted(kinds)}")
    if pod_sc.get("sysctls"):
        found.append("sysctls")
    for container in pod.get("initContainers", []) + pod["containers"]:
        name, sc = container["name"], container.get("securityContext", {})
        for port in container.get("ports", []):
            if port.get("hostPort"):
                found.append(f"{name}: hostPort {port['hostPort']}")
        if sc.get("privileged"):
            found.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation not false")
        capabilities = sc.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{name}: capabilities not dropped")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities added")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile {seccomp}")
        if sc.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount")
        if sc.get("seLinuxOptions", {}).get("type") not in (None, "", "container_t", "container_init_t", "container_kvm_t"):
            found.append(f"{name}: seLinuxOptions type")
    return found


def test_the_pod_meets_pod_security_restricted_but_for_the_published_port() -> None:
    """hostPort is how podman kube play publishes the port; on Kubernetes the Service does, and
    a cluster that enforces "restricted" needs it removed. Nothing else may break the profile."""
    assert restricted_violations(POD) == ["auth: hostPort 5000"]


def test_the_restricted_check_finds_what_it_looks_for() -> None:
    root = {"name": "x", "securityContext": {"runAsUser": 0, "privileged": True}, "ports": [{"hostPort": 1}]}
    found = restricted_violations({"containers": [root], "volumes": [{"name": "h", "hostPath": {"path": "/"}}]})
    assert len(found) == 8, found


def test_the_registry_runs_as_a_user_of_the_pod_group_on_a_path_the_image_does_not_own() -> None:
    sc = CONTAINERS["registry"]["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] not in (0, CONTAINERS["auth"]["securityContext"]["runAsUser"])
    assert sc["runAsGroup"] == POD["securityContext"]["fsGroup"]
    root = _env("registry")["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"]
    assert root != "/var/lib/registry", "the stock image's folder is root's: podman gives its owner to a new volume"
    assert {m["mountPath"] for m in CONTAINERS["registry"]["volumeMounts"]} >= {root}


@pytest.mark.parametrize("container", ["registry", "auth"])
def test_both_containers_have_a_memory_limit_above_their_request(container: str) -> None:
    resources = CONTAINERS[container]["resources"]
    mib = {"Mi": 1, "Gi": 1024}

    def parse(quantity: str) -> int:
        return int(quantity[:-2]) * mib[quantity[-2:]]

    assert parse(resources["limits"]["memory"]) > parse(resources["requests"]["memory"])


def test_auth_reads_the_registry_storage_read_only_where_the_registry_has_it() -> None:
    """Pulls are answered from the registry's files (MREG_REGISTRY_ROOT); only the registry writes."""
    root = _env("registry")["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"]
    assert _env("auth")["MREG_REGISTRY_ROOT"] == root
    registry_volume = {m["mountPath"]: m["name"] for m in CONTAINERS["registry"]["volumeMounts"]}[root]
    (mount,) = [m for m in CONTAINERS["auth"]["volumeMounts"] if m["name"] == registry_volume]
    assert mount["mountPath"] == root and mount["readOnly"] is True


def test_the_auth_image_gives_a_new_registry_volume_to_the_registry_user() -> None:
    """podman hands a new volume to the owner of the image's folder at the mount path (or to the
    container's user): whichever container mounts it first, the registry must own it."""
    root = _env("registry")["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"]
    registry = CONTAINERS["registry"]["securityContext"]
    assert f"install -d -o {registry['runAsUser']} -g {registry['runAsGroup']} -m 0755 {root}" in CONTAINERFILE
