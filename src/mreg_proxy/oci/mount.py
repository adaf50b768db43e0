"""Cross-repository blob mounts: ``POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<other>``.

A mount copies a blob from ``other`` into ``name`` without uploading it: whoever may mount from a
repository can read its blobs. So the caller needs pull on ``from`` (push on ``name`` is decided
like any upload). Without it the proxy drops ``mount`` and ``from`` and the request becomes a plain
upload start, as distribution does when the source is not accessible: the client then uploads the
blob itself, and learns nothing about ``other``.
"""

from __future__ import annotations

from typing import Callable, Mapping
from urllib.parse import unquote_plus

from ..spec.names import is_name

MOUNT_KEYS = frozenset({"mount", "from"})


def mount_source(query: Mapping[str, str]) -> str | None:
    """The ``from`` of a mount request ("" when missing), None when the request mounts nothing."""
    return query.get("from", "") if "mount" in query else None


def allowed_source(source: str, may_pull: Callable[[str], bool]) -> bool:
    return is_name(source) and may_pull(source)


def without_mount(raw_path: str, raw_query: str) -> str:
    """``raw_path`` with the raw query minus its ``mount`` and ``from`` parameters; every other
    parameter kept byte for byte."""
    kept = [part for part in raw_query.split("&") if part and unquote_plus(part.partition("=")[0]) not in MOUNT_KEYS]
    return f"{raw_path}?{'&'.join(kept)}" if kept else raw_path
