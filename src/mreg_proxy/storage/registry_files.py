"""Manifest and blob reads from the registry's own files (filesystem driver), decided as registry
2.8 decides them; anything this module cannot decide exactly is left to the registry (None).

The layout is distribution's (registry/storage/paths.go), under ``docker/registry/v2``:

    repositories/<name>/_manifests/tags/<tag>/current/link    the tag's manifest digest
    repositories/<name>/_manifests/revisions/sha256/<hex>/link   the manifest is in <name>
    repositories/<name>/_layers/sha256/<hex>/link               the blob is in <name>
    blobs/sha256/<hex[:2]>/<hex>/data                            the bytes, shared by every repository

Every step is checked in the repository asked for, as the registry does: a blob of another
repository is not found here. Link files are read on every request (nothing cached can go stale):
only what a digest names for ever (the kind of a manifest) is remembered. The pure parts (paths,
link parsing, ``Accept``, ``Range``) are separate functions, tested as tables.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..spec.names import is_name, is_tag

V2 = "docker/registry/v2"

SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
UNTYPED_INDEX = "index without mediaType"  # a kind of manifest, not a media type
_EXACT = frozenset(("schemaVersion", "mediaType", "manifests"))
_GO_MATCHES = frozenset(("schemaversion", "mediatype", "manifests"))
_IMAGE_KEYS = frozenset(("config", "layers"))  # an index holding these is refused by the registry,
_INDEX_KEYS = frozenset(("manifests",))  # and a manifest holding this (2.8.2's confusion checks)

# A link file holds "sha256:<hex>" (71 bytes); more is not a link this module understands.
LINK_BUDGET = 256
# registry 2.8 refuses manifests over 4 MiB on push (maxManifestBodySize)
MANIFEST_BUDGET = 4 << 20
# manifest kinds remembered by digest (a digest's bytes never change): about 150 bytes each
KIND_MEMORY = 4096

_SHA256 = re.compile(r"sha256:([0-9a-f]{64})")
# one range as Go's net/http reads it, digits only: signs, spaces and overflow are left to the registry
_RANGE = re.compile(r"bytes=(?:(\d{1,18})-(\d{0,18})|-(\d{1,18}))")


def digest_hex(reference: str) -> str | None:
    """The hex of a ``sha256:`` digest; None for a tag or any other algorithm."""
    match = _SHA256.fullmatch(reference)
    return match.group(1) if match else None


def tag_link(name: str, tag: str) -> str | None:
    if not (is_name(name) and is_tag(tag)):
        return None
    return f"repositories/{name}/_manifests/tags/{tag}/current/link"


def revision_link(name: str, hex_digest: str) -> str | None:
    if not is_name(name):
        return None
    return f"repositories/{name}/_manifests/revisions/sha256/{hex_digest}/link"


def layer_link(name: str, hex_digest: str) -> str | None:
    if not is_name(name):
        return None
    return f"repositories/{name}/_layers/sha256/{hex_digest}/link"


def blob_data(hex_digest: str) -> str:
    return f"blobs/sha256/{hex_digest[:2]}/{hex_digest}/data"


def parse_link(content: bytes) -> str | None:
    """The hex of the digest a link file names; None when it is empty or not exactly a sha256
    digest (the registry writes links in place: a reader may catch one half written)."""
    try:
        return digest_hex(content.decode("ascii"))
    except UnicodeDecodeError:
        return None


def accepted(values: Iterable[str]) -> frozenset[str]:
    """The media types of the request's ``Accept`` values, parsed as registry 2.8 parses them:
    every value split on ",", parameters dropped, spaces trimmed, matched exactly."""
    # spaces and tabs only: Go trims a little more, so this may find fewer types, never more
    # (a type missed sends the read to the registry, which then answers it itself)
    return frozenset(
        part.split(";", 1)[0].strip(" \t") for value in values for part in value.split(",")
    )


def manifest_kind(content: bytes) -> str | None:
    """What registry 2.8 reads a stored manifest as (manifeststore.go's Get): one of the four media
    types, or UNTYPED_INDEX; None for what it answers otherwise (schema 1, content it would refuse
    to read back, anything unusual).

    Without a ``mediaType`` field (containers/image up to 5.23, as in Debian 12's podman and
    skopeo, writes OCI manifests so), a document with a ``manifests`` list is an index, sent as an
    OCI index whatever the request accepts; any other is an OCI manifest."""
    try:  # UTF-8 and strict JSON only, as Go reads it (no NaN, no byte order mark)
        document = json.loads(content.decode("utf-8"), parse_constant=_not_json)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or type(document.get("schemaVersion")) is not int:
        return None
    folded = {key.casefold() for key in document}
    if document["schemaVersion"] != 2 or any(
        key.casefold() in _GO_MATCHES and key not in _EXACT for key in document
    ):
        return None  # Go matches field names regardless of case: another spelling may win there
    media_type = document.get("mediaType", "")
    if media_type in (SCHEMA2, OCI_MANIFEST):
        return None if folded & _INDEX_KEYS else media_type
    if media_type in (MANIFEST_LIST, OCI_INDEX):
        return None if folded & _IMAGE_KEYS else media_type
    if media_type != "":
        return None
    manifests = document.get("manifests")
    if isinstance(manifests, list):
        return None if folded & _IMAGE_KEYS else UNTYPED_INDEX
    if folded & _INDEX_KEYS:
        return None  # "manifests" null, of another type or spelled otherwise: left to the registry
    return OCI_MANIFEST


def _not_json(constant: str) -> object:
    raise ValueError(f"{constant} is not JSON")


def content_type(kind: str) -> str:
    """The Content-Type registry 2.8 sends for a manifest of this kind (its Payload())."""
    return OCI_INDEX if kind == UNTYPED_INDEX else kind


def serves_as_stored(kind: str, accepts: frozenset[str], *, by_tag: bool) -> bool:
    """Whether registry 2.8 answers the stored bytes (and not an error or a schema 1 rewrite).

    An OCI manifest or index the client does not accept is a 404; a Docker manifest or list
    asked for by tag by a client that does not accept it is rewritten into schema 1; by digest
    it is sent as it is. An index without mediaType escapes both checks (GetManifest finds it
    neither a Docker list nor an OCI index) and is always sent."""
    if kind == UNTYPED_INDEX:
        return True
    if kind in (OCI_MANIFEST, OCI_INDEX):
        return kind in accepts
    return kind in accepts or not by_tag


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    length: int

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.start + self.length - 1}/{size}"


WHOLE = ByteRange(0, -1)  # no Range: the whole blob, 200


def parse_range(values: list[str], size: int) -> ByteRange | None:
    """The part of a ``size``-byte blob registry 2.8 (Go's http.ServeContent) sends for these
    ``Range`` header values: WHOLE, one range (206), or None for what is left to the registry
    (several ranges, a 416, anything unusual)."""
    if not values or values[0] == "":  # Go reads the first value only
        return WHOLE
    match = _RANGE.fullmatch(values[0])
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        length = min(int(suffix), size)
        return ByteRange(size - length, length) if length > 0 else None
    start = int(first)
    if start >= size:
        return None  # 416
    end = size - 1 if last == "" else int(last)
    if end < start:
        return None  # 416
    return ByteRange(start, min(end, size - 1) - start + 1)


@dataclass(frozen=True, slots=True)
class Manifest:
    hex_digest: str
    kind: str  # manifest_kind's
    size: int
    content: bytes | None  # None when only its headers were asked for


@dataclass(slots=True)
class Blob:
    """An open data file: sending it finishes even if garbage collection unlinks it meanwhile."""

    hex_digest: str
    fd: int
    size: int

    def close(self) -> None:
        os.close(self.fd)


class Reader:
    """The filesystem driver's tree under ``root`` (its rootdirectory), read-only."""

    def __init__(self, root: Path) -> None:
        self.base = str(root / V2)
        self._kinds: OrderedDict[str, str] = OrderedDict()

    def _path(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def _open_regular(self, relative: str) -> tuple[int, int] | None:
        """An open regular file and its size; None when missing or anything else. O_NONBLOCK: a
        FIFO put at the path must not wait for a writer (this runs on the event loop)."""
        try:
            fd = os.open(self._path(relative), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None
        return fd, info.st_size

    def _read(self, relative: str, budget: int) -> bytes | None:
        """A regular file's bytes; None when missing, not a regular file or over ``budget``."""
        opened = self._open_regular(relative)
        if opened is None:
            return None
        fd, size = opened
        try:
            if size > budget:
                return None
            content = os.read(fd, budget + 1)
            return content if len(content) <= budget else None
        except OSError:
            return None
        finally:
            os.close(fd)

    def _link(self, relative: str | None) -> str | None:
        if relative is None:
            return None
        content = self._read(relative, LINK_BUDGET)
        return None if content is None else parse_link(content)

    def manifest_digest(self, name: str, reference: str) -> str | None:
        """The hex of the manifest a tag points at (or of a digest reference), if the tag exists."""
        hex_digest = digest_hex(reference)
        if hex_digest is not None:
            return hex_digest
        return self._link(tag_link(name, reference))  # None unless a valid name and tag

    def manifest(self, name: str, hex_digest: str, *, with_content: bool) -> Manifest | None:
        """The manifest ``hex_digest`` of repository ``name``: its revision link must name it."""
        if self._link(revision_link(name, hex_digest)) != hex_digest:
            return None
        path = blob_data(hex_digest)
        kind = self._kinds.get(hex_digest)
        if kind is not None and not with_content:
            try:
                info = os.stat(self._path(path), follow_symlinks=False)
            except OSError:
                return None
            if not stat.S_ISREG(info.st_mode):
                return None
            self._kinds.move_to_end(hex_digest)
            return Manifest(hex_digest, kind, info.st_size, None)
        content = self._read(path, MANIFEST_BUDGET)
        if content is None:
            return None
        if kind is None:  # a remembered kind is sound: the bytes are fixed by the digest
            kind = manifest_kind(content)
        if kind is None:
            return None
        self._remember(hex_digest, kind)
        return Manifest(hex_digest, kind, len(content), content if with_content else None)

    def _remember(self, hex_digest: str, kind: str) -> None:
        self._kinds[hex_digest] = kind
        self._kinds.move_to_end(hex_digest)
        while len(self._kinds) > KIND_MEMORY:
            self._kinds.popitem(last=False)

    def blob(self, name: str, hex_digest: str) -> Blob | None:
        """The blob ``hex_digest``, open, if repository ``name`` links it; the caller closes it."""
        if self._link(layer_link(name, hex_digest)) != hex_digest:
            return None
        opened = self._open_regular(blob_data(hex_digest))
        return None if opened is None else Blob(hex_digest, *opened)
