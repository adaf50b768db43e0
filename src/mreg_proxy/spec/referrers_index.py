"""The referrers index of OCI distribution 1.1, kept the way the spec's fallback keeps it: pure.

registry 2.8 has no referrers API. The spec's "referrers tag schema" is what clients do on such a
registry: an OCI image index, tagged ``<alg>-<encoded digest>`` of the subject (``sha256-<hex>``)
in the same repository, listing a descriptor of every manifest whose ``subject`` is that digest.
The proxy keeps exactly that index, so it lives in the registry's storage (it survives restarts
and moves with the data), older clients find it where they look, and an index a client wrote
itself is merged with, not replaced. The referrers API is answered from it.

Descriptors carry ``mediaType``, ``digest``, ``size``, ``artifactType`` (the manifest's own, else
its config's media type) and the manifest's ``annotations``, as the spec's referrers response does.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .references import parse_digest

INDEX = "application/vnd.oci.image.index.v1+json"
MAX_MANIFEST = 4 << 20  # bytes of a manifest read whole: what registries must accept at least
# The spec truncates the algorithm to 32 characters and the encoded part to 64.
_FALLBACK_TAG = re.compile(r"(sha256|sha512)-[0-9a-f]{64}")

Document = dict[str, Any]


class NotAnIndex(ValueError):
    """The fallback tag holds something the proxy will not rewrite (not an index of descriptors)."""


def fallback_tag(digest: str) -> str:
    """The tag of the referrers index of ``digest`` (a digest parse_digest accepts)."""
    parsed = parse_digest(digest)
    if parsed is None:
        raise ValueError(f"not a digest: {digest[:80]!r}")
    algorithm, encoded = parsed
    return f"{algorithm[:32]}-{encoded[:64]}"


def is_fallback_tag(tag: str) -> bool:
    """Whether ``tag`` has the shape of a referrers index tag."""
    return _FALLBACK_TAG.fullmatch(tag) is not None


def json_object(body: bytes) -> Document | None:
    """A manifest's JSON object, or None when the bytes are not one (the registry will judge)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def subject_of(doc: Document) -> str | None:
    """The digest in the manifest's ``subject``, when it has one the registry could store."""
    subject = doc.get("subject")
    digest = subject.get("digest") if isinstance(subject, dict) else None
    return digest if isinstance(digest, str) and parse_digest(digest) is not None else None


def descriptor(doc: Document, *, media_type: str, digest: str, size: int) -> Document:
    """The referrers-index entry for the manifest ``doc``, whose bytes have ``digest`` and ``size``."""
    own_type = doc.get("mediaType")
    entry: Document = {
        "mediaType": own_type if isinstance(own_type, str) and own_type else media_type,
        "digest": digest,
        "size": size,
    }
    artifact_type = doc.get("artifactType")
    if not isinstance(artifact_type, str) or not artifact_type:
        config = doc.get("config")
        artifact_type = config.get("mediaType") if isinstance(config, dict) else None
    if isinstance(artifact_type, str) and artifact_type:
        entry["artifactType"] = artifact_type
    annotations = doc.get("annotations")
    if isinstance(annotations, dict) and annotations:
        entry["annotations"] = annotations
    return entry


def entries_of(index: Document | None) -> list[Document]:
    """The descriptors of a referrers index (none when there is no index yet)."""
    if index is None:
        return []
    media_type = index.get("mediaType", INDEX)  # the spec lets an index leave it out
    if media_type != INDEX:
        raise NotAnIndex(f"it is a {str(media_type)[:80]}, not an OCI image index")
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("digest"), str) for entry in manifests
    ):
        raise NotAnIndex("its manifests are not a list of descriptors")
    return manifests


def with_referrer(entries: list[Document], entry: Document) -> list[Document]:
    """``entries`` with ``entry`` in place of an entry of the same digest, else appended (so that
    pushing a referrer again leaves the index as it is)."""
    if any(e["digest"] == entry["digest"] for e in entries):
        return [entry if e["digest"] == entry["digest"] else e for e in entries]
    return [*entries, entry]


def without(entries: list[Document], digests: set[str]) -> list[Document]:
    return [e for e in entries if e["digest"] not in digests]


def holds(entries: list[Document], entry: Document | None, gone: set[str] | frozenset[str]) -> bool:
    """Whether ``entries`` list ``entry`` (when given) and none of the digests ``gone``."""
    listed = {e["digest"] for e in entries}
    return (entry is None or entry["digest"] in listed) and not listed & gone


def index_document(previous: Document | None, entries: list[Document]) -> Document:
    """The index to store: the previous one (a client's fields kept) with ``entries`` listed."""
    doc = dict(previous or {})
    doc.update(schemaVersion=2, mediaType=INDEX, manifests=entries)
    return doc


def listing(entries: list[Document], artifact_type: str | None) -> Document:
    """The referrers API's answer: an index of the entries, only ``artifact_type``'s when given."""
    if artifact_type is not None:
        entries = [e for e in entries if e.get("artifactType") == artifact_type]
    return {"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}


def encode(doc: Document) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
