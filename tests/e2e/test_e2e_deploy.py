"""End to end, as a user does it: build the auth image, `podman kube play mreg.yml`, manage users
and TLS with the CLIs inside the auth container, push and pull with podman and skopeo, restart,
and prove that garbage collection at start reclaims a deleted image and damages nothing tagged
(multi-arch indexes included), and that `prune` with the pod stopped reclaims untagged images.
Then the operator's paths: a seed-style htpasswd user imported with `manage-user import`, and the
redeploy command `mreg-pod` (restart twice in a row, a play before the build, a failed play).

One ordered flow: the steps share the pod and run in file order; once one fails, the later ones
are skipped with the name of the failed step. The harness (tests/e2e/conftest.py) cleans up.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import pytest

from harness import HOST, REGISTRY, TEST_IMAGES, Client, Cmd, Pod, http, make_tiny_image

# building the stand-in and auth images and playing the pod happen in the first test's setup
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

ADMIN, ADMIN_PW = "alice", "adm1n:pass with spaces"
READER, READER_PW = "bob", "r3ader-pass"
SEED_ADMIN, SEED_PW = "hwiwon", "seed:pass from htpasswd"  # a user of the httpd-based setup
DEPLOYMENT = "mreg"
REPO_REAL = f"{REGISTRY}/e2e/registry:2"
REPO_MULTI = f"{REGISTRY}/e2e/multi:1"
REPO_PLAIN = f"{REGISTRY}/e2e/plain:1"
REPO_DOOMED = f"{REGISTRY}/e2e/doomed:1"

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


@dataclass
class State:
    """What the steps learn and later steps check."""

    cert: Path | None = None  # the certificate the clients trust once TLS is on
    digests: dict[str, str] = field(default_factory=dict)  # repo:tag -> manifest digest at push
    platform_digests: dict[str, str] = field(default_factory=dict)  # arch -> platform manifest digest
    doomed_blobs: list[str] = field(default_factory=list)
    untagged: dict[str, str] = field(default_factory=dict)  # digest of an image that lost its tag -> repo
    untagged_blobs: list[str] = field(default_factory=list)
    kept_blobs: list[str] = field(default_factory=list)
    referrers: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, subject) -> referrer


@pytest.fixture(scope="module")
def state() -> State:
    return State()


@pytest.fixture(scope="module")
def admin(cmd: Cmd, client_dir: Path) -> Client:
    return Client(cmd, client_dir / "admin-auth.json")


@pytest.fixture(scope="module")
def reader(cmd: Cmd, client_dir: Path) -> Client:
    return Client(cmd, client_dir / "reader-auth.json")


# ------------------------------------------------------------------------------------------------
# helpers


def base_url(pod: Pod) -> str:
    return f"{pod.scheme}://{REGISTRY}"


def verify_of(state: State) -> bool | str:
    return str(state.cert) if state.cert else True


def registry_api(pod: Pod, state: State, path: str, *, method: str = "GET",
                 user: tuple[str, str] = (ADMIN, ADMIN_PW)) -> tuple[int, dict[str, str], bytes]:
    return http(f"{base_url(pod)}/v2/{path}", method=method, auth=user,
                headers={"Accept": MANIFEST_TYPES}, verify=verify_of(state))


def manifest(pod: Pod, state: State, repo: str, reference: str) -> tuple[str, dict, str]:
    """(digest computed from the bytes, parsed manifest, media type) as the registry serves it."""
    status, headers, body = registry_api(pod, state, f"{repo}/manifests/{reference}")
    assert status == 200, (repo, reference, status, body[:300])
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    assert headers.get("Docker-Content-Digest") == digest
    return digest, json.loads(body), headers["Content-Type"].split(";")[0]


def upload(pod: Pod, state: State, repo: str, data: bytes) -> str:
    """One blob through the registry API (POST, then PUT with the digest); its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers, _ = registry_api(pod, state, f"{repo}/blobs/uploads/", method="POST")
    assert status == 202
    location = urllib.parse.urlsplit(headers["Location"])
    status, _, body = http(f"{base_url(pod)}{location.path}?{location.query}&digest={digest}", method="PUT",
                           auth=(ADMIN, ADMIN_PW), headers={"Content-Type": "application/octet-stream"},
                           verify=verify_of(state), data=data)
    assert status == 201, body
    return digest


def attach(pod: Pod, state: State, repo: str, subject: str, subject_type: str) -> None:
    """A signature-style artifact whose subject is ``subject``, pushed by digest as oras attach does."""
    payload = f"signature of {subject}".encode()
    doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "artifactType": "application/vnd.example.signature.v1",
           "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": upload(pod, state, repo, b"{}"), "size": 2},
           "layers": [{"mediaType": "application/octet-stream", "digest": upload(pod, state, repo, payload), "size": len(payload)}],
           "subject": {"mediaType": subject_type, "digest": subject, "size": 1}}
    body = json.dumps(doc).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    status, headers, answer = http(f"{base_url(pod)}/v2/{repo}/manifests/{digest}", method="PUT", auth=(ADMIN, ADMIN_PW),
                                   headers={"Content-Type": doc["mediaType"]}, verify=verify_of(state), data=body)
    assert (status, headers.get("OCI-Subject")) == (201, subject), answer
    state.referrers[(repo, subject)] = digest
    index_digest, _, _ = manifest(pod, state, repo, "sha256-" + subject.removeprefix("sha256:"))
    state.kept_blobs += [digest, *blob_digests(doc), index_digest]


def assert_referrers_listed(pod: Pod, state: State) -> None:
    """Each referrer is listed by the referrers API, and its manifest is served."""
    assert state.referrers
    for (repo, subject), digest in state.referrers.items():
        status, _, body = registry_api(pod, state, f"{repo}/referrers/{subject}", user=(READER, READER_PW))
        assert status == 200 and [e["digest"] for e in json.loads(body)["manifests"]] == [digest]
        assert manifest(pod, state, repo, digest)[0] == digest


def blob_digests(doc: dict) -> list[str]:
    return [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]


def blob_dir(pod: Pod, digest: str) -> Path:
    algo, hexa = digest.split(":")
    return pod.volume_path("mreg-registry-data") / "docker/registry/v2/blobs" / algo / hexa[:2] / hexa


def split(ref: str) -> tuple[str, str]:
    path = ref.split("/", 1)[1]
    repo, _, tag = path.rpartition(":")
    return repo, tag


def skopeo_tls(state: State, prefix: str) -> list[str]:
    """skopeo's TLS flags: prefix "src"/"dest" for copy, "" for inspect/delete."""
    dash = f"--{prefix}-" if prefix else "--"
    if state.cert:
        return [f"{dash}cert-dir", str(state.cert.parent)]
    return [f"{dash}tls-verify=false"]


def pulled_digests(cmd: Cmd, ref: str) -> set[str]:
    """Manifest digests podman recorded for a pulled image (its RepoDigests, name@digest)."""
    out = cmd.podman("image", "inspect", ref, "--format", "{{json .RepoDigests}}").stdout
    return {entry.rpartition("@")[2] for entry in json.loads(out)}


def wait_for(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def assert_tagged_images_intact(pod: Pod, state: State) -> None:
    """Every tagged manifest has its digest, and every blob of it is stored."""
    for ref, digest in state.digests.items():
        if ref != REPO_DOOMED:
            assert manifest(pod, state, *split(ref))[0] == digest, ref
    assert not [d for d in state.kept_blobs if not blob_dir(pod, d).is_dir()]


def assert_index_pulls(reader: Client, cmd: Cmd, state: State, target: Path) -> None:
    """Each platform of the index, then the whole index, pull with the digests they were pushed with."""
    target.mkdir(parents=True, exist_ok=True)
    for arch, digest in state.platform_digests.items():
        cmd.run(["skopeo", "copy", "--override-arch", arch, "--src-authfile", str(reader.authfile),
                 *skopeo_tls(state, "src"), f"docker://{REPO_MULTI}", f"dir:{target / arch}"])
        assert "sha256:" + hashlib.sha256((target / arch / "manifest.json").read_bytes()).hexdigest() == digest
    cmd.run(["skopeo", "copy", "--all", "--src-authfile", str(reader.authfile), *skopeo_tls(state, "src"),
             f"docker://{REPO_MULTI}", f"dir:{target / 'all'}"])
    whole = "sha256:" + hashlib.sha256((target / "all" / "manifest.json").read_bytes()).hexdigest()
    assert whole == state.digests[REPO_MULTI]


# ------------------------------------------------------------------------------------------------
# 1. the pod as played


def test_01_proxy_asks_for_basic_credentials_on_v2(pod: Pod) -> None:
    status, headers, body = http(f"http://{REGISTRY}/v2/")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic ")
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"


def test_02_registry_listens_on_the_pod_loopback_only(pod: Pod, cmd: Cmd) -> None:
    # Same network namespace for both containers: the listening sockets of the whole pod.
    table = pod.exec("cat", "/proc/net/tcp").stdout.splitlines()[1:]
    listening = {(f[1].split(":")[0], int(f[1].split(":")[1], 16)) for f in (l.split() for l in table) if f[3] == "0A"}
    assert ("0100007F", 5001) in listening  # 127.0.0.1:5001
    assert [addr for addr, port in listening if port == 5001] == ["0100007F"]
    assert ("00000000", 5000) in listening  # the proxy, on every pod address
    infra = cmd.podman("pod", "inspect", pod.pod_name, "--format", "{{json .InfraConfig.PortBindings}}")
    assert set(json.loads(infra.stdout)) == {"5000/tcp"}


def test_03_auth_runs_as_non_root_on_a_read_only_root(pod: Pod) -> None:
    assert pod.exec("id", "-u").stdout.strip() != "0"
    assert pod.exec("touch", "/probe-write", check=False).returncode != 0
    assert pod.exec("python3", "-m", "mreg_proxy.cli.probe", "/readyz", check=False).returncode == 0


def test_03d_the_web_page_serves_its_login_form_with_its_key_on_the_auth_volume(pod: Pod) -> None:
    status, headers, body = http(f"http://{REGISTRY}/")
    assert status == 200 and b'name="password"' in body and headers["X-Frame-Options"] == "DENY"
    listed = pod.exec("stat", "-c", "%a %s", "/auth/ui-session.key").stdout.split()
    assert listed == ["600", "32"]


def test_03a_registry_runs_as_non_root_and_writes_its_volume(pod: Pod) -> None:
    """The stock registry image would run as root; the manifest runs it as 10002 (group 10001),
    and podman gives the new volume to that user (its mount path is not a folder of the image)."""
    ids = pod.exec("id", "-u", container=pod.registry).stdout.strip(), pod.exec("id", "-g", container=pod.registry).stdout.strip()
    assert ids == ("10002", "10001")
    pod.exec("sh", "-c", "touch /var/lib/mreg-registry/.w && rm /var/lib/mreg-registry/.w", container=pod.registry)


def test_03c_both_containers_run_under_their_memory_limit(pod: Pod, cmd: Cmd) -> None:
    for container in (pod.registry, pod.auth):
        limit = cmd.podman("inspect", container, "--format", "{{.HostConfig.Memory}}").stdout.strip()
        assert int(limit) > 0, container


def test_03b_podman_health_checks_from_the_liveness_probes_pass(pod: Pod, cmd: Cmd) -> None:
    """podman turns exec liveness probes into health checks (joining the words with spaces)."""
    for container in (pod.registry, pod.auth):
        assert cmd.podman("healthcheck", "run", container, check=False).returncode == 0, container


def test_04_registry_serves_although_gc_failed_on_the_empty_volume(pod: Pod) -> None:
    status, _, _ = http(f"http://{REGISTRY}/readyz")
    assert status == 200  # /readyz asks the registry


# ------------------------------------------------------------------------------------------------
# 2. users


def test_05_manage_user_add_reads_the_password_from_stdin(pod: Pod) -> None:
    pod.exec("manage-user", "add", ADMIN, input=ADMIN_PW + "\n")
    pod.exec("manage-user", "add", READER, input=READER_PW + "\n")
    listing = pod.exec("manage-user", "ls").stdout
    assert ADMIN in listing and READER in listing


def test_06_manage_user_toggle_makes_an_admin(pod: Pod) -> None:
    pod.exec("manage-user", "toggle", ADMIN)
    lines = pod.exec("manage-user", "ls").stdout.splitlines()
    (admin_line,) = [line for line in lines if ADMIN in line]
    (reader_line,) = [line for line in lines if READER in line]
    assert "admin" in admin_line.lower() and "admin" not in reader_line.lower()


def test_07_login_with_a_wrong_password_is_refused(pod: Pod, reader: Client) -> None:
    result = reader.login(READER, "wrong-password", check=False)
    assert result.returncode != 0
    assert not reader.authfile.exists() or READER not in reader.authfile.read_text()


# ------------------------------------------------------------------------------------------------
# 3. push and pull


def test_08_admin_logs_in_and_pushes_a_real_image(pod: Pod, admin: Client, cmd: Cmd, standins: dict,
                                                  state: State, client_dir: Path) -> None:
    admin.login(ADMIN, ADMIN_PW)
    digestfile = client_dir / "real.digest"
    cmd.podman("push", "--authfile", str(admin.authfile), "--tls-verify=false",
               "--digestfile", str(digestfile), standins["registry"], REPO_REAL)
    state.digests[REPO_REAL] = digestfile.read_text().strip()
    digest, _, _ = manifest(pod, state, *split(REPO_REAL))
    assert digest == state.digests[REPO_REAL]


def test_09_reader_pulls_with_podman(pod: Pod, reader: Client, cmd: Cmd, made_images: list,
                                     state: State) -> None:
    reader.login(READER, READER_PW)
    made_images.append(REPO_REAL)
    cmd.podman("pull", "--authfile", str(reader.authfile), "--tls-verify=false", REPO_REAL)
    assert pulled_digests(cmd, REPO_REAL) >= {state.digests[REPO_REAL]}


def test_10_reader_copies_with_skopeo_byte_for_byte(pod: Pod, reader: Client, cmd: Cmd, state: State,
                                                    client_dir: Path) -> None:
    target = client_dir / "skopeo-real"
    cmd.run(["skopeo", "copy", "--src-authfile", str(reader.authfile), *skopeo_tls(state, "src"),
             f"docker://{REPO_REAL}", f"dir:{target}"])
    pulled = "sha256:" + hashlib.sha256((target / "manifest.json").read_bytes()).hexdigest()
    assert pulled == state.digests[REPO_REAL]


def test_11_reader_push_is_refused(pod: Pod, reader: Client, cmd: Cmd, standins: dict) -> None:
    result = cmd.podman("push", "--authfile", str(reader.authfile), "--tls-verify=false",
                        standins["registry"], f"{REGISTRY}/e2e/by-reader:1", check=False)
    assert result.returncode != 0
    assert "denied" in (result.stdout + result.stderr).lower()
    status, _, _ = registry_api(pod, State(), "e2e/by-reader/tags/list", user=(READER, READER_PW))
    assert status == 404


def test_11b_a_grant_and_a_ci_token_set_with_podman_exec(pod: Pod, reader: Client, cmd: Cmd, standins: dict,
                                                         state: State) -> None:
    """The reader gets push on one repository of its own, a CI token may pull one image; both
    live, no restart. podman may try to mount the blobs from e2e/registry, which the reader may
    pull (its role): the push works either way."""
    pod.exec("manage-user", "grant", READER, "e2e/by-bob", "push")
    assert "e2e/by-bob=push" in pod.exec("manage-user", "ls").stdout
    cmd.podman("push", "--authfile", str(reader.authfile), "--tls-verify=false",
               standins["registry"], f"{REGISTRY}/e2e/by-bob:1")
    status, _, body = registry_api(pod, state, "e2e/by-bob/tags/list", user=(READER, READER_PW))
    assert status == 200 and json.loads(body)["tags"] == ["1"]
    explained = pod.exec("manage-user", "explain", READER, "e2e/by-bob").stdout
    assert explained.startswith(f"{READER} on e2e/by-bob: push (grant e2e/by-bob push)")

    created = pod.exec("manage-user", "token", "add", "e2e-ci", "--grant", "e2e/registry=pull").stdout
    secret = next(line.split(": ", 1)[1] for line in created.splitlines() if line.startswith("secret: "))
    inspect = ["skopeo", "inspect", "--tls-verify=false", "--creds", f"e2e-ci:{secret}",
               "--format", "{{.Digest}}", f"docker://{REPO_REAL}"]
    assert cmd.run(inspect).stdout.strip() == state.digests[REPO_REAL]
    refused = cmd.run([*inspect[:-1], f"docker://{REGISTRY}/e2e/by-bob:1"], check=False)
    assert refused.returncode != 0
    pod.exec("manage-user", "token", "rm", "e2e-ci")
    assert cmd.run(inspect, check=False).returncode != 0
    events = [line.split()[1] for line in pod.exec("manage-user", "audit").stdout.splitlines()]
    assert {"grant", "token_created", "token_removed", "manifest_pushed"} <= set(events)


# ------------------------------------------------------------------------------------------------
# 4. what garbage collection must keep and reclaim


def test_12_admin_pushes_a_multi_arch_index_a_plain_image_and_one_to_delete(
    pod: Pod, admin: Client, cmd: Cmd, made_images: list, state: State, run_id: str, e2e_dir: Path
) -> None:
    local_list = f"{TEST_IMAGES}multi:{run_id}"
    for arch in ("amd64", "arm64"):
        ref = f"{TEST_IMAGES}tiny-{arch}:{run_id}"
        make_tiny_image(cmd, e2e_dir, ref, arch=arch)
        made_images.append(ref)
    made_images.append(local_list)
    cmd.podman("manifest", "create", local_list)
    for arch in ("amd64", "arm64"):
        cmd.podman("manifest", "add", local_list, f"containers-storage:{TEST_IMAGES}tiny-{arch}:{run_id}")
    cmd.podman("manifest", "push", "--all", "--authfile", str(admin.authfile), "--tls-verify=false",
               local_list, f"docker://{REPO_MULTI}")
    for name, ref in (("plain", REPO_PLAIN), ("doomed", REPO_DOOMED)):
        local = f"{TEST_IMAGES}{name}:{run_id}"
        make_tiny_image(cmd, e2e_dir, local)
        made_images.append(local)
        cmd.podman("push", "--authfile", str(admin.authfile), "--tls-verify=false", local, ref)

    digest, index, media_type = manifest(pod, state, *split(REPO_MULTI))
    assert media_type in INDEX_TYPES
    state.digests[REPO_MULTI] = digest
    repo = split(REPO_MULTI)[0]
    for entry in index["manifests"]:
        state.platform_digests[entry["platform"]["architecture"]] = entry["digest"]
        _, platform, _ = manifest(pod, state, repo, entry["digest"])
        state.kept_blobs += [entry["digest"], *blob_digests(platform)]
    assert set(state.platform_digests) == {"amd64", "arm64"}
    state.kept_blobs.append(digest)
    for ref in (REPO_PLAIN, REPO_REAL):
        digest, doc, _ = manifest(pod, state, *split(ref))
        state.digests[ref] = digest
        state.kept_blobs += [digest, *blob_digests(doc)]
    digest, doc, _ = manifest(pod, state, *split(REPO_DOOMED))
    state.digests[REPO_DOOMED] = digest
    state.doomed_blobs = [digest, *blob_digests(doc)]
    assert not set(state.doomed_blobs) & set(state.kept_blobs), "the doomed image must share no blob"
    assert all(blob_dir(pod, d).is_dir() for d in state.doomed_blobs + state.kept_blobs)


def test_12b_an_overwritten_tag_and_a_deleted_tag_leave_untagged_images(
    pod: Pod, admin: Client, cmd: Cmd, made_images: list, state: State, run_id: str, e2e_dir: Path
) -> None:
    """What plain garbage-collect keeps forever; the prune init container must let it go."""
    moved = f"{REGISTRY}/e2e/moved:1"
    untag = f"{REGISTRY}/e2e/untag:1"
    pushed = {}
    for name, ref in (("moved-old", moved), ("moved-new", moved), ("untag", untag)):
        local = f"{TEST_IMAGES}{name}:{run_id}"
        make_tiny_image(cmd, e2e_dir, local)
        made_images.append(local)
        cmd.podman("push", "--authfile", str(admin.authfile), "--tls-verify=false", local, ref)
        digest, doc, _ = manifest(pod, state, *split(ref))
        pushed[name] = (digest, [digest, *blob_digests(doc)])
    state.digests[moved] = pushed["moved-new"][0]
    state.kept_blobs += pushed["moved-new"][1]
    repo, tag = split(untag)
    status, _, body = registry_api(pod, state, f"{repo}/manifests/{tag}", method="DELETE")
    assert status == 202, body
    assert registry_api(pod, state, f"{repo}/manifests/{tag}")[0] == 404
    for name in ("moved-old", "untag"):
        digest, blobs = pushed[name]
        repo = split(moved if name == "moved-old" else untag)[0]
        assert registry_api(pod, state, f"{repo}/manifests/{digest}")[0] == 200  # untagged, still stored
        state.untagged[digest] = repo
        state.untagged_blobs += blobs
    assert not set(state.untagged_blobs) & set(state.kept_blobs)
    assert all(blob_dir(pod, d).is_dir() for d in state.untagged_blobs)


def test_12c_admin_signs_the_plain_image_and_the_multi_arch_index(pod: Pod, state: State) -> None:
    """Referrers (OCI 1.1): GC at start and prune must keep them and their referrers index."""
    attach(pod, state, split(REPO_PLAIN)[0], state.digests[REPO_PLAIN], "application/vnd.oci.image.manifest.v1+json")
    attach(pod, state, split(REPO_MULTI)[0], state.digests[REPO_MULTI], manifest(pod, state, *split(REPO_MULTI))[2])
    assert_referrers_listed(pod, state)


def test_13_admin_deletes_an_image_with_skopeo_delete(pod: Pod, admin: Client, cmd: Cmd, state: State) -> None:
    """As the README says: `skopeo delete` resolves the tag and deletes the manifest by digest."""
    cmd.run(["skopeo", "delete", "--authfile", str(admin.authfile), *skopeo_tls(state, ""),
             f"docker://{REPO_DOOMED}"])
    repo, tag = split(REPO_DOOMED)
    for reference in (tag, state.digests[REPO_DOOMED]):
        assert registry_api(pod, state, f"{repo}/manifests/{reference}")[0] == 404


# ------------------------------------------------------------------------------------------------
# 5. TLS


def test_14_manage_tls_installs_the_certificate_from_mreg_gen_tls(pod: Pod, state: State, e2e_dir: Path) -> None:
    pod.exec("mkdir", "-p", "/tmp/mreg-gen-tls")
    pod.exec("mreg-gen-tls", HOST, "--days", "2", "--out", "/tmp/mreg-gen-tls")
    cert = pod.exec("cat", "/tmp/mreg-gen-tls/tls.crt").stdout
    key = pod.exec("cat", "/tmp/mreg-gen-tls/tls.key").stdout
    pod.exec("rm", "-rf", "/tmp/mreg-gen-tls")
    assert "BEGIN CERTIFICATE" in cert and "PRIVATE KEY" in key
    pod.exec("manage-tls", "cert", input=cert)
    pod.exec("manage-tls", "key", input=key)
    certs = e2e_dir / "certs.d"
    certs.mkdir(exist_ok=True)
    (certs / "ca.crt").write_text(cert)
    state.cert = certs / "ca.crt"

    def https_ready() -> bool:
        try:
            return http(f"https://{REGISTRY}/readyz", verify=str(state.cert), timeout=3)[0] == 200
        except OSError:
            return False

    wait_for(https_ready, "the proxy to serve HTTPS with the new certificate")
    pod.scheme = "https"


def test_15_plain_http_is_no_longer_served(pod: Pod) -> None:
    """Plain HTTP on the HTTPS port gets a 400 that says so, never registry content."""
    status, _, body = http(f"http://{REGISTRY}/v2/", auth=(READER, READER_PW), timeout=5)
    assert status == 400
    assert b"this port speaks HTTPS" in body


def test_16_a_client_that_does_not_trust_the_certificate_is_refused(pod: Pod, cmd: Cmd, client_dir: Path) -> None:
    result = cmd.podman("login", "--authfile", str(client_dir / "untrusting.json"), "--tls-verify=true",
                        "--cert-dir", str(client_dir), "--username", READER, "--password-stdin",
                        REGISTRY, input=READER_PW + "\n", check=False)
    assert result.returncode != 0
    assert "certificate" in result.stderr.lower() or "x509" in result.stderr.lower()


def test_17_clients_trusting_only_that_certificate_log_in_push_and_pull(
    pod: Pod, admin: Client, reader: Client, cmd: Cmd, state: State, client_dir: Path, made_images: list,
    run_id: str, e2e_dir: Path
) -> None:
    assert state.cert is not None
    for client in (admin, reader):
        client.tls_args = ["--tls-verify=true", "--cert-dir", str(state.cert.parent)]
    admin.login(ADMIN, ADMIN_PW)
    reader.login(READER, READER_PW)
    local = f"{TEST_IMAGES}over-tls:{run_id}"
    make_tiny_image(cmd, e2e_dir, local)
    made_images.append(local)
    ref = f"{REGISTRY}/e2e/over-tls:1"
    cmd.podman("push", "--authfile", str(admin.authfile), *admin.tls_args, local, ref)
    digest, doc, _ = manifest(pod, state, *split(ref))
    state.digests[ref] = digest
    state.kept_blobs += [digest, *blob_digests(doc)]
    target = client_dir / "skopeo-over-tls"
    cmd.run(["skopeo", "copy", "--src-authfile", str(reader.authfile), *skopeo_tls(state, "src"),
             f"docker://{ref}", f"dir:{target}"])
    assert "sha256:" + hashlib.sha256((target / "manifest.json").read_bytes()).hexdigest() == digest


def test_18_probes_pass_over_https(pod: Pod, cmd: Cmd) -> None:
    for path in ("/healthz", "/readyz"):
        assert pod.exec("python3", "-m", "mreg_proxy.cli.probe", path, check=False).returncode == 0
    assert cmd.podman("healthcheck", "run", pod.auth, check=False).returncode == 0


# ------------------------------------------------------------------------------------------------
# 6. restart: kube down + kube play, as after an upgrade or a reboot


def test_19_restart_keeps_users_and_tls(pod: Pod, reader: Client, state: State) -> None:
    pod.restart()
    assert pod.scheme == "https"
    status, _, _ = http(f"https://{REGISTRY}/v2/", auth=(READER, READER_PW), verify=str(state.cert))
    assert status == 200
    reader.login(READER, READER_PW)


def test_20_gc_at_start_removed_the_deleted_images_blobs(pod: Pod, state: State) -> None:
    gone = [d for d in state.doomed_blobs if blob_dir(pod, d).exists()]
    assert not gone, f"blobs of the deleted image still stored: {gone}"
    status, _, _ = registry_api(pod, state, f"{split(REPO_DOOMED)[0]}/manifests/{state.digests[REPO_DOOMED]}")
    assert status == 404


def test_21_gc_kept_every_blob_of_every_tagged_image(pod: Pod, state: State) -> None:
    missing = [d for d in state.kept_blobs if not blob_dir(pod, d).is_dir()]
    assert not missing


def test_22_every_tagged_image_keeps_its_digest(pod: Pod, state: State) -> None:
    assert_tagged_images_intact(pod, state)


def test_22b_gc_at_start_kept_the_referrers_and_their_index(pod: Pod, state: State) -> None:
    assert_referrers_listed(pod, state)


def test_23_every_platform_of_the_index_pulls_with_identical_digests(
    pod: Pod, reader: Client, cmd: Cmd, state: State, client_dir: Path
) -> None:
    assert_index_pulls(reader, cmd, state, client_dir / "after-restart")


def test_24_the_real_image_pulls_after_restart_over_https(
    pod: Pod, reader: Client, cmd: Cmd, state: State
) -> None:
    cmd.podman("rmi", "--force", REPO_REAL, check=False)
    cmd.podman("pull", "--authfile", str(reader.authfile), *reader.tls_args, REPO_REAL)
    assert pulled_digests(cmd, REPO_REAL) >= {state.digests[REPO_REAL]}


def test_25_podman_pod_restart_collects_garbage_too(
    pod: Pod, admin: Client, cmd: Cmd, state: State, made_images: list, run_id: str, e2e_dir: Path
) -> None:
    """The README's lighter way to get space back: `podman pod restart` reruns GC before serve."""
    local, ref = f"{TEST_IMAGES}doomed-too:{run_id}", f"{REGISTRY}/e2e/doomed-too:1"
    make_tiny_image(cmd, e2e_dir, local)
    made_images.append(local)
    admin.login(ADMIN, ADMIN_PW)
    cmd.podman("push", "--authfile", str(admin.authfile), *admin.tls_args, local, ref)
    repo, _ = split(ref)
    digest, doc, _ = manifest(pod, state, *split(ref))
    doomed = [digest, *blob_digests(doc)]
    assert registry_api(pod, state, f"{repo}/manifests/{digest}", method="DELETE")[0] == 202
    assert all(blob_dir(pod, d).is_dir() for d in doomed)
    cmd.podman("pod", "restart", pod.pod_name, timeout=120)
    pod.wait_ready()
    assert not [d for d in doomed if blob_dir(pod, d).exists()]
    assert not [d for d in state.kept_blobs if not blob_dir(pod, d).is_dir()]


# ------------------------------------------------------------------------------------------------
# 7. reclaiming untagged images: prune while the pod is stopped, then start it (GC at start)


def test_26_plain_gc_kept_the_untagged_images(pod: Pod, state: State) -> None:
    for digest, repo in state.untagged.items():
        assert registry_api(pod, state, f"{repo}/manifests/{digest}")[0] == 200
    assert all(blob_dir(pod, d).is_dir() for d in state.untagged_blobs)


def test_27_prune_with_the_pod_stopped_then_start_reclaims_them(pod: Pod, cmd: Cmd, auth_image: str) -> None:
    """The README's procedure, word for word but for the names."""
    cmd.podman("pod", "stop", pod.pod_name, timeout=120)
    out = cmd.podman("run", "--rm", "--user", "0", "--network", "none",
                     "-v", "mreg-registry-data:/var/lib/registry",
                     "--entrypoint", "python3", auth_image, "-m", "mreg_proxy.storage.prune", "--min-age", "0",
                     timeout=120)
    assert "2 untagged manifest(s) forgotten" in out.stderr
    cmd.podman("pod", "start", pod.pod_name, timeout=120)
    pod.wait_ready()


def test_28_untagged_images_are_gone_with_their_blobs(pod: Pod, state: State) -> None:
    for digest, repo in state.untagged.items():
        assert registry_api(pod, state, f"{repo}/manifests/{digest}")[0] == 404, f"{repo}@{digest}"
    assert not [d for d in state.untagged_blobs if blob_dir(pod, d).exists()]


def test_29_prune_kept_every_tagged_image_and_every_platform(
    pod: Pod, reader: Client, cmd: Cmd, state: State, client_dir: Path
) -> None:
    assert_tagged_images_intact(pod, state)
    assert_index_pulls(reader, cmd, state, client_dir / "after-prune")


def test_29b_prune_kept_the_referrers_of_tagged_images(pod: Pod, state: State) -> None:
    assert_referrers_listed(pod, state)


# ------------------------------------------------------------------------------------------------
# 8. moving in from the httpd-based setup: its htpasswd file and admin group, as they are


def test_30_manage_user_import_takes_a_seed_htpasswd_with_a_cost_13_y_hash(
    pod: Pod, cmd: Cmd, state: State, client_dir: Path, made_images: list, run_id: str, e2e_dir: Path
) -> None:
    """The migration guide's commands: the group file to /tmp, the htpasswd file on stdin."""
    y_hash = "$2y$" + bcrypt.hashpw(SEED_PW.encode(), bcrypt.gensalt(13)).decode()[4:]
    pod.exec("sh", "-c", "cat > /tmp/group", input=f"admin: {SEED_ADMIN}\n")
    out = pod.exec("manage-user", "import", "-", "--group-file", "/tmp/group",
                   input=f"{SEED_ADMIN}:{y_hash}\n").stdout
    pod.exec("rm", "/tmp/group")
    assert f"added {SEED_ADMIN} (admin)" in out
    assert state.cert is not None
    seed = Client(cmd, client_dir / "seed-auth.json", ["--tls-verify=true", "--cert-dir", str(state.cert.parent)])
    seed.login(SEED_ADMIN, SEED_PW)
    local, ref = f"{TEST_IMAGES}seed:{run_id}", f"{REGISTRY}/e2e/seed:1"
    make_tiny_image(cmd, e2e_dir, local)
    made_images.append(local)
    cmd.podman("push", "--authfile", str(seed.authfile), *seed.tls_args, local, ref)
    digest, doc, _ = manifest(pod, state, *split(ref))
    state.digests[ref] = digest
    state.kept_blobs += [digest, *blob_digests(doc)]


# ------------------------------------------------------------------------------------------------
# 9. mreg-pod: the redeploy command of the README, on this podman (4.3 on Debian 12)


def test_31_mreg_pod_restart_twice_in_a_row_keeps_users_tls_and_images(
    pod: Pod, reader: Client, state: State
) -> None:
    for _ in range(2):
        out = pod.mreg_pod("restart").stdout
        assert "reusing the volumes mreg-auth-data, mreg-registry-data" in out
        assert f"mreg is up: pod {pod.pod_name}, auth container {pod.auth}" in out
        assert pod.scheme == "https"
        reader.login(READER, READER_PW)
        assert_tagged_images_intact(pod, state)
    status, _, _ = http(f"https://{REGISTRY}/v2/", auth=(SEED_ADMIN, SEED_PW), verify=str(state.cert))
    assert status == 200


def test_32_mreg_pod_up_refuses_an_image_not_built_and_cleans_up_after_a_failed_play(
    pod: Pod, cmd: Cmd, reader: Client, state: State, run_id: str
) -> None:
    pod.mreg_pod("down")
    # What a newcomer gets from `podman kube play` before `podman build`: a failed pull and a
    # half-made pod that makes the next play fail with "pod already exists".
    unbuilt = pod.manifest_copy(claims=True, images={"auth": f"{TEST_IMAGES}never-built:{run_id}"})
    assert cmd.podman("kube", "play", str(unbuilt), check=False, timeout=300).returncode != 0
    leftovers = [name for name in (f"{DEPLOYMENT}-pod", f"{DEPLOYMENT}-pod-0")
                 if cmd.podman("pod", "exists", name, check=False).returncode == 0]
    refused = pod.mreg_pod("up", manifest=unbuilt, check=False)
    assert refused.returncode == 1
    assert f"the image {TEST_IMAGES}never-built:{run_id} is not built yet" in refused.stderr
    assert "run 'podman build --layers=false -t" in refused.stderr
    # A play that fails on the way (port 5000 taken) is cleaned up, the leftover of the first with it.
    with socket.socket() as taken:
        taken.bind((HOST, 5000))
        taken.listen()
        failed = pod.mreg_pod("up", check=False)
    assert failed.returncode == 1, failed.stdout
    assert "podman kube play failed" in failed.stderr and "removed what it left" in failed.stderr
    for name in leftovers:
        assert f"removing the pod {name}" in failed.stdout
    for name in (f"{DEPLOYMENT}-pod", f"{DEPLOYMENT}-pod-0"):
        assert cmd.podman("pod", "exists", name, check=False).returncode != 0
    assert "mreg is up" in pod.mreg_pod("up").stdout
    reader.login(READER, READER_PW)
    assert_tagged_images_intact(pod, state)
