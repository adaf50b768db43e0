"""The differential test of reads answered from the registry's storage (oci/reads.py).

The same reads go to the registry directly and through mreg (storage path on, on the registry's
own root directory). Whatever mreg answered from the files (its mreg_reads{source="storage"}
counter moved) must equal the registry's answer: status, every header but Date (and the Server
header mreg puts on every answer, forwarded ones too) and the body. Whatever mreg forwarded must
at least have the registry's status. Reads the storage path is meant to answer are marked, so that
a path that forwards everything cannot pass.

The registry and mreg are this module's own: the test deletes and garbage-collects.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest

from bench.services import registry_root, start_proxy, start_registry, stop
from helpers import make_user, require_tool
from live import ADMIN, READER, Mreg, Registry
from registry_calls import artifact, put_manifest, sha256, upload_blob
from mreg_proxy.storage.registry_files import MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, SCHEMA2

pytestmark = pytest.mark.timeout(600)

REPO, OTHER = "diff/app", "diff/other"
SCHEMA1 = ["application/vnd.docker.distribution.manifest.v1+prettyjws", "application/vnd.docker.distribution.manifest.v1+json"]
# The Accept values clients send for a manifest (one header, or one header per type)
ACCEPTS: dict[str, list[str]] = {
    "podman/skopeo": [OCI_MANIFEST, SCHEMA2, *SCHEMA1, MANIFEST_LIST, OCI_INDEX],  # containers/image
    "docker": [SCHEMA2, MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, SCHEMA1[0]],
    "containerd": [f"{SCHEMA2}, {MANIFEST_LIST}, {OCI_MANIFEST}, {OCI_INDEX}, */*"],
    "oras": [f"{SCHEMA2}, {MANIFEST_LIST}, {OCI_MANIFEST}, {OCI_INDEX}, application/vnd.oci.artifact.manifest.v1+json"],
    "q-values": [f"{OCI_MANIFEST};q=0.9 , {OCI_INDEX}; q=0.8"],
    "none": [],
    "nothing stored": ["application/json"],
}
SKIPPED = frozenset(("date", "server"))
STORAGE_COUNT = re.compile(rb'^mreg_reads_total\{source="storage"\} ([0-9.e+]+)$', re.M)


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def comparable(self) -> tuple[int, list[tuple[str, str]], bytes]:
        return self.status, sorted((k.lower(), v) for k, v in self.headers if k.lower() not in SKIPPED), self.body


def send(base: str, method: str, path: str, headers: list[tuple[str, str]]) -> Answer:
    """One request on a fresh connection, every header value sent as its own line."""
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        try:
            body = response.read()
        except http.client.IncompleteRead as short:  # registry 2.8's 416 announces the blob's length
            body = short.partial
        return Answer(response.status, response.getheaders(), body)
    finally:
        connection.close()


def auth(user: tuple[str, str]) -> tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode())


@dataclass
class Pair:
    registry: Registry
    mreg: Mreg
    answered: dict[str, int] = field(default_factory=lambda: {"storage": 0, "registry": 0})

    def storage_count(self) -> float:
        answer = send(self.mreg.url, "GET", "/metrics", [auth(ADMIN)])
        assert answer.status == 200, answer
        match = STORAGE_COUNT.search(answer.body)
        return float(match.group(1)) if match else 0.0

    def compare(self, method: str, path: str, headers: list[tuple[str, str]] | None = None, *, expect: str | None = None) -> Answer:
        """Send the read both ways; returns the registry's answer. ``expect``: who must answer."""
        headers = headers or []
        direct = send(self.registry.url, method, path, headers)
        before = self.storage_count()
        via = send(self.mreg.url, method, path, [*headers, auth(READER)])
        source = "storage" if self.storage_count() > before else "registry"
        self.answered[source] += 1
        where = f"{method} {path} {headers}"
        if source == "storage":
            assert via.comparable() == direct.comparable(), where
        else:
            assert via.status == direct.status, (where, via, direct)
        if expect is not None:
            assert source == expect, (where, direct.status)
        return direct


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("diff-registry")
    registry_service = start_registry(require_tool("docker-registry", "registry"), workdir)
    try:
        registry = Registry(registry_service.url, registry_root(workdir), workdir / "registry.yml")
        users = {u.name: u for u in (make_user(*ADMIN, role="admin"), make_user(*READER))}
        home = tmp_path_factory.mktemp("diff-mreg")
        proxy = start_proxy(registry.url, home, users, {"MREG_REGISTRY_ROOT": str(registry.root)})
        try:
            yield Pair(registry, Mreg(proxy.url.removeprefix("http://"), proxy.url))
        finally:
            stop(proxy.process)
    finally:
        stop(registry_service.process)


def descriptor(media_type: str, content: bytes, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": sha256(content), "size": len(content), **extra}


@dataclass
class Corpus:
    manifests: dict[str, str]  # tag -> digest
    kinds: dict[str, str]  # tag or digest -> what the registry reads the manifest as
    blobs: dict[str, str]  # what -> digest, all linked in REPO
    big: str  # a blob large enough for sendfile to take several turns
    foreign: str  # a blob linked in OTHER only


def push_image(mreg: Mreg, tag: str, media_type: str, config_type: str, layer_type: str, layers: list[bytes], **extra: object) -> str:
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    upload_blob(mreg, REPO, config)
    for layer in layers:
        upload_blob(mreg, REPO, layer)
    doc: dict[str, object] = {"schemaVersion": 2, "mediaType": media_type, "config": descriptor(config_type, config),
                              "layers": [descriptor(layer_type, layer) for layer in layers], **extra}
    if media_type == "":
        del doc["mediaType"]
    return put_manifest(mreg, REPO, tag, doc, media_type or OCI_MANIFEST)[2]


def push_index(mreg: Mreg, tag: str, media_type: str, children: list[tuple[str, str, str]]) -> str:
    """An index of ``children`` (digest, media type, architecture), already pushed."""
    manifests = []
    for digest, child_type, arch in children:
        child = send(mreg.url, "GET", f"/v2/{REPO}/manifests/{digest}", [auth(READER), ("Accept", child_type)])
        assert child.status == 200, child
        platform = {"architecture": arch, "os": "linux"}
        manifests.append({"mediaType": child_type, "digest": digest, "size": len(child.body), "platform": platform})
    doc: dict[str, object] = {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}
    if not media_type:  # as containers/image 5.23 writes them
        del doc["mediaType"]
    return put_manifest(mreg, REPO, tag, doc, media_type or OCI_INDEX)[2]


@pytest.fixture(scope="module")
def corpus(pair: Pair) -> Corpus:
    mreg = pair.mreg
    small = b"small layer " * 100
    big = hashlib.shake_256(b"big").digest(3 << 20)
    manifests = {
        "oci": push_image(mreg, "oci", OCI_MANIFEST, "application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar", [small, big]),
        "docker": push_image(mreg, "docker", SCHEMA2, "application/vnd.docker.container.image.v1+json", "application/vnd.docker.image.rootfs.diff.tar.gzip", [small]),
        "arm": push_image(mreg, "arm", OCI_MANIFEST, "application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar", [b"arm layer"]),
        "docker-arm": push_image(mreg, "docker-arm", SCHEMA2, "application/vnd.docker.container.image.v1+json", "application/vnd.docker.image.rootfs.diff.tar.gzip", [b"arm docker layer"]),
        "no-media-type": push_image(mreg, "no-media-type", "", "application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar", [b"untyped"]),
    }
    manifests["multi-oci"] = push_index(mreg, "multi-oci", OCI_INDEX, [(manifests["oci"], OCI_MANIFEST, "amd64"), (manifests["arm"], OCI_MANIFEST, "arm64")])
    manifests["untyped-index"] = push_index(mreg, "untyped-index", "", [(manifests["oci"], OCI_MANIFEST, "amd64")])
    manifests["multi-docker"] = push_index(mreg, "multi-docker", MANIFEST_LIST, [(manifests["docker"], SCHEMA2, "amd64"), (manifests["docker-arm"], SCHEMA2, "arm64")])
    signature, _ = artifact(mreg, REPO, manifests["oci"])
    manifests["signature"] = signature["_digest"]  # by digest only, with artifactType
    referrers_tag = f"sha256-{manifests['oci'].removeprefix('sha256:')}"  # the referrers index mreg keeps
    index = send(pair.registry.url, "HEAD", f"/v2/{REPO}/manifests/{referrers_tag}", [("Accept", OCI_INDEX)])
    assert index.status == 200, index
    manifests[referrers_tag] = dict(index.headers)["Docker-Content-Digest"]
    kinds: dict[str, str] = {}
    for tag, digest in manifests.items():
        kind = {"docker": SCHEMA2, "docker-arm": SCHEMA2, "multi-docker": MANIFEST_LIST, "multi-oci": OCI_INDEX,
                "untyped-index": "untyped index", referrers_tag: OCI_INDEX}.get(tag, OCI_MANIFEST)
        kinds[tag] = kinds[digest] = kind
    foreign = upload_blob(mreg, OTHER, b"only in the other repository")
    return Corpus(manifests, kinds, {"small": sha256(small), "big": sha256(big)}, sha256(big), foreign)


def manifest_path(reference: str, repo: str = REPO) -> str:
    return f"/v2/{repo}/manifests/{reference}"


def blob_path(digest: str, repo: str = REPO) -> str:
    return f"/v2/{repo}/blobs/{digest}"


def references(corpus: Corpus) -> Iterator[tuple[str, bool]]:
    """(reference, by_tag) of every manifest of the corpus."""
    for tag, digest in corpus.manifests.items():
        if tag != "signature":
            yield tag, True
        yield digest, False


OCI_TYPES = (OCI_MANIFEST, OCI_INDEX)


def expected(kind: str, client: str, by_tag: bool) -> str:
    """Who answers a manifest read, as registry 2.8's rules make it: the files whenever the
    registry sends the stored bytes, the registry for its 404s and schema 1 rewrites."""
    if kind == "untyped index":
        return "storage"  # an index without mediaType is sent whatever the request accepts
    if client in ("podman/skopeo", "docker", "containerd", "oras"):
        return "storage"  # every client's pull
    if client == "q-values" and kind in OCI_TYPES:
        return "storage"
    if kind in OCI_TYPES:
        return "registry"  # "OCI manifest found, but accept header does not support OCI manifests"
    return "registry" if by_tag else "storage"  # schema 1 rewrite by tag; as stored by digest


def test_manifests_by_tag_and_digest_for_every_client(pair: Pair, corpus: Corpus) -> None:
    for reference, by_tag in references(corpus):
        for client, accept in ACCEPTS.items():
            for method in ("HEAD", "GET"):
                headers = [("Accept", value) for value in accept]
                pair.compare(method, manifest_path(reference), headers, expect=expected(corpus.kinds[reference], client, by_tag))
    assert pair.answered["storage"] > 100, pair.answered


def test_conditional_manifest_reads(pair: Pair, corpus: Corpus) -> None:
    digest = corpus.manifests["oci"]
    for value in (f'"{digest}"', digest):
        for reference in ("oci", digest):
            answer = pair.compare("GET", manifest_path(reference), [("If-None-Match", value)], expect="storage")
            assert answer.status == 304
    other = f'"{corpus.manifests["docker"]}"'
    pair.compare("GET", manifest_path("oci"), [("If-None-Match", other), ("Accept", OCI_MANIFEST)], expect="storage")


def test_blobs_and_ranges(pair: Pair, corpus: Corpus) -> None:
    size = 3 << 20
    for digest in corpus.blobs.values():
        for method in ("HEAD", "GET"):
            assert pair.compare(method, blob_path(digest), expect="storage").status == 200
    big = blob_path(corpus.big)
    for value in ("bytes=0-99", "bytes=1000-1999", "bytes=-100", f"bytes={size - 10}-{size + 100}", "bytes=500-", "bytes=0-0"):
        for method in ("HEAD", "GET"):
            assert pair.compare(method, big, [("Range", value)], expect="storage").status == 206
    for value in (f"bytes={size}-", "bytes=10-5", "bytes=0-1,5-6", "bytes=abc"):
        pair.compare("GET", big, [("Range", value)], expect="registry")  # 416 and multipart: the registry's
    pair.compare("GET", big, [("If-None-Match", f'"{corpus.big}"')], expect="registry")
    pair.compare("GET", blob_path(corpus.foreign, OTHER), expect="storage")


def test_unknown_things_are_the_registrys_404(pair: Pair, corpus: Corpus) -> None:
    missing = "sha256:" + "0" * 64
    cases = [
        manifest_path("latest", "diff/nothing"), manifest_path("nope"), manifest_path(missing),
        blob_path(missing), blob_path(corpus.foreign),  # linked only in another repository
        blob_path(corpus.big, "diff/nothing"), manifest_path(corpus.manifests["oci"], OTHER),
    ]
    for path in cases:
        for method in ("HEAD", "GET"):
            assert pair.compare(method, path, [("Accept", OCI_MANIFEST)], expect="registry").status == 404


def delete(pair: Pair, path: str) -> None:
    answer = send(pair.mreg.url, "DELETE", path, [auth(ADMIN)])
    assert answer.status == 202, answer


def test_nothing_stale_after_deletes_and_gc(pair: Pair, corpus: Corpus) -> None:
    """Runs last in this module: it deletes what the other tests read."""
    accept = [("Accept", value) for value in ACCEPTS["podman/skopeo"]]
    # a tag delete (mreg's own: registry 2.8 cannot) leaves the other tags of the digest
    assert pair.compare("HEAD", manifest_path("arm"), accept, expect="storage").status == 200
    delete(pair, manifest_path("arm"))
    assert pair.compare("HEAD", manifest_path("arm"), accept, expect="registry").status == 404
    pair.compare("GET", manifest_path(corpus.manifests["arm"]), accept, expect="storage")
    # a manifest delete removes its revision link: by digest and by every tag
    docker = corpus.manifests["docker-arm"]
    delete(pair, manifest_path(docker))
    for reference in ("docker-arm", docker):
        assert pair.compare("GET", manifest_path(reference), accept, expect="registry").status == 404
    # a blob delete unlinks it from the repository
    delete(pair, blob_path(corpus.blobs["small"]))
    assert pair.compare("GET", blob_path(corpus.blobs["small"]), expect="registry").status == 404
    # garbage collection removes the data of what no manifest references any more
    arm_layer = sha256(b"arm docker layer")
    assert pair.compare("HEAD", blob_path(arm_layer), expect="storage").status == 200
    gc = subprocess.run(
        [require_tool("docker-registry", "registry"), "garbage-collect", str(pair.registry.config)],
        capture_output=True, text=True, timeout=120,
    )
    assert gc.returncode == 0, gc.stderr
    assert not (Path(pair.registry.root) / "docker/registry/v2/blobs/sha256" / arm_layer[7:9] / arm_layer[7:]).exists()
    assert pair.compare("HEAD", blob_path(arm_layer), expect="registry").status == 404
    assert pair.compare("GET", blob_path(corpus.big), expect="storage").status == 200  # still referenced
