"""The referrers index and the fallback tag: pure."""

from __future__ import annotations

import json

import pytest

from mreg_proxy.spec.referrers_index import (
    INDEX,
    NotAnIndex,
    descriptor,
    encode,
    entries_of,
    fallback_tag,
    holds,
    index_document,
    is_fallback_tag,
    json_object,
    listing,
    subject_of,
    with_referrer,
    without,
)

SUBJECT = "sha256:" + "ab" * 32
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def artifact(**fields: object) -> dict:
    doc: dict = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:" + "4" * 64, "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": SUBJECT, "size": 7},
    }
    doc.update(fields)
    return doc


def test_fallback_tag_of_a_digest() -> None:
    assert fallback_tag(SUBJECT) == "sha256-" + "ab" * 32
    # sha512: the encoded part is truncated to 64 characters, as the spec says
    assert fallback_tag("sha512:" + "c" * 128) == "sha512-" + "c" * 64


def test_fallback_tag_refuses_a_non_digest() -> None:
    with pytest.raises(ValueError):
        fallback_tag("sha256:short")


@pytest.mark.parametrize(
    "tag,expected",
    [("sha256-" + "ab" * 32, True), ("sha512-" + "c" * 64, True), ("sha256-" + "ab" * 31, False),
     ("latest", False), ("sha256-" + "AB" * 32, False), ("md5-" + "a" * 64, False)],
)
def test_is_fallback_tag(tag: str, expected: bool) -> None:
    assert is_fallback_tag(tag) is expected


def test_subject_of() -> None:
    assert subject_of(artifact()) == SUBJECT
    assert subject_of(artifact(subject=None)) is None
    assert subject_of(artifact(subject={"digest": "sha256:nope"})) is None
    assert subject_of(artifact(subject="sha256:" + "a" * 64)) is None
    assert subject_of({"schemaVersion": 2}) is None


def test_json_object() -> None:
    assert json_object(b'{"a": 1}') == {"a": 1}
    assert json_object(b"[1]") is None
    assert json_object(b"\xff") is None
    assert json_object(b"blablabla") is None


def test_descriptor_takes_the_artifact_type_and_annotations() -> None:
    doc = artifact(artifactType="application/vnd.example.sig", annotations={"k": "v"})
    assert descriptor(doc, media_type="ignored", digest="sha256:" + "1" * 64, size=300) == {
        "mediaType": OCI_MANIFEST,
        "digest": "sha256:" + "1" * 64,
        "size": 300,
        "artifactType": "application/vnd.example.sig",
        "annotations": {"k": "v"},
    }


def test_descriptor_falls_back_to_the_config_media_type() -> None:
    doc = artifact(config={"mediaType": "application/vnd.example.sbom.config", "digest": "x", "size": 1})
    entry = descriptor(doc, media_type=OCI_MANIFEST, digest="d", size=1)
    assert entry["artifactType"] == "application/vnd.example.sbom.config"
    assert "annotations" not in entry


def test_descriptor_of_an_artifact_index_uses_the_content_type_when_it_names_none() -> None:
    doc = {"schemaVersion": 2, "manifests": [], "artifactType": "application/x", "subject": {"digest": SUBJECT}}
    entry = descriptor(doc, media_type=INDEX, digest="d", size=5)
    assert (entry["mediaType"], entry["artifactType"]) == (INDEX, "application/x")


def test_with_referrer_replaces_an_entry_of_the_same_digest_in_place() -> None:
    entries = [{"digest": "a", "size": 1}, {"digest": "b", "size": 2}]
    assert with_referrer(entries, {"digest": "a", "size": 3}) == [{"digest": "a", "size": 3}, {"digest": "b", "size": 2}]
    assert with_referrer(entries, entries[0]) == entries  # pushed again: nothing changes
    assert with_referrer(entries, {"digest": "c"}) == [*entries, {"digest": "c"}]


def test_without_drops_entries() -> None:
    assert without([{"digest": "a"}, {"digest": "b"}], {"a"}) == [{"digest": "b"}]


def test_entries_of_a_missing_index_are_none() -> None:
    assert entries_of(None) == []
    assert entries_of({"schemaVersion": 2, "manifests": []}) == []


@pytest.mark.parametrize("doc", [
    {"manifests": "x"}, {"manifests": [1]}, {"manifests": [{"size": 1}]},
    {"schemaVersion": 2},  # no manifests at all: an image manifest, say
    {"mediaType": OCI_MANIFEST, "manifests": []},
    {"mediaType": "application/vnd.docker.distribution.manifest.list.v2+json", "manifests": []},
])
def test_entries_of_something_else_refuse(doc: dict) -> None:
    with pytest.raises(NotAnIndex):
        entries_of(doc)


def test_index_document_keeps_a_clients_own_fields() -> None:
    previous = {"schemaVersion": 2, "annotations": {"by": "oras"}, "manifests": []}
    doc = index_document(previous, [{"digest": "a"}])
    assert doc == {"schemaVersion": 2, "mediaType": INDEX, "annotations": {"by": "oras"}, "manifests": [{"digest": "a"}]}
    assert previous["manifests"] == []  # not modified in place


def test_listing_filters_by_artifact_type() -> None:
    entries = [{"digest": "a", "artifactType": "sig"}, {"digest": "b", "artifactType": "sbom"}, {"digest": "c"}]
    assert listing(entries, None)["manifests"] == entries
    assert listing(entries, "sig") == {"schemaVersion": 2, "mediaType": INDEX, "manifests": [entries[0]]}
    assert listing([], None) == {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}


def test_encode_is_compact_json() -> None:
    assert json.loads(encode({"a": [1]})) == {"a": [1]} and b" " not in encode({"a": [1]})


def test_holds_when_the_entry_is_listed_and_nothing_gone_is() -> None:
    ours, theirs = {"digest": "sha256:" + "1" * 64}, {"digest": "sha256:" + "2" * 64}
    assert holds([theirs, ours], ours, frozenset())
    assert not holds([theirs], ours, frozenset())
    assert holds([theirs], None, {ours["digest"]})
    assert not holds([theirs, ours], None, {ours["digest"]})
