"""storage/registry_files.py: the pure decisions as tables, the Reader on a registry tree made by hand."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from mreg_proxy.storage import registry_files as reads
from mreg_proxy.storage.registry_files import (
    MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, SCHEMA2, UNTYPED_INDEX, WHOLE, ByteRange, Reader, accepted, digest_hex,
    manifest_kind, parse_link, parse_range, serves_as_stored,
)

HEX = "a" * 64
PODMAN = [f"{OCI_INDEX}, {OCI_MANIFEST}, {SCHEMA2}, {MANIFEST_LIST}, application/vnd.docker.distribution.manifest.v1+prettyjws"]
SKOPEO = [OCI_MANIFEST, OCI_INDEX, SCHEMA2, MANIFEST_LIST]  # one header per type


def test_paths_are_distributions_layout() -> None:
    assert reads.tag_link("a/b", "v1") == "repositories/a/b/_manifests/tags/v1/current/link"
    assert reads.revision_link("a/b", HEX) == f"repositories/a/b/_manifests/revisions/sha256/{HEX}/link"
    assert reads.layer_link("a/b", HEX) == f"repositories/a/b/_layers/sha256/{HEX}/link"
    assert reads.blob_data(HEX) == f"blobs/sha256/aa/{HEX}/data"


@pytest.mark.parametrize("name, tag", [("../x", "v1"), ("a/../b", "v1"), ("A", "v1"), ("a", ".."), ("a", "a/b"), ("", "v1")])
def test_no_path_outside_the_grammar(name: str, tag: str) -> None:
    assert reads.tag_link(name, tag) is None


@pytest.mark.parametrize("content, expected", [
    (f"sha256:{HEX}".encode(), HEX),
    (b"", None),  # being rewritten
    (f"sha256:{HEX[:10]}".encode(), None),  # half written
    (f"sha256:{HEX}\n".encode(), None),
    (f"sha512:{'a' * 128}".encode(), None),  # another algorithm: the registry's to answer
    (f"sha256:{HEX.upper()}".encode(), None),
    (b"\xff\xfe", None),
])
def test_parse_link(content: bytes, expected: str | None) -> None:
    assert parse_link(content) == expected


def test_digest_hex() -> None:
    assert digest_hex(f"sha256:{HEX}") == HEX
    assert digest_hex("latest") is None and digest_hex(f"sha384:{HEX}") is None


@pytest.mark.parametrize("values, expected", [
    ([], frozenset()),
    (PODMAN, {OCI_INDEX, OCI_MANIFEST, SCHEMA2, MANIFEST_LIST, "application/vnd.docker.distribution.manifest.v1+prettyjws"}),
    (SKOPEO, {OCI_MANIFEST, OCI_INDEX, SCHEMA2, MANIFEST_LIST}),
    ([f"{OCI_MANIFEST};q=0.5 ,  {SCHEMA2} ; q=1"], {OCI_MANIFEST, SCHEMA2}),
    (["*/*"], {"*/*"}),
    ([f"\t{OCI_MANIFEST}\x0b"], {f"{OCI_MANIFEST}\x0b"}),  # fewer than Go, never more
])
def test_accepted(values: list[str], expected: set[str]) -> None:
    assert accepted(values) == expected


def manifest(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize("content, expected", [
    (manifest(schemaVersion=2, mediaType=OCI_MANIFEST, config={}, layers=[]), OCI_MANIFEST),
    (manifest(schemaVersion=2, mediaType=SCHEMA2, config={}, layers=[]), SCHEMA2),
    (manifest(schemaVersion=2, mediaType=OCI_INDEX, manifests=[]), OCI_INDEX),
    (manifest(schemaVersion=2, mediaType=MANIFEST_LIST, manifests=[]), MANIFEST_LIST),
    (manifest(schemaVersion=2, mediaType=OCI_MANIFEST, artifactType="x/y", config={}, layers=[]), OCI_MANIFEST),
    (manifest(schemaVersion=2, config={}, layers=[]), OCI_MANIFEST),  # no mediaType (podman, skopeo)
    (manifest(schemaVersion=2, manifests=[]), UNTYPED_INDEX),  # no mediaType, a manifests list
    (manifest(schemaVersion=2, manifests=[], layers=[]), None),  # refused by 2.8.2
    (manifest(schemaVersion=2, manifests=None, config={}), None),  # null: left to the registry
    (manifest(schemaVersion=2, Manifests=[], config={}), None),  # another spelling Go would match
    (manifest(schemaVersion=2, mediaType=None, config={}), None),
    (manifest(schemaVersion=1, name="x"), None),  # schema 1
    (manifest(schemaVersion=2.0, mediaType=OCI_MANIFEST), None),  # Go refuses 2.0 for an int
    (manifest(schemaVersion=2, mediaType="text/plain"), None),
    (manifest(schemaVersion=2, mediaType=OCI_MANIFEST, manifests=[]), None),  # confusion: refused by 2.8.2
    (manifest(schemaVersion=2, mediaType=OCI_INDEX, layers=[]), None),
    (manifest(schemaVersion=2, mediaType=OCI_MANIFEST, MediaType=OCI_INDEX), None),  # Go: any case matches
    (b'{"schemaVersion": 2, "mediaType": "%s", "x": NaN}' % OCI_MANIFEST.encode(), None),
    (b"\xef\xbb\xbf" + manifest(schemaVersion=2, mediaType=OCI_MANIFEST), None),  # byte order mark
    (b"[]", None),
    (b"{", None),
])
def test_manifest_kind(content: bytes, expected: str | None) -> None:
    assert manifest_kind(content) == expected


def test_content_type() -> None:
    assert reads.content_type(UNTYPED_INDEX) == OCI_INDEX
    assert reads.content_type(SCHEMA2) == SCHEMA2


@pytest.mark.parametrize("media_type, accepts, by_tag, expected", [
    (OCI_MANIFEST, {OCI_MANIFEST}, True, True),
    (OCI_MANIFEST, {SCHEMA2}, True, False),  # 404 "accept header does not support OCI manifests"
    (OCI_MANIFEST, set(), False, False),  # by digest too
    (OCI_INDEX, {OCI_MANIFEST}, False, False),
    (OCI_INDEX, {OCI_INDEX}, True, True),
    (SCHEMA2, set(), True, False),  # rewritten into schema 1
    (SCHEMA2, set(), False, True),  # by digest: as stored
    (SCHEMA2, {SCHEMA2}, True, True),
    (MANIFEST_LIST, {SCHEMA2}, True, False),  # rewritten: the linux/amd64 image in schema 1
    (MANIFEST_LIST, set(), False, True),
    (MANIFEST_LIST, {MANIFEST_LIST}, True, True),
    (UNTYPED_INDEX, set(), True, True),  # neither a Docker list nor an OCI index to GetManifest
    (UNTYPED_INDEX, {"application/json"}, False, True),
])
def test_serves_as_stored(media_type: str, accepts: set[str], by_tag: bool, expected: bool) -> None:
    assert serves_as_stored(media_type, frozenset(accepts), by_tag=by_tag) is expected


@pytest.mark.parametrize("values, size, expected", [
    ([], 100, WHOLE),
    ([""], 100, WHOLE),
    (["bytes=0-9"], 100, ByteRange(0, 10)),
    (["bytes=10-"], 100, ByteRange(10, 90)),
    (["bytes=90-200"], 100, ByteRange(90, 10)),  # clipped at the end
    (["bytes=-5"], 100, ByteRange(95, 5)),
    (["bytes=-500"], 100, ByteRange(0, 100)),
    (["bytes=0-9", "bytes=20-29"], 100, ByteRange(0, 10)),  # Go reads the first value
    (["bytes=100-"], 100, None),  # 416
    (["bytes=9-3"], 100, None),  # 416
    (["bytes=-0"], 100, None),
    (["bytes=0-1,5-6"], 100, None),  # multipart: a random boundary
    (["bytes= 0-1"], 100, None),
    (["bytes=+1-2"], 100, None),
    (["bytes=abc"], 100, None),
    (["items=0-1"], 100, None),
    (["bytes=99999999999999999999-"], 100, None),  # past int64: Go's error
    (["bytes=0-"], 0, None),  # an empty blob: 416
])
def test_parse_range(values: list[str], size: int, expected: ByteRange | None) -> None:
    assert parse_range(values, size) == expected


def test_content_range() -> None:
    assert ByteRange(10, 5).content_range(100) == "bytes 10-14/100"


class Tree:
    """A registry storage tree written the way the filesystem driver writes it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.base = root / reads.V2

    def write(self, relative: str | None, content: bytes) -> None:
        assert relative is not None
        path = self.base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    def blob(self, content: bytes) -> str:
        hex_digest = hashlib.sha256(content).hexdigest()
        self.write(reads.blob_data(hex_digest), content)
        return hex_digest

    def push(self, name: str, tag: str, content: bytes) -> str:
        hex_digest = self.blob(content)
        self.write(reads.revision_link(name, hex_digest), f"sha256:{hex_digest}".encode())
        self.write(reads.tag_link(name, tag), f"sha256:{hex_digest}".encode())
        return hex_digest


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


IMAGE = manifest(schemaVersion=2, mediaType=OCI_MANIFEST, config={}, layers=[])


def test_manifest_by_tag_and_digest(tree: Tree) -> None:
    hex_digest = tree.push("a/b", "v1", IMAGE)
    reader = Reader(tree.root)
    assert reader.manifest_digest("a/b", "v1") == hex_digest
    assert reader.manifest_digest("a/b", f"sha256:{HEX}") == HEX  # checked by manifest()
    found = reader.manifest("a/b", hex_digest, with_content=True)
    assert found == reads.Manifest(hex_digest, OCI_MANIFEST, len(IMAGE), IMAGE)
    headers_only = reader.manifest("a/b", hex_digest, with_content=False)
    assert headers_only == reads.Manifest(hex_digest, OCI_MANIFEST, len(IMAGE), None)


def test_manifest_of_another_repository_is_not_found(tree: Tree) -> None:
    hex_digest = tree.push("a/b", "v1", IMAGE)
    reader = Reader(tree.root)
    assert reader.manifest_digest("a/c", "v1") is None
    assert reader.manifest("a/c", hex_digest, with_content=False) is None


def test_deletes_are_seen_at_once(tree: Tree) -> None:
    hex_digest = tree.push("a/b", "v1", IMAGE)
    reader = Reader(tree.root)
    assert reader.manifest("a/b", hex_digest, with_content=False) is not None  # type remembered
    (tree.base / reads.tag_link("a/b", "v1")).unlink()  # type: ignore[operator]
    assert reader.manifest_digest("a/b", "v1") is None
    (tree.base / reads.revision_link("a/b", hex_digest)).unlink()  # type: ignore[operator]
    assert reader.manifest("a/b", hex_digest, with_content=False) is None
    tree.write(reads.revision_link("a/b", hex_digest), f"sha256:{hex_digest}".encode())
    (tree.base / reads.blob_data(hex_digest)).unlink()  # garbage collected
    assert reader.manifest("a/b", hex_digest, with_content=False) is None


def test_a_link_being_rewritten_is_not_followed(tree: Tree) -> None:
    hex_digest = tree.push("a/b", "v1", IMAGE)
    tree.write(reads.tag_link("a/b", "v1"), b"")
    assert Reader(tree.root).manifest_digest("a/b", "v1") is None
    tree.write(reads.revision_link("a/b", hex_digest), b"sha256:")
    assert Reader(tree.root).manifest("a/b", hex_digest, with_content=True) is None


def test_a_revision_link_naming_another_digest_is_not_followed(tree: Tree) -> None:
    hex_digest = tree.push("a/b", "v1", IMAGE)
    tree.write(reads.revision_link("a/b", hex_digest), f"sha256:{HEX}".encode())
    assert Reader(tree.root).manifest("a/b", hex_digest, with_content=True) is None


def test_schema1_is_left_to_the_registry(tree: Tree) -> None:
    hex_digest = tree.push("a/b", "old", manifest(schemaVersion=1, name="a/b", tag="old"))
    assert Reader(tree.root).manifest("a/b", hex_digest, with_content=True) is None


def test_oversized_link_or_symlink_is_not_read(tree: Tree) -> None:
    hex_digest = tree.push("a/b", "v1", IMAGE)
    tree.write(reads.tag_link("a/b", "v1"), b"sha256:" + b"a" * 1000)
    reader = Reader(tree.root)
    assert reader.manifest_digest("a/b", "v1") is None
    link = tree.base / reads.tag_link("a/b", "v1")  # type: ignore[operator]
    link.unlink()
    os.symlink(tree.base / reads.revision_link("a/b", hex_digest), link)  # type: ignore[operator]
    assert reader.manifest_digest("a/b", "v1") is None


def test_blob_needs_the_layer_link_of_that_repository(tree: Tree) -> None:
    hex_digest = tree.blob(b"layer bytes")
    tree.write(reads.layer_link("a/b", hex_digest), f"sha256:{hex_digest}".encode())
    reader = Reader(tree.root)
    assert reader.blob("a/c", hex_digest) is None
    blob = reader.blob("a/b", hex_digest)
    assert blob is not None and blob.size == len(b"layer bytes")
    try:
        (tree.base / reads.blob_data(hex_digest)).unlink()  # collected while being sent
        assert os.pread(blob.fd, 100, 0) == b"layer bytes"
        assert reader.blob("a/b", hex_digest) is None  # the next request finds nothing
    finally:
        blob.close()


def test_a_folder_where_the_data_should_be_is_not_a_blob(tree: Tree) -> None:
    tree.write(reads.layer_link("a/b", HEX), f"sha256:{HEX}".encode())
    (tree.base / reads.blob_data(HEX)).mkdir(parents=True)
    assert Reader(tree.root).blob("a/b", HEX) is None


def test_a_remembered_kind_is_not_parsed_again(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    # the bytes are fixed by the digest: one parse per manifest, not one per GET (up to 4 MiB each)
    hex_digest = tree.push("a/b", "v1", IMAGE)
    parsed: list[bytes] = []

    def counting(content: bytes) -> str | None:
        parsed.append(content)
        return manifest_kind(content)

    monkeypatch.setattr(reads, "manifest_kind", counting)
    reader = Reader(tree.root)
    first = reader.manifest("a/b", hex_digest, with_content=True)
    second = reader.manifest("a/b", hex_digest, with_content=True)
    assert first == second == reads.Manifest(hex_digest, OCI_MANIFEST, len(IMAGE), IMAGE)
    assert len(parsed) == 1


def test_a_fifo_at_a_link_or_data_path_is_refused_without_blocking(tree: Tree) -> None:
    # opening a FIFO for reading waits for a writer: on the event loop that would stop the proxy
    hex_digest = tree.push("a/b", "v1", IMAGE)
    link = tree.base / reads.tag_link("a/b", "v1")  # type: ignore[operator]
    link.unlink()
    os.mkfifo(link)
    tree.write(reads.layer_link("a/b", HEX), f"sha256:{HEX}".encode())
    data = tree.base / reads.blob_data(HEX)
    data.parent.mkdir(parents=True)
    os.mkfifo(data)
    reader = Reader(tree.root)
    answers: list[object] = []
    worker = threading.Thread(daemon=True, target=lambda: answers.extend(
        [reader.manifest_digest("a/b", "v1"), reader.blob("a/b", HEX), reader.manifest("a/b", hex_digest, with_content=True)]))
    worker.start()
    worker.join(5)
    blocked = worker.is_alive()
    for _ in range(100):  # release a reader stuck in open() (only without the fix)
        if not worker.is_alive():
            break
        for fifo in (link, data):
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(0.05)
    assert not blocked and answers[:2] == [None, None] and answers[2] is not None
