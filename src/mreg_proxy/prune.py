"""Forget untagged manifests safely, so that garbage collection can reclaim them.

    python3 -m mreg_proxy.prune [--dry-run] [ROOT]     (ROOT: the registry's rootdirectory)

Run it only while the registry is stopped, then start the registry (it garbage-collects at start):

    podman pod stop mreg-pod
    podman run --rm --user 0 --network none -v mreg-registry-data:/var/lib/registry \
        --entrypoint python3 localhost/mreg-proxy:latest -m mreg_proxy.prune
    podman pod start mreg-pod

(Not an init container: podman 4.3 restarts init containers of a Deployment in a loop, so it
would run next to a serving registry and forget the platform manifests of a multi-arch push in
flight, before its index is tagged.)

registry 2.8's ``garbage-collect`` keeps every manifest the repository knows, tagged or not: an
image whose tag was deleted (by mreg's single-tag delete) or overwritten by a newer push keeps its
layers forever. Its ``--delete-untagged`` would reclaim them, but it also deletes the platform
manifests of multi-arch images, which are never tagged themselves (distribution issues 3004 and
3178). This does the safe part of that job on the filesystem storage, while the registry is NOT
running:

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
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .referrers import is_fallback_tag

log = logging.getLogger("mreg.prune")

DEFAULT_ROOT = Path("/var/lib/registry")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class Unsure(Exception):
    """The repository is not in a state this module understands: leave it alone."""


@dataclass(frozen=True)
class Pruned:
    repository: str
    digest: str


def _v2(root: Path) -> Path:
    return root / "docker" / "registry" / "v2"


def _read_link(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise Unsure(f"{path}: {exc}") from None
    if not _DIGEST.fullmatch(text):
        raise Unsure(f"{path}: not a sha256 digest: {text[:80]!r}")
    return text


def _blob_json(v2: Path, digest: str) -> dict:
    hexa = digest.split(":", 1)[1]
    path = v2 / "blobs" / "sha256" / hexa[:2] / hexa / "data"
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise Unsure(f"manifest {digest}: {exc}") from None
    if not isinstance(doc, dict):
        raise Unsure(f"manifest {digest}: not a JSON object")
    return doc


def repositories(root: Path) -> Iterator[tuple[str, Path]]:
    """(name, path of its _manifests) for every repository, nested names included."""
    base = _v2(root) / "repositories"
    if not base.is_dir():
        return
    for manifests in sorted(base.rglob("_manifests")):
        if manifests.is_dir():
            yield manifests.parent.relative_to(base).as_posix(), manifests


def _revisions(manifests: Path) -> set[str]:
    folder = manifests / "revisions" / "sha256"
    if not folder.is_dir():
        return set()
    return {_read_link(entry / "link") for entry in folder.iterdir() if (entry / "link").exists()}


def _tags(manifests: Path) -> dict[str, str]:
    """tag -> the digest it points at."""
    folder = manifests / "tags"
    if not folder.is_dir():
        return {}
    return {tag.name: _read_link(tag / "current" / "link") for tag in folder.iterdir()
            if (tag / "current" / "link").exists()}


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


def untagged(v2: Path, manifests: Path) -> set[str]:
    """The revisions of one repository that nothing tagged needs.

    A referrers index tag (``sha256-<hex>``, see referrers.py) is no image of its own: it keeps
    its index only while the image with that digest is kept, else the index goes with it.
    """
    revisions = _revisions(manifests)
    docs = {digest: _blob_json(v2, digest) for digest in revisions}
    tags = _tags(manifests)
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


def _forget(manifests: Path, digest: str) -> None:
    """What the registry's delete by digest does to the repository: the revision link goes, and so
    does the digest in every tag's history; a referrers index tag pointing at it goes too (the only
    kind of tag that can point at a forgotten manifest)."""
    hexa = digest.split(":", 1)[1]
    shutil.rmtree(manifests / "revisions" / "sha256" / hexa)
    for tag, current in _tags(manifests).items():
        if current == digest and is_fallback_tag(tag):
            shutil.rmtree(manifests / "tags" / tag)
    tags = manifests / "tags"
    if tags.is_dir():
        for tag in tags.iterdir():
            history = tag / "index" / "sha256" / hexa
            if history.is_dir():
                shutil.rmtree(history)


def _pushed_within(manifests: Path, digest: str, seconds: float) -> bool:
    """Whether the revision's link was written in the last ``seconds``: a push may still be in
    flight (registry 2.8 writes the revision before the tag), so it is not touched."""
    link = manifests / "revisions" / "sha256" / digest.split(":", 1)[1] / "link"
    return seconds > 0 and time.time() - link.stat().st_mtime < seconds


def prune(root: Path, *, dry_run: bool = False, min_age: float = 0) -> list[Pruned]:
    v2 = _v2(root)
    pruned: list[Pruned] = []
    for name, manifests in repositories(root):
        try:
            doomed = untagged(v2, manifests)
        except Unsure as exc:
            log.warning("prune: leaving %s as it is: %s", name, exc)
            continue
        for digest in sorted(doomed):
            if _pushed_within(manifests, digest, min_age):
                log.info("prune: keeping %s@%s: pushed less than %ds ago", name, digest, min_age)
                continue
            log.info("prune: %s@%s is untagged and nothing tagged refers to it%s",
                     name, digest, " (dry run)" if dry_run else "")
            if not dry_run:
                _forget(manifests, digest)
            pruned.append(Pruned(name, digest))
    return pruned


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m mreg_proxy.prune", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=DEFAULT_ROOT,
                        help=f"the registry's storage rootdirectory (default {DEFAULT_ROOT})")
    parser.add_argument("--dry-run", action="store_true", help="only tell what would be removed")
    parser.add_argument("--min-age", type=float, default=3600, metavar="SECONDS",
                        help="keep manifests pushed less than this long ago, in case the registry "
                        "is running after all (default 3600; 0 takes every untagged manifest)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not _v2(args.root).is_dir():
        log.error("prune: no registry storage under %s (%s is missing)", args.root, _v2(args.root))
        return 1
    pruned = prune(args.root, dry_run=args.dry_run, min_age=args.min_age)
    log.info("prune: %d untagged manifest(s) %s", len(pruned), "found" if args.dry_run else "forgotten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
