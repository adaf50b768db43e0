"""The referrers API and ``OCI-Subject`` on registry 2.8 (the index itself: spec/referrers_index.py).

- ``PUT /v2/<name>/manifests/<reference>``: the manifest is read whole (at most MAX_MANIFEST
  bytes) and forwarded; when it has a ``subject`` and the registry stored it, its descriptor is
  added to the subject's referrers index (tag ``sha256-<hex>``) and the answer carries
  ``OCI-Subject``. When the index cannot be written the answer goes without the header, which
  tells a client to keep the fallback tag itself, as it does on any registry without the API.
- ``DELETE /v2/<name>/manifests/<digest>``: the manifest is fetched first (afterwards nothing
  tells its subject) and, once the registry deleted it, dropped from its subject's index.
- ``GET /v2/<name>/referrers/<digest>[?artifactType=...]``: answered from the index; an unknown
  digest has an empty one.

All of it runs under the repository's lock (RepositoryLocks): every manifest write of a
repository takes its turn, so two referrers of one subject cannot overwrite each other's entry
through one proxy. Replicas on one bucket do not share that lock: each index write is read back
after a wait and merged again when another replica wrote over it (_update_index).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import AsyncIterable, Awaitable, Callable

import aiohttp
from aiohttp import web
from yarl import URL

from .. import errors
from ..keys import SESSION, SETTINGS
from ..spec.routes import Route
from .manifestguard import tag_stands
from .tagdelete import RegistryAnswer
from ..transport.forwarder import UPSTREAM_ERRORS, relay, send, upstream_failure, upstream_url
from ..spec.references import digest_refusal, is_known_digest
from ..spec.referrers_index import (
    INDEX,
    MAX_MANIFEST,
    Document,
    NotAnIndex,
    descriptor,
    encode,
    entries_of,
    fallback_tag,
    holds,
    index_document,
    json_object,
    listing,
    subject_of,
    with_referrer,
    without,
)
from ..spec.names import ACCEPT_ALL

log = logging.getLogger("mreg.referrers")

REPAIRS = 2  # merges after another replica overwrote the index; more would be a loop, not a race
SETTLE_CAP = 2.0  # seconds: the longest wait before an index write is read back


class TooLarge(Exception):
    """A body beyond MAX_MANIFEST."""


class IndexUnavailable(Exception):
    """The referrers index could not be read or written; the message says why, for the log."""


async def read_capped(content: AsyncIterable[bytes], limit: int = MAX_MANIFEST) -> bytes:
    """The whole body, or TooLarge as soon as it passes ``limit`` bytes."""
    chunks, size = [], 0
    async for chunk in content:
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def too_large() -> web.Response:
    return errors.error_response(413, "MANIFEST_INVALID", f"a manifest may hold at most {MAX_MANIFEST} bytes")


async def put_manifest(
    request: web.Request,
    session: aiohttp.ClientSession,
    upstream: URL,
    lock: asyncio.Lock,
    name: str,
    tag: str | None,
    *,
    shared: bool,
    check: Callable[[bytes], Awaitable[web.StreamResponse | None]] | None = None,
) -> web.StreamResponse:
    """The manifest is read whole (capped), ``check``ed (its refusal is the answer: immutable
    tags), stored, then, after a 201: a push by ``tag`` is verified against a delete on another
    replica (manifestguard.py), and a manifest with a ``subject`` joins its subject's referrers
    index."""
    if (request.content_length or 0) > MAX_MANIFEST:
        return too_large()
    try:
        body = await read_capped(request.content.iter_any())
    except TooLarge:
        return too_large()
    doc = json_object(body)
    subject = subject_of(doc) if doc is not None else None
    async with lock:
        try:
            if check is not None and (refusal := await check(body)):
                return refusal
            answer = await send(request, session, upstream, body=body)
        except UPSTREAM_ERRORS as exc:
            return upstream_failure(request, exc)
        try:
            try:
                stands = answer.status != 201 or tag is None or await tag_stands(
                    request, session, upstream, body, name, tag
                )
            except UPSTREAM_ERRORS as exc:
                return upstream_failure(request, exc)
            if not stands:
                return errors.unavailable(503, f"{name}:{tag} was deleted while it was pushed; push it again")
            added = {}
            if doc is not None and subject is not None and answer.status == 201:
                stored = answer.headers.get("Docker-Content-Digest", "")
                digest = stored if is_known_digest(stored) else "sha256:" + hashlib.sha256(body).hexdigest()
                entry = descriptor(doc, media_type=request.headers.get("Content-Type", ""), digest=digest, size=len(body))
                if await _update_index(session, upstream, name, subject, shared, entry=entry):
                    added["OCI-Subject"] = subject
            return await relay(request, answer, upstream, extra_headers=added)
        finally:
            answer.close()


async def delete_manifest(
    request: web.Request,
    session: aiohttp.ClientSession,
    upstream: URL,
    lock: asyncio.Lock,
    name: str,
    digest: str,
    *,
    shared: bool,
    check: Callable[[], Awaitable[web.StreamResponse | None]] | None = None,
) -> web.StreamResponse:
    """Under the repository lock: ``check`` (its refusal is the answer: immutable tags, which a
    push of a tag taking its turn before this delete may just have written), the registry's
    delete, then the deleted manifest leaves its subject's referrers index."""
    async with lock:
        if check is not None and (refusal := await check()):
            return refusal
        try:
            subject = await _subject_of_stored(session, upstream, name, digest)
            answer = await send(request, session, upstream)
        except UPSTREAM_ERRORS as exc:
            return upstream_failure(request, exc)
        try:
            if subject is not None and answer.status == 202:
                await _update_index(session, upstream, name, subject, shared, gone={digest})
            return await relay(request, answer, upstream)
        finally:
            answer.close()


async def list_referrers(
    request: web.Request, session: aiohttp.ClientSession, upstream: URL, name: str, digest: str
) -> web.StreamResponse:
    refusal = digest_refusal(digest)
    if refusal is not None:
        return errors.error_response(refusal.status, refusal.code, refusal.message)
    try:
        entries = await read_referrers(session, upstream, name, digest)
    except RegistryAnswer as answer:
        return await answer.relayed(request, upstream)
    except UPSTREAM_ERRORS as exc:
        return upstream_failure(request, exc)
    artifact_type = request.query.get("artifactType") or None
    headers = {"Content-Type": INDEX, errors.API_VERSION[0]: errors.API_VERSION[1]}
    if artifact_type is not None:
        headers["OCI-Filters-Applied"] = "artifactType"
    return web.Response(body=encode(listing(entries, artifact_type)), headers=headers)


async def read_referrers(
    session: aiohttp.ClientSession, upstream: URL, name: str, digest: str
) -> list[Document]:
    """The referrers index of ``digest`` (empty when it has none); raises RegistryAnswer for any
    other answer than found or not found (the caller closes it), or one of UPSTREAM_ERRORS. The
    API and the web page both read referrers through here."""
    found = await session.get(_index_url(upstream, name, digest), headers={"Accept": ACCEPT_ALL})
    if found.status not in (200, 404):
        raise RegistryAnswer(found, "read referrers index")
    try:
        if found.status == 404:  # no referrers yet (or no such repository): the empty index
            return []
        return entries_of(json_object(await read_capped(found.content.iter_any())) or {})
    except (TooLarge, NotAnIndex):
        log.warning("referrers of %s@%s: the tag %s is not a referrers index", name, digest, fallback_tag(digest))
        return []
    finally:
        found.close()


async def _subject_of_stored(
    session: aiohttp.ClientSession, upstream: URL, name: str, digest: str
) -> str | None:
    """The subject of the stored manifest ``digest``; None when it has none (or is not there)."""
    url = upstream_url(upstream, f"/v2/{name}/manifests/{digest}")
    async with session.get(url, headers={"Accept": ACCEPT_ALL}) as found:
        if found.status != 200:
            return None
        try:
            doc = json_object(await read_capped(found.content.iter_any()))
        except TooLarge:
            return None
    return subject_of(doc) if doc is not None else None


def _index_url(upstream: URL, name: str, subject: str) -> URL:
    return upstream_url(upstream, f"/v2/{name}/manifests/{fallback_tag(subject)}")


async def _update_index(
    session: aiohttp.ClientSession,
    upstream: URL,
    name: str,
    subject: str,
    shared: bool,
    *,
    entry: Document | None = None,
    gone: frozenset[str] | set[str] = frozenset(),
) -> bool:
    """Add ``entry`` to, and drop the digests ``gone`` from, the referrers index of ``subject``.
    False (and one log line) when it could not be written.

    With ``shared`` storage, replicas on one bucket each hold their own repository lock, and S3 has no compare-and-swap: a
    replica that read the index before this write landed writes its own over it, without this
    entry. Its write lands within about as long as this one took from read to write, since it
    read before this write landed. So the index is read only once the manifest is stored (read
    earlier, the whole manifest write would widen that window), and read back after waiting twice
    that long (once that long still lost 1 round in 100 on Ceph): when this entry is missing (or a
    digest ``gone`` is back), merge into what is stored and write again, at most REPAIRS times.
    A replica stalled between its read and its write for longer than the wait can still write
    over an entry: without compare-and-swap nothing can prevent that (docs/oci.md)."""
    url = _index_url(upstream, name, subject)
    loop = asyncio.get_running_loop()
    try:
        for _ in range(REPAIRS + 1):
            started = loop.time()
            previous = await _read_index(session, url)
            written = await _rewrite_index(session, upstream, name, url, previous, entry, set(gone))
            if not written or not shared:  # one proxy: its lock ordered every write, nothing to check
                return True
            await asyncio.sleep(min(2 * (loop.time() - started), SETTLE_CAP))
            if holds(entries_of(await _read_index(session, url)), entry, gone):
                return True
            log.warning("referrers index of %s@%s was overwritten by another replica: merging again", name, subject)
        raise IndexUnavailable(f"another replica overwrote it {REPAIRS + 1} times")
    except (IndexUnavailable, *UPSTREAM_ERRORS) as exc:
        log.warning("referrers index of %s@%s not updated: %s", name, subject, exc)
        return False


async def _rewrite_index(
    session: aiohttp.ClientSession,
    upstream: URL,
    name: str,
    url: URL,
    previous: Document | None,
    entry: Document | None,
    gone: set[str],
) -> bool:
    """Write the index with ``entry`` and without ``gone``; False when it needs no write."""
    before = entries_of(previous) if previous is not None else []
    entries = without(before, gone)
    if entry is not None:
        entries = with_referrer(entries, entry)
    if entries == before:
        return False  # a referrer pushed again, or nothing to drop: the stored index (or none) is right
    missing = await _put_index(session, url, index_document(previous, entries))
    if missing is None:
        return True
    # registry 2.8 refuses an index listing a manifest it does not hold: an entry whose manifest
    # was deleted behind the proxy's back. Drop every such entry (one HEAD each), then try again.
    absent = {e["digest"] for e in entries if not await _exists(session, upstream, name, e["digest"])}
    if not absent:
        raise IndexUnavailable(f"the registry refused the index: {missing}")
    if await _put_index(session, url, index_document(previous, without(entries, absent))) is not None:
        raise IndexUnavailable("the registry refused the index twice")
    return True


async def _read_index(session: aiohttp.ClientSession, url: URL) -> Document | None:
    """The stored index; None when there is none yet."""
    async with session.get(url, headers={"Accept": ACCEPT_ALL}) as found:
        if found.status == 404:
            return None
        if found.status != 200:
            raise IndexUnavailable(f"reading it answered {found.status}")
        try:
            doc = json_object(await read_capped(found.content.iter_any()))
        except TooLarge:
            doc = None
    if doc is None:
        raise IndexUnavailable("the tag holds something else than a JSON index")
    try:
        entries_of(doc)
    except NotAnIndex as exc:
        raise IndexUnavailable(f"the tag holds something else: {exc}") from None
    return doc


async def _put_index(session: aiohttp.ClientSession, url: URL, doc: Document) -> str | None:
    """None when stored; the registry's error text when it refused."""
    async with session.put(url, data=encode(doc), headers={"Content-Type": INDEX}) as stored:
        if stored.status == 201:
            return None
        text = (await stored.read()).decode(errors="replace").strip()
        if stored.status == 400 and _error_code(text) == "MANIFEST_BLOB_UNKNOWN":
            return text[:300]
        raise IndexUnavailable(f"writing it answered {stored.status}: {text[:300]}")


async def _exists(session: aiohttp.ClientSession, upstream: URL, name: str, digest: str) -> bool:
    url = upstream_url(upstream, f"/v2/{name}/manifests/{digest}")
    async with session.head(url, headers={"Accept": ACCEPT_ALL}) as found:
        if found.status not in (200, 404):
            raise IndexUnavailable(f"checking {digest} answered {found.status}")
        return found.status == 200


def _error_code(text: str) -> str:
    try:
        return str(json.loads(text)["errors"][0]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


async def handle_list(request: web.Request, route: Route) -> web.StreamResponse:
    assert route.name is not None and route.reference is not None
    return await list_referrers(request, request.app[SESSION], request.app[SETTINGS].upstream, route.name, route.reference)
