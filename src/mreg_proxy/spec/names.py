"""Repository names, tags and digests as the distribution spec writes them: pure, no aiohttp.

The route classifier (routes.py) matches repository names with these; mreg-manage uses them to
check what an operator typed before anything goes on the wire, so this module imports nothing
beyond the standard library.
"""

from __future__ import annotations

import re

# distribution/reference: path components joined by "/", lower case, separators inside only
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# Every manifest type: with fewer, registry 2.8 reports an OCI image or an index as unknown, or
# answers for an index with another digest.
MANIFEST_TYPES = (
    OCI_MANIFEST,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
ACCEPT_ALL = ", ".join(MANIFEST_TYPES)

MAX_NAME = 255  # the spec's limit on a repository name, host excluded


def is_name(value: str) -> bool:
    return len(value) <= MAX_NAME and NAME.fullmatch(value) is not None


def is_tag(value: str) -> bool:
    return TAG.fullmatch(value) is not None


def is_digest(value: str) -> bool:
    return DIGEST.fullmatch(value) is not None
