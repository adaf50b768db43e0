"""prune: untagged manifests are forgotten unless something tagged needs them (on a storage tree
laid out as registry 2.8's filesystem driver lays it out)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mreg_proxy.storage.prune import Pruned, main, prune

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Storage:
    """Writes blobs and links the way the registry does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.v2 = root / "docker" / "registry" / "v2"

    def blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        hexa = digest[7:]
        path = self.v2 / "blobs" / "sha256" / hexa[:2] / hexa / "data"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return digest

    def _link(self, path: Path, digest: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "link").write_text(digest)

    def manifests(self, repo: str) -> Path:
        return self.v2 / "repositories" / repo / "_manifests"

    def push(self, repo: str, doc: dict, tag: str | None = None) -> str:
        digest = self.blob(json.dumps(doc).encode())
        self._link(self.manifests(repo) / "revisions" / "sha256" / digest[7:], digest)
        if tag:
            self.tag(repo, tag, digest)
        return digest

    def tag(self, repo: str, tag: str, digest: str) -> None:
        self._link(self.manifests(repo) / "tags" / tag / "current", digest)
        self._link(self.manifests(repo) / "tags" / tag / "index" / "sha256" / digest[7:], digest)

    def image(self, repo: str, name: str, tag: str | None = None, subject: str | None = None) -> str:
        config = self.blob(f'{{"config": "{name}"}}'.encode())
        layer = self.blob(f"layer of {name}".encode())
        doc: dict = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                     "config": {"digest": config}, "layers": [{"digest": layer}]}
        if subject:
            doc["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1}
        return self.push(repo, doc, tag)

    def index(self, repo: str, children: list[str], tag: str | None = None) -> str:
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX,
               "manifests": [{"mediaType": OCI_MANIFEST, "digest": d, "size": 1} for d in children]}
        return self.push(repo, doc, tag)

    def revisions(self, repo: str) -> set[str]:
        folder = self.manifests(repo) / "revisions" / "sha256"
        return {"sha256:" + p.name for p in folder.iterdir()} if folder.is_dir() else set()


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(tmp_path)


def test_an_untagged_manifest_is_forgotten_and_a_tagged_one_kept(storage: Storage) -> None:
    old = storage.image("app", "old", tag="1")
    new = storage.image("app", "new", tag="1")  # the tag moved: old is untagged now
    assert prune(storage.root) == [Pruned("app", old)]
    assert storage.revisions("app") == {new}


def test_the_tag_history_forgets_the_pruned_digest_too(storage: Storage) -> None:
    old = storage.image("app", "old", tag="1")
    storage.image("app", "new", tag="1")
    prune(storage.root)
    history = storage.manifests("app") / "tags" / "1" / "index" / "sha256"
    assert old[7:] not in {p.name for p in history.iterdir()}


def test_a_tagged_index_keeps_its_untagged_platform_manifests(storage: Storage) -> None:
    amd, arm = storage.image("multi", "amd64"), storage.image("multi", "arm64")
    index = storage.index("multi", [amd, arm], tag="1")
    assert prune(storage.root) == []
    assert storage.revisions("multi") == {index, amd, arm}


def test_nested_indexes_keep_every_level(storage: Storage) -> None:
    leaf = storage.image("multi", "leaf")
    inner = storage.index("multi", [leaf])
    outer = storage.index("multi", [inner], tag="1")
    assert prune(storage.root) == []
    assert storage.revisions("multi") == {outer, inner, leaf}


def test_an_untagged_index_goes_with_the_platforms_only_it_used(storage: Storage) -> None:
    shared, own = storage.image("multi", "shared"), storage.image("multi", "own")
    kept = storage.index("multi", [shared], tag="2")
    old = storage.index("multi", [shared, own])
    assert {p.digest for p in prune(storage.root)} == {old, own}
    assert storage.revisions("multi") == {kept, shared}


def test_a_referrer_of_a_kept_image_is_kept(storage: Storage) -> None:
    image = storage.image("app", "image", tag="1")
    signature = storage.image("app", "signature", subject=image)
    assert prune(storage.root) == []
    assert storage.revisions("app") == {image, signature}


def test_a_referrer_of_a_forgotten_image_is_forgotten(storage: Storage) -> None:
    image = storage.image("app", "image")
    signature = storage.image("app", "signature", subject=image)
    assert {p.digest for p in prune(storage.root)} == {image, signature}


def test_each_repository_is_judged_on_its_own_links(storage: Storage) -> None:
    digest = storage.image("a", "same")
    storage.push("b", json.loads((storage.v2 / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data").read_text()), tag="1")
    assert prune(storage.root) == [Pruned("a", digest)]
    assert storage.revisions("b") == {digest}


def test_nested_repository_names(storage: Storage) -> None:
    old = storage.image("team/tools/app", "old")
    storage.image("team/tools/app", "new", tag="1")
    assert prune(storage.root) == [Pruned("team/tools/app", old)]


def test_a_manifest_that_cannot_be_read_leaves_its_repository_alone(storage: Storage) -> None:
    old = storage.image("app", "old")
    storage.image("app", "new", tag="1")
    hexa = old[7:]
    (storage.v2 / "blobs" / "sha256" / hexa[:2] / hexa / "data").write_text("{not json")
    other = storage.image("other", "something else")
    assert prune(storage.root) == [Pruned("other", other)]
    assert old in storage.revisions("app")


def test_a_broken_tag_link_leaves_its_repository_alone(storage: Storage) -> None:
    old = storage.image("app", "old")
    storage.image("app", "new", tag="1")
    (storage.manifests("app") / "tags" / "1" / "current" / "link").write_text("garbage")
    assert prune(storage.root) == []
    assert old in storage.revisions("app")


def test_a_dry_run_changes_nothing(storage: Storage) -> None:
    old = storage.image("app", "old")
    assert prune(storage.root, dry_run=True) == [Pruned("app", old)]
    assert storage.revisions("app") == {old}


def test_empty_or_missing_storage_has_nothing_to_prune(tmp_path: Path) -> None:
    assert prune(tmp_path / "nothing-here") == []


def test_recent_pushes_are_kept_when_a_minimum_age_is_given(storage: Storage) -> None:
    old = storage.image("app", "old", tag="1")
    storage.image("app", "new", tag="1")  # `old` is untagged now, but was written just now
    assert prune(storage.root, min_age=3600) == []
    assert prune(storage.root, min_age=0) == [Pruned("app", old)]


def test_main_refuses_a_folder_without_registry_storage(tmp_path: Path) -> None:
    """A mistyped path must not look like a clean run."""
    assert main([str(tmp_path / "typo")]) == 1


def fallback_tag(digest: str) -> str:
    return "sha256-" + digest[7:]


def test_a_referrers_index_of_a_kept_image_is_kept_with_its_referrers(storage: Storage) -> None:
    image = storage.image("app", "image", tag="1")
    signature = storage.image("app", "signature", subject=image)
    index = storage.index("app", [signature], tag=fallback_tag(image))
    assert prune(storage.root) == []
    assert storage.revisions("app") == {image, signature, index}


def test_a_referrers_index_keeps_a_referrer_a_client_listed_without_subject(storage: Storage) -> None:
    image = storage.image("app", "image", tag="1")
    listed = storage.image("app", "listed by a client")
    index = storage.index("app", [listed], tag=fallback_tag(image))
    assert prune(storage.root) == []
    assert storage.revisions("app") == {image, listed, index}


def test_the_referrers_index_of_a_forgotten_image_goes_with_its_tag(storage: Storage) -> None:
    image = storage.image("app", "image")  # untagged
    signature = storage.image("app", "signature", subject=image)
    index = storage.index("app", [signature], tag=fallback_tag(image))
    kept = storage.image("app", "kept", tag="1")
    assert {p.digest for p in prune(storage.root)} == {image, signature, index}
    assert storage.revisions("app") == {kept}
    assert not (storage.manifests("app") / "tags" / fallback_tag(image)).exists()
    assert (storage.manifests("app") / "tags" / "1").exists()
