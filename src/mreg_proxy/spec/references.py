"""Manifest references checked before anything is forwarded: pure, no aiohttp.

registry 2.8 takes any reference holding a ``:`` that fails its digest check for a tag, and its
storage driver then refuses the ``:`` in a path: ``GET /v2/<name>/manifests/sha256:totallywrong``
answers 500 ``UNKNOWN``. The OCI distribution spec wants a client error. So the proxy answers a
malformed reference itself, with the spec's codes:

- a digest (it holds a ``:``) must be of an algorithm the registry stores (sha256: 64 lower-case
  hex digits, sha512: 128): otherwise 400 ``DIGEST_INVALID``, whatever the method;
- a tag must match the tag grammar: otherwise a read or a delete finds nothing (404
  ``MANIFEST_UNKNOWN``, what the spec's conformance suite expects for ``.INVALID_MANIFEST_NAME``),
  and a push is refused (400 ``TAG_INVALID``, the distribution code for exactly this).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .names import is_tag

# encoded length per algorithm: what distribution's digest package accepts
DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")


def parse_digest(value: str) -> tuple[str, str] | None:
    """(algorithm, encoded) of a digest the registry can store; None for anything else."""
    algorithm, colon, encoded = value.partition(":")
    length = DIGEST_LENGTHS.get(algorithm)
    if not colon or length is None or len(encoded) != length or _HEX.fullmatch(encoded) is None:
        return None
    return algorithm, encoded


def is_known_digest(value: str) -> bool:
    return parse_digest(value) is not None


@dataclass(frozen=True, slots=True)
class Refusal:
    """The proxy's own answer to a request it will not forward."""

    status: int
    code: str
    message: str


def digest_refusal(digest: str) -> Refusal | None:
    if is_known_digest(digest):
        return None
    return Refusal(400, "DIGEST_INVALID", f"{digest[:80]!r} is not a sha256 or sha512 digest")


def manifest_refusal(method: str, reference: str) -> Refusal | None:
    """None when ``method /v2/<name>/manifests/<reference>`` may go to the registry."""
    if ":" in reference:
        return digest_refusal(reference)
    if is_tag(reference):
        return None
    if method == "PUT":
        return Refusal(400, "TAG_INVALID", f"{reference[:80]!r} is not a valid tag")
    return Refusal(404, "MANIFEST_UNKNOWN", f"no manifest can be named {reference[:80]!r}")
