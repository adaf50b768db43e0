"""Forget untagged manifests safely, so that garbage collection can reclaim them.

    python3 -m mreg_proxy.storage.prune [--dry-run] [ROOT]     (ROOT: the registry's rootdirectory)
    python3 -m mreg_proxy.storage.prune --s3 [--dry-run]       (the bucket REGISTRY_STORAGE_S3_* names)

Run it only while the registry is stopped, then start the registry (it garbage-collects at start):

    podman pod stop mreg-pod
    podman run --rm --user 0 --network none -v mreg-registry-data:/var/lib/registry \
        --entrypoint python3 localhost/mreg-proxy:latest -m mreg_proxy.storage.prune
    podman pod start mreg-pod

(Not an init container: podman 4.3 restarts init containers of a Deployment in a loop, so it
would run next to a serving registry and forget the platform manifests of a multi-arch push in
flight, before its index is tagged.) On S3 with replicas, run it while writes are paused
(docs/s3.md); the GC CronJob of deploy/kubernetes/mreg-s3.yml does.

registry 2.8's ``garbage-collect`` keeps every manifest the repository knows, tagged or not: an
image whose tag was deleted (by mreg's single-tag delete) or overwritten by a newer push keeps its
layers forever. Its ``--delete-untagged`` would reclaim them, but it also deletes the platform
manifests of multi-arch images, which are never tagged themselves (distribution issues 3004 and
3178). This does the safe part of that job on the filesystem storage or in the S3 bucket, while
nothing writes (tree.py reads both):

In each repository, a manifest is kept when a tag points at it, or when a kept manifest refers to
it (an index's ``manifests``, at any depth), or when its ``subject`` is kept (an OCI 1.1 referrer,
such as a signature). A referrers index tag (``sha256-<hex>``) counts only while the image with
that digest is kept: the referrers of a forgotten image are forgotten with their index and its tag. Every other manifest revision is removed from the repository, as the
registry's own delete by digest would do; the next ``garbage-collect`` then removes the blobs that
nothing kept uses. Manifests shared with another repository are unaffected there: each repository
is judged on its own links. Anything unexpected (a manifest that cannot be read or parsed, a broken
link) leaves that whole repository untouched.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from ..spec.referrers_index import is_fallback_tag
from .tree import V2, BucketStorage, FolderStorage, Storage
from .s3 import S3Client, S3Error, S3Settings

log = logging.getLogger("mreg.prune")

DEFAULT_ROOT = Path("/var/lib/registry")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class Unsure(Exception):
    """The repository is not in a state this module understands: leave it alone."""


@dataclass(frozen=True)
class Pruned:
    repository: str
    digest: str


def _link(storage: Storage, path: str) -> str | None:
    """The digest a link file holds; None when there is no such file."""
    data = storage.read(path)
    if data is None:
        return None
    try:
        text = data.decode().strip()
    except UnicodeDecodeError as exc:
        raise Unsure(f"{storage.describe(path)}: {exc}") from None
    if not _DIGEST.fullmatch(text):
        raise Unsure(f"{storage.describe(path)}: not a sha256 digest: {text[:80]!r}")
    return text


def _blob_json(storage: Storage, digest: str) -> dict:
    hexa = digest.split(":", 1)[1]
    data = storage.read(f"blobs/sha256/{hexa[:2]}/{hexa}/data")
    if data is None:
        raise Unsure(f"manifest {digest}: its blob is missing")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise Unsure(f"manifest {digest}: {exc}") from None
    if not isinstance(doc, dict):
        raise Unsure(f"manifest {digest}: not a JSON object")
    return doc


def repositories(storage: Storage, path: str = "repositories") -> Iterator[tuple[str, str]]:
    """(name, path of its _manifests) for every repository, nested names included. Uploads and
    layer links are not descended into (on S3 each folder level is one listing)."""
    for folder in storage.folders(path):
        if folder == "_manifests":
            yield path.removeprefix("repositories/"), f"{path}/_manifests"
        elif not folder.startswith("_"):
            yield from repositories(storage, f"{path}/{folder}")


def _revisions(storage: Storage, manifests: str) -> set[str]:
    folder = f"{manifests}/revisions/sha256"
    links = (_link(storage, f"{folder}/{entry}/link") for entry in storage.folders(folder))
    return {link for link in links if link is not None}


def _tags(storage: Storage, manifests: str) -> dict[str, str]:
    """tag -> the digest it points at."""
    tags = storage.folders(f"{manifests}/tags")
    links = {tag: _link(storage, f"{manifests}/tags/{tag}/current/link") for tag in tags}
    return {tag: link for tag, link in links.items() if link is not None}


def _children(doc: dict) -> set[str]:
    entries = doc.get("manifests", [])
    if not isinstance(entries, list):
        raise Unsure("an index whose manifests is not a list")
    found = set()
    for entry in entries:
        digest = entry.get("digest") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise Unsure(f"an index entry without a sha256 digest: {entry!r:.80}")
        found.add(digest)
    return found


def _subject(doc: dict) -> str | None:
    subject = doc.get("subject")
    if subject is None:
        return None
    digest = subject.get("digest") if isinstance(subject, dict) else None
    if not isinstance(digest, str):
        raise Unsure("a subject without a digest")
    return digest


def untagged(storage: Storage, manifests: str) -> set[str]:
    """The revisions of one repository that nothing tagged needs.

    A referrers index tag (``sha256-<hex>``, see spec/referrers_index.py) is no image of its own: it keeps
    its index only while the image with that digest is kept, else the index goes with it.
    """
    revisions = _revisions(storage, manifests)
    docs = {digest: _blob_json(storage, digest) for digest in revisions}
    tags = _tags(storage, manifests)
    indexes = {digest: tag.replace("-", ":", 1) for tag, digest in tags.items() if is_fallback_tag(tag)}
    keep = {digest for tag, digest in tags.items() if not is_fallback_tag(tag)} & revisions
    while True:
        more = set()
        for digest in keep:
            more |= _children(docs[digest]) & revisions
        more |= {d for d in revisions if _subject(docs[d]) in keep}
        more |= {index for index, subject in indexes.items() if subject in keep} & revisions
        if more <= keep:
            return revisions - keep
        keep |= more


def _forget(storage: Storage, manifests: str, digest: str) -> None:
    """What the registry's delete by digest does to the repository: the revision link goes, and so
    does the digest in every tag's history; a referrers index tag pointing at it goes too (the only
    kind of tag that can point at a forgotten manifest)."""
    hexa = digest.split(":", 1)[1]
    storage.remove_tree(f"{manifests}/revisions/sha256/{hexa}")
    for tag, current in _tags(storage, manifests).items():
        if current == digest and is_fallback_tag(tag):
            storage.remove_tree(f"{manifests}/tags/{tag}")
    for tag in storage.folders(f"{manifests}/tags"):
        storage.remove_tree(f"{manifests}/tags/{tag}/index/sha256/{hexa}")


def _pushed_within(storage: Storage, manifests: str, digest: str, seconds: float) -> bool:
    """Whether the revision's link was written in the last ``seconds``: a push may still be in
    flight (registry 2.8 writes the revision before the tag), so it is not touched."""
    if seconds <= 0:
        return False
    written = storage.modified(f"{manifests}/revisions/sha256/{digest.split(':', 1)[1]}/link")
    return written is not None and time.time() - written < seconds


def prune(root: Path, *, dry_run: bool = False, min_age: float = 0) -> list[Pruned]:
    """prune_storage on the filesystem driver's rootdirectory ``root``."""
    return prune_storage(FolderStorage(root), dry_run=dry_run, min_age=min_age)


def prune_storage(storage: Storage, *, dry_run: bool = False, min_age: float = 0) -> list[Pruned]:
    pruned: list[Pruned] = []
    for name, manifests in repositories(storage):
        try:
            doomed = untagged(storage, manifests)
        except Unsure as exc:
            log.warning("prune: leaving %s as it is: %s", name, exc)
            continue
        for digest in sorted(doomed):
            if _pushed_within(storage, manifests, digest, min_age):
                log.info("prune: keeping %s@%s: pushed less than %ds ago", name, digest, min_age)
                continue
            log.info("prune: %s@%s is untagged and nothing tagged refers to it%s",
                     name, digest, " (dry run)" if dry_run else "")
            if not dry_run:
                _forget(storage, manifests, digest)
            pruned.append(Pruned(name, digest))
    return pruned


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m mreg_proxy.storage.prune", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=DEFAULT_ROOT,
                        help=f"the registry's storage rootdirectory (default {DEFAULT_ROOT})")
    parser.add_argument("--s3", action="store_true",
                        help="prune the registry's S3 bucket instead, as the REGISTRY_STORAGE_S3_* variables "
                        "name it (with replicas: while writes are paused, see docs/s3.md)")
    parser.add_argument("--dry-run", action="store_true", help="only tell what would be removed")
    parser.add_argument("--min-age", type=float, default=3600, metavar="SECONDS",
                        help="keep manifests pushed less than this long ago, in case the registry "
                        "is running after all (default 3600; 0 takes every untagged manifest)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    storage: Storage
    if args.s3:
        try:
            storage = BucketStorage(S3Client(S3Settings.from_registry_env(os.environ)))
        except S3Error as exc:
            log.error("prune: %s", exc)
            return 1
    else:
        if not (args.root / V2).is_dir():
            log.error("prune: no registry storage under %s (%s is missing)", args.root, args.root / V2)
            return 1
        storage = FolderStorage(args.root)
    try:
        pruned = prune_storage(storage, dry_run=args.dry_run, min_age=args.min_age)
    except S3Error as exc:
        log.error("prune: %s", exc)
        return 1
    log.info("prune: %d untagged manifest(s) %s", len(pruned), "found" if args.dry_run else "forgotten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
