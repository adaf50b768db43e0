"""OCI distribution 1.1 through mreg on registry 2.8: each case first as registry 2.8 answers it
alone ("before"), then through the proxy ("after"); referrers pushed as oras does, by raw requests."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Iterator

import pytest

from bench.services import start_proxy, start_registry, stop
from helpers import make_user, require_tool
from live import ADMIN, READER, Mreg, Registry, error_code, http
from mreg_proxy.spec.referrers_index import INDEX
from mreg_proxy.spec.names import ACCEPT_ALL, OCI_MANIFEST
from registry_calls import SIGNATURE, artifact, manifest_url, push_tiny, put_manifest, sha256, tag_list

pytestmark = pytest.mark.integration

SBOM = "application/vnd.example.sbom.v1"


def relative(location: str) -> str:
    """An upload Location as the path and query a client sends it back to (any host)."""
    url = urllib.parse.urlsplit(location)
    return f"{url.path}?{url.query}"


def post_upload(base: str, repo: str, auth: tuple[str, str] | None) -> str:
    status, headers, _ = http("POST", f"{base}/v2/{repo}/blobs/uploads/", auth=auth, headers={"Content-Length": "0"})
    assert status == 202
    return relative(headers["Location"])


def patch(base: str, target: str, data: bytes, content_range: str | None, auth: tuple[str, str] | None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/octet-stream"}
    if content_range is not None:
        headers["Content-Range"] = content_range
    return http("PATCH", base + target, auth=auth, headers=headers, data=data)


def referrers(mreg: Mreg, repo: str, digest: str, query: str = "", auth: tuple[str, str] = READER) -> tuple[int, dict[str, str], dict]:
    status, headers, body = http("GET", f"{mreg.url}/v2/{repo}/referrers/{digest}{query}", auth=auth)
    return status, headers, json.loads(body) if status == 200 else {"raw": body}


def fallback_index(mreg: Mreg, repo: str, digest: str) -> dict | None:
    status, _, body = http("GET", manifest_url(mreg, repo, "sha256-" + digest.removeprefix("sha256:")), auth=READER, headers={"Accept": INDEX})
    return json.loads(body) if status == 200 else None


def digests(index: dict) -> list[str]:
    return [entry["digest"] for entry in index["manifests"]]


# --- 1. malformed references ---

def test_malformed_digest_before_is_a_500(registry: Registry, mreg: Mreg) -> None:
    push_tiny(mreg, "oci/refs", ["v1"])
    status, _, body = http("GET", f"{registry.url}/v2/oci/refs/manifests/sha256:totallywrong")
    assert (status, error_code(body)) == (500, "UNKNOWN")


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_malformed_digest_after_is_digest_invalid(mreg: Mreg, method: str) -> None:
    push_tiny(mreg, "oci/refs", ["v1"])
    status, _, body = http(method, manifest_url(mreg, "oci/refs", "sha256:totallywrong"), auth=ADMIN)
    assert (status, error_code(body)) == (400, "DIGEST_INVALID")


def test_malformed_digest_head_is_a_400(mreg: Mreg) -> None:
    status, _, _ = http("HEAD", manifest_url(mreg, "oci/refs", "md5:abc"), auth=READER)
    assert status == 400


def test_malformed_tag_is_manifest_unknown(mreg: Mreg) -> None:
    status, _, body = http("GET", manifest_url(mreg, "oci/refs", ".INVALID_MANIFEST_NAME"), auth=READER)
    assert (status, error_code(body)) == (404, "MANIFEST_UNKNOWN")


def test_pushing_to_a_malformed_tag_is_tag_invalid(mreg: Mreg) -> None:
    status, _, body = http("PUT", manifest_url(mreg, "oci/refs", ".bad"), auth=ADMIN, data=b"{}", headers={"Content-Type": OCI_MANIFEST})
    assert (status, error_code(body)) == (400, "TAG_INVALID")


def test_valid_sha512_reference_goes_to_the_registry(mreg: Mreg) -> None:
    status, _, body = http("GET", manifest_url(mreg, "oci/refs", "sha512:" + "a" * 128), auth=READER)
    assert (status, error_code(body)) == (404, "MANIFEST_UNKNOWN")


# --- 2. out-of-order chunk ---

CHUNK1, CHUNK2 = b"a" * 20, b"b" * 22


def test_out_of_order_chunk_before_is_appended(registry: Registry) -> None:
    target = post_upload(registry.url, "oci/chunks", None)
    status, headers, _ = patch(registry.url, target, CHUNK2, "20-41", None)
    assert (status, headers["Range"]) == (202, "0-21")  # appended at 0: the upload is corrupt


def test_out_of_order_chunk_after_is_416_and_the_upload_goes_on(mreg: Mreg) -> None:
    target = post_upload(mreg.url, "oci/chunks", ADMIN)
    status, headers, body = patch(mreg.url, target, CHUNK2, "20-41", ADMIN)
    assert (status, headers["Range"], error_code(body)) == (416, "0-0", "BLOB_UPLOAD_INVALID")
    assert headers["Location"] == target
    status, headers, _ = patch(mreg.url, headers["Location"], CHUNK1, "0-19", ADMIN)
    assert (status, headers["Range"]) == (202, "0-19")
    status, headers, _ = patch(mreg.url, relative(headers["Location"]), CHUNK2, "20-41", ADMIN)
    assert (status, headers["Range"]) == (202, "0-41")
    digest = sha256(CHUNK1 + CHUNK2)
    status, _, _ = http("PUT", f"{mreg.url}{relative(headers['Location'])}&digest={digest}", auth=ADMIN, headers={"Content-Type": "application/octet-stream"}, data=b"")
    assert status == 201
    status, _, content = http("GET", f"{mreg.url}/v2/oci/chunks/blobs/{digest}", auth=READER)
    assert (status, content) == (200, CHUNK1 + CHUNK2)


def test_a_range_that_is_not_the_body_is_416(mreg: Mreg) -> None:
    target = post_upload(mreg.url, "oci/chunks", ADMIN)
    status, headers, _ = patch(mreg.url, target, CHUNK1, "0-29", ADMIN)
    assert (status, headers["Range"]) == (416, "0-0")


def test_a_malformed_content_range_is_416(mreg: Mreg) -> None:
    target = post_upload(mreg.url, "oci/chunks", ADMIN)
    status, _, _ = patch(mreg.url, target, CHUNK1, "bytes=zero-19", ADMIN)
    assert status == 416


def test_a_streamed_chunk_without_content_range_is_forwarded(mreg: Mreg) -> None:
    target = post_upload(mreg.url, "oci/chunks", ADMIN)
    status, headers, _ = patch(mreg.url, target, CHUNK1, None, ADMIN)
    assert (status, headers["Range"]) == (202, "0-19")


# --- 3. a retried chunk on the stale URL, 4. a status GET on the stale URL ---

def test_stale_url_before_is_404(registry: Registry) -> None:
    first = post_upload(registry.url, "oci/stale", None)
    status, _, _ = patch(registry.url, first, CHUNK1, "0-19", None)
    assert status == 202
    status, _, body = patch(registry.url, first, CHUNK1, "0-19", None)
    assert (status, error_code(body)) == (404, "BLOB_UPLOAD_INVALID")
    status, _, _ = http("GET", registry.url + first)
    assert status == 404


def test_stale_url_after_is_416_then_204_and_the_upload_completes(mreg: Mreg) -> None:
    first = post_upload(mreg.url, "oci/stale", ADMIN)
    status, headers, _ = patch(mreg.url, first, CHUNK1, "0-19", ADMIN)
    assert status == 202
    latest = relative(headers["Location"])
    # 3. the client retries the chunk it already sent, with the URL it sent it to
    status, headers, _ = patch(mreg.url, first, CHUNK1, "0-19", ADMIN)
    assert (status, headers["Range"], headers["Location"]) == (416, "0-19", latest)
    # 4. it asks where the upload stands, with that stale URL: the registry's own answer
    status, headers, _ = http("GET", mreg.url + first, auth=ADMIN)
    assert (status, headers["Range"]) == (204, "0-19")
    assert relative(headers["Location"]).startswith("/v2/oci/stale/blobs/uploads/")
    status, headers, _ = patch(mreg.url, relative(headers["Location"]), CHUNK2, "20-41", ADMIN)
    assert (status, headers["Range"]) == (202, "0-41")
    digest = sha256(CHUNK1 + CHUNK2)
    status, _, _ = http("PUT", f"{mreg.url}{relative(headers['Location'])}&digest={digest}", auth=ADMIN, headers={"Content-Type": "application/octet-stream"}, data=b"")
    assert status == 201  # the retried chunk never reached the registry: the digest matches


def test_a_forged_state_is_judged_by_the_registry(mreg: Mreg) -> None:
    """A state claiming a larger offset is not believed into skipping anything: the registry,
    which holds the HMAC secret, refuses the request."""
    import base64

    target = post_upload(mreg.url, "oci/stale", ADMIN)
    path, _, query = target.partition("?")
    token = urllib.parse.parse_qs(query)["_state"][0]
    raw = base64.urlsafe_b64decode(token)
    doc = json.loads(raw[32:])
    doc["Offset"] = 1000
    forged = base64.urlsafe_b64encode(raw[:32] + json.dumps(doc).encode()).decode()
    status, _, body = patch(mreg.url, f"{path}?_state={urllib.parse.quote(forged)}", CHUNK1, "1000-1019", ADMIN)
    assert status == 404 and error_code(body) in ("BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN")


# --- 5. OCI-Subject, 6. the referrers API ---

def test_subject_before_has_no_oci_subject_and_no_referrers_api(registry: Registry, mreg: Mreg) -> None:
    subject = push_tiny(mreg, "oci/before", ["v1"])
    doc, _ = artifact(mreg, "oci/before", subject)
    body = json.dumps({k: v for k, v in doc.items() if k != "_digest"}).encode()
    status, headers, _ = http("PUT", f"{registry.url}/v2/oci/before/manifests/again", data=body, headers={"Content-Type": OCI_MANIFEST})
    assert status == 201 and "OCI-Subject" not in headers
    status, _, text = http("GET", f"{registry.url}/v2/oci/before/referrers/{subject}")
    assert (status, text) == (404, b"404 page not found\n")


@pytest.fixture(scope="module")
def signed(mreg: Mreg) -> tuple[str, str, dict, dict, str]:
    """An image with a signature and an SBOM: (repo, image digest, signature, sbom, OCI-Subject)."""
    repo = "oci/signed"
    subject = push_tiny(mreg, repo, ["v1"])
    signature, oci_subject = artifact(mreg, repo, subject, note="sig")
    sbom, _ = artifact(mreg, repo, subject, kind=SBOM, note="sbom")
    return repo, subject, signature, sbom, oci_subject


def test_subject_after_answers_oci_subject(signed: tuple[str, str, dict, dict, str]) -> None:
    _, subject, _, _, oci_subject = signed
    assert oci_subject == subject


def test_referrers_lists_every_referrer_with_its_descriptor(signed: tuple[str, str, dict, dict, str], mreg: Mreg) -> None:
    repo, subject, signature, sbom, _ = signed
    status, headers, index = referrers(mreg, repo, subject)
    assert status == 200 and headers["Content-Type"] == INDEX and "OCI-Filters-Applied" not in headers
    assert (index["schemaVersion"], index["mediaType"]) == (2, INDEX)
    by_digest = {entry["digest"]: entry for entry in index["manifests"]}
    assert set(by_digest) == {signature["_digest"], sbom["_digest"]}
    entry = by_digest[signature["_digest"]]
    body = json.dumps({k: v for k, v in signature.items() if k != "_digest"}).encode()
    assert entry == {"mediaType": OCI_MANIFEST, "digest": signature["_digest"], "size": len(body),
                     "artifactType": SIGNATURE, "annotations": signature["annotations"]}


def test_referrers_filter_by_artifact_type(signed: tuple[str, str, dict, dict, str], mreg: Mreg) -> None:
    repo, subject, _, sbom, _ = signed
    status, headers, index = referrers(mreg, repo, subject, f"?artifactType={urllib.parse.quote(SBOM)}")
    assert (status, headers["OCI-Filters-Applied"], digests(index)) == (200, "artifactType", [sbom["_digest"]])


def test_referrers_are_in_the_fallback_tag(signed: tuple[str, str, dict, dict, str], mreg: Mreg) -> None:
    repo, subject, signature, sbom, _ = signed
    index = fallback_index(mreg, repo, subject)
    assert index is not None and sorted(digests(index)) == sorted([signature["_digest"], sbom["_digest"]])
    assert "sha256-" + subject.removeprefix("sha256:") in tag_list(mreg, repo)


def test_referrers_of_an_unknown_digest_is_an_empty_index(mreg: Mreg) -> None:
    push_tiny(mreg, "oci/signed", ["v1"])
    status, _, index = referrers(mreg, "oci/signed", "sha256:" + "0" * 64)
    assert (status, index["manifests"], index["mediaType"]) == (200, [], INDEX)


def test_referrers_of_a_malformed_digest_is_digest_invalid(mreg: Mreg) -> None:
    status, _, body = referrers(mreg, "oci/signed", "sha256:nope")
    assert (status, error_code(body["raw"])) == (400, "DIGEST_INVALID")


def test_readers_list_referrers_but_cannot_push_them(signed: tuple[str, str, dict, dict, str], mreg: Mreg) -> None:
    repo, subject, _, _, _ = signed
    assert referrers(mreg, repo, subject, auth=READER)[0] == 200
    status, _, body = http("PUT", manifest_url(mreg, repo, "sig"), auth=READER, data=b"{}", headers={"Content-Type": OCI_MANIFEST})
    assert (status, error_code(body)) == (403, "DENIED")


def test_an_index_a_client_wrote_itself_is_merged(mreg: Mreg) -> None:
    """oras and notation keep the fallback tag themselves on registries without the API."""
    repo = "oci/merge"
    subject = push_tiny(mreg, repo, ["v1"])
    theirs = push_tiny(mreg, repo, ["theirs"], seed="a client's own referrer")
    tag = "sha256-" + subject.removeprefix("sha256:")
    put_manifest(mreg, repo, tag, {"schemaVersion": 2, "mediaType": INDEX, "annotations": {"by": "client"},
                                   "manifests": [{"mediaType": OCI_MANIFEST, "digest": theirs, "size": 1}]}, INDEX)
    ours, _ = artifact(mreg, repo, subject)
    index = fallback_index(mreg, repo, subject)
    assert index is not None and digests(index) == [theirs, ours["_digest"]]
    assert index["annotations"] == {"by": "client"}


def test_referrers_of_a_multi_arch_index(mreg: Mreg, tmp_path: Path) -> None:
    from imagegen import make_oci_index_layout
    from live import run

    skopeo = require_tool("skopeo")
    repo = "oci/multiarch"
    make_oci_index_layout(tmp_path / "layout", ["linux/amd64", "linux/arm64"])
    result = run([skopeo, "copy", "--all", "--dest-tls-verify=false", "--dest-creds", ":".join(ADMIN),
                  f"oci:{tmp_path / 'layout'}:latest", f"docker://{mreg.host}/{repo}:v1"])
    assert result.returncode == 0, result.stderr
    status, _, body = http("GET", manifest_url(mreg, repo, "v1"), auth=READER, headers={"Accept": ACCEPT_ALL})
    index_digest = sha256(body)
    platform = json.loads(body)["manifests"][0]["digest"]
    on_index, _ = artifact(mreg, repo, index_digest, INDEX, note="index")
    on_platform, _ = artifact(mreg, repo, platform, note="platform")
    assert digests(referrers(mreg, repo, index_digest)[2]) == [on_index["_digest"]]
    assert digests(referrers(mreg, repo, platform)[2]) == [on_platform["_digest"]]


def test_deleting_a_referrer_drops_it_from_the_index(mreg: Mreg) -> None:
    repo = "oci/delete"
    subject = push_tiny(mreg, repo, ["v1"])
    doomed, _ = artifact(mreg, repo, subject, note="doomed")
    kept, _ = artifact(mreg, repo, subject, note="kept")
    status, _, _ = http("DELETE", manifest_url(mreg, repo, doomed["_digest"]), auth=ADMIN)
    assert status == 202
    assert digests(referrers(mreg, repo, subject)[2]) == [kept["_digest"]]
    index = fallback_index(mreg, repo, subject)
    assert index is not None and digests(index) == [kept["_digest"]]


def test_a_referrer_deleted_behind_the_proxy_does_not_block_the_index(registry: Registry, mreg: Mreg) -> None:
    repo = "oci/behind"
    subject = push_tiny(mreg, repo, ["v1"])
    gone, _ = artifact(mreg, repo, subject, note="gone")
    status, _, _ = http("DELETE", f"{registry.url}/v2/{repo}/manifests/{gone['_digest']}")  # not through mreg
    assert status == 202
    new, oci_subject = artifact(mreg, repo, subject, note="new")
    assert oci_subject == subject
    assert digests(referrers(mreg, repo, subject)[2]) == [new["_digest"]]


# --- restart ---

@pytest.fixture
def own_pair(tmp_path: Path) -> Iterator[tuple[Path, list]]:
    """A registry and a proxy of this test only, restartable on the same storage."""
    services: list = []
    yield tmp_path, services
    for service in reversed(services):
        stop(service.process)


def test_restart_keeps_the_index(own_pair: tuple[Path, list]) -> None:
    workdir, services = own_pair
    binary = require_tool("docker-registry", "registry")
    users = {u.name: u for u in (make_user(*ADMIN, role="admin"), make_user(*READER))}

    def start() -> Mreg:
        registry = start_registry(binary, workdir / "registry")
        services.append(registry)
        proxy = start_proxy(registry.url, workdir / "mreg", users)
        services.append(proxy)
        return Mreg(proxy.url.removeprefix("http://"), proxy.url)

    (workdir / "registry").mkdir()
    (workdir / "mreg").mkdir()
    first = start()
    subject = push_tiny(first, "oci/restart", ["v1"])
    signature, _ = artifact(first, "oci/restart", subject)
    for service in reversed(services):
        stop(service.process)
    services.clear()
    second = start()
    assert digests(referrers(second, "oci/restart", subject)[2]) == [signature["_digest"]]


def test_a_manifest_beyond_4_mib_is_refused_by_the_proxy(mreg: Mreg) -> None:
    big = json.dumps({"schemaVersion": 2, "padding": "x" * (4 << 20)}).encode()
    status, _, body = http("PUT", manifest_url(mreg, "oci/big", "v1"), auth=ADMIN, data=big, headers={"Content-Type": OCI_MANIFEST})
    assert (status, error_code(body)) == (413, "MANIFEST_INVALID")


def test_head_on_referrers_has_the_headers_and_no_body(signed: tuple[str, str, dict, dict, str], mreg: Mreg) -> None:
    repo, subject, _, _, _ = signed
    status, headers, body = http("HEAD", f"{mreg.url}/v2/{repo}/referrers/{subject}", auth=READER)
    assert (status, headers["Content-Type"], body) == (200, INDEX, b"")


def test_a_fallback_tag_holding_something_else_is_left_alone(mreg: Mreg) -> None:
    """The index is not written over a tag that holds no index: the push succeeds without
    OCI-Subject, which tells the client to keep its referrers itself."""
    repo = "oci/occupied"
    subject = push_tiny(mreg, repo, ["v1"])
    occupant = push_tiny(mreg, repo, ["sha256-" + subject.removeprefix("sha256:")], seed="an image, not an index")
    _, oci_subject = artifact(mreg, repo, subject)
    assert oci_subject == ""
    status, _, body = http("GET", manifest_url(mreg, repo, "sha256-" + subject.removeprefix("sha256:")), auth=READER, headers={"Accept": ACCEPT_ALL})
    assert (status, sha256(body)) == (200, occupant)
    assert referrers(mreg, repo, subject)[:1] == (200,)


def test_pushing_a_referrer_again_leaves_the_index_as_it_is(mreg: Mreg) -> None:
    repo = "oci/again"
    subject = push_tiny(mreg, repo, ["v1"])
    first, _ = artifact(mreg, repo, subject, note="first")
    second, _ = artifact(mreg, repo, subject, note="second")
    tag = "sha256-" + subject.removeprefix("sha256:")
    before = http("HEAD", manifest_url(mreg, repo, tag), auth=READER, headers={"Accept": INDEX})[1]["Docker-Content-Digest"]
    _, oci_subject = artifact(mreg, repo, subject, note="first")  # the same manifest once more
    after = http("HEAD", manifest_url(mreg, repo, tag), auth=READER, headers={"Accept": INDEX})[1]["Docker-Content-Digest"]
    assert (oci_subject, after) == (subject, before)
    assert digests(referrers(mreg, repo, subject)[2]) == [first["_digest"], second["_digest"]]
