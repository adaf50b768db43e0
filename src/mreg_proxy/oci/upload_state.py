"""Chunked upload offsets as the OCI distribution spec has them, on a registry that ignores them.

registry 2.8 ignores ``Content-Range`` on ``PATCH``: a chunk that does not start where the upload
stands is appended at the registry's own offset (a retrying client corrupts its upload, found out
only by the final digest check). And a stale upload URL (the ``Location`` of an earlier step) is
answered 404, where the spec wants 416 on a ``PATCH`` and 204 with the current range on a ``GET``.

The registry keeps the upload's state in the ``_state`` query parameter of every ``Location`` it
sends: base64url of a 32-byte HMAC followed by JSON (``Name``, ``UUID``, ``Offset``,
``StartedAt``). The proxy reads it without the registry's secret, so it cannot tell a forged state
from a real one: it only ever uses a state to refuse a request (416), never to let anything through
that the registry would not judge itself. The latest state the registry sent for each upload is
remembered (bounded, in memory) to recognise stale URLs: with a second proxy replica sending to the
same registry, the newer of the two offsets wins, so a replica that missed a chunk does not refuse
the next one.

This module is pure; uploads.py applies it to requests.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

HMAC_SIZE = 32  # sha256 HMAC in front of the JSON
MAX_STATE = 4096  # characters of _state decoded at most; the registry's are about 200
MAX_UPLOADS = 10_000  # uploads remembered at once (a few hundred bytes each), oldest forgotten first
# The spec's "<first>-<last>"; the RFC 9110 form some HTTP libraries write ("bytes 0-19/20") too.
_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?(\d{1,18})-(\d{1,18})(?:/(?:\d{1,18}|\*))?")


@dataclass(frozen=True, slots=True)
class UploadState:
    """What an upload URL claims: its repository, upload id and the bytes received so far."""

    name: str
    uuid: str
    offset: int


def decode_state(token: str) -> UploadState | None:
    """The state in a ``_state`` value (already percent-decoded); None when it is not one."""
    if len(token) > MAX_STATE:
        return None
    try:
        raw = base64.b64decode(token, altchars=b"-_", validate=True)
        doc = json.loads(raw[HMAC_SIZE:]) if len(raw) > HMAC_SIZE else None
    except (binascii.Error, ValueError):  # bad base64, bad UTF-8, bad JSON
        return None
    if not isinstance(doc, dict):
        return None
    name, uuid, offset = doc.get("Name"), doc.get("UUID"), doc.get("Offset")
    if not isinstance(name, str) or not isinstance(uuid, str) or not name or not uuid:
        return None
    if type(offset) is not int or offset < 0:  # bool is an int too, and so is nothing else
        return None
    return UploadState(name, uuid, offset)


def state_of_url(url: str) -> UploadState | None:
    """The state in an upload URL (absolute or a path with its query, percent-encoded)."""
    values = parse_qs(urlsplit(url).query).get("_state")
    return decode_state(values[0]) if values and len(values) == 1 else None


def parse_content_range(value: str) -> tuple[int, int] | None:
    """(first, last) byte of a chunk's ``Content-Range: <first>-<last>``; None when malformed."""
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        return None
    first, last = int(match[1]), int(match[2])
    return (first, last) if first <= last else None


def range_header(offset: int) -> str:
    """The ``Range`` of an upload holding ``offset`` bytes, as registry 2.8 writes it (0-0 when empty)."""
    return f"0-{max(offset - 1, 0)}"


@dataclass(frozen=True, slots=True)
class Latest:
    """The newest state the registry sent for an upload, and the URL (path and query) carrying it."""

    offset: int
    target: str


class UploadMemory:
    """The latest state per upload, learned from the registry's ``Location`` headers only."""

    def __init__(self, limit: int = MAX_UPLOADS) -> None:
        self._limit = limit
        self._latest: OrderedDict[tuple[str, str], Latest] = OrderedDict()

    def learn(self, location: str) -> None:
        state = state_of_url(location)
        if state is None:
            return
        url = urlsplit(location)
        key = (state.name, state.uuid)
        known = self._latest.get(key)
        # answers to concurrent requests may arrive out of order: the offset only grows
        if known is None or state.offset >= known.offset:
            self._latest[key] = Latest(state.offset, f"{url.path}?{url.query}")
        self._latest.move_to_end(key)
        while len(self._latest) > self._limit:
            self._latest.popitem(last=False)

    def latest(self, name: str, uuid: str) -> Latest | None:
        return self._latest.get((name, uuid))

    def forget(self, name: str, uuid: str) -> None:
        self._latest.pop((name, uuid), None)

    def __len__(self) -> int:
        return len(self._latest)


@dataclass(frozen=True, slots=True)
class Standing:
    """Where an upload stands as far as the proxy can tell, and the URL to continue it."""

    offset: int
    target: str
    stale: bool  # the request's URL is older than the latest one the registry sent


def standing(claimed: UploadState, latest: Latest | None, raw_target: str) -> Standing:
    """Combine the request's claimed state with the remembered one (the newer offset wins)."""
    if latest is None or claimed.offset >= latest.offset:
        return Standing(claimed.offset, raw_target, stale=False)
    return Standing(latest.offset, latest.target, stale=True)


def chunk_refusal(
    where: Standing, content_range: str | None, content_length: int | None
) -> str | None:
    """Why a chunk (``PATCH``, or ``PUT`` with a body) must be answered 416; None to forward it."""
    if where.stale:
        return f"this upload URL is out of date: the upload holds {where.offset} bytes"
    if content_range is None:
        return None  # a streamed chunk: appended where the upload stands, as the spec has it
    chunk = parse_content_range(content_range)
    if chunk is None:
        return f"Content-Range {content_range[:40]!r} is not <first>-<last>"
    first, last = chunk
    if first != where.offset:
        return f"the chunk starts at {first}, the upload holds {where.offset} bytes"
    if content_length is not None and content_length != last - first + 1:
        return f"Content-Range {first}-{last} announces {last - first + 1} bytes, Content-Length {content_length}"
    return None
