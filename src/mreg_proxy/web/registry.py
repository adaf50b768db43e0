"""What the pages read from the registry, with manifests and configs cached by digest.

The pages ask the registry on the pod's loopback, as the API handlers do, through the process's
one upstream session. A manifest or a config addressed by digest never changes, so it is kept in
a bounded LRU once its bytes were checked against the digest; a tag is resolved anew on every
page (tags move). Every body read has a byte budget.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from ..oci.referrers import TooLarge as OverLimit, read_capped, read_referrers
from ..oci.tagdelete import RegistryAnswer
from ..spec.names import ACCEPT_ALL
from ..spec.referrers_index import MAX_MANIFEST
from ..transport.forwarder import UPSTREAM_ERRORS, upstream_url

CATALOG_PAGE = 1000
MAX_CATALOG_PAGES = 100  # at most 100 000 repository names read for one page
MAX_CONFIG = 1 << 20  # bytes of an image config read for a page
MAX_TAG_LIST = 8 << 20  # bytes of a tag list (about 200 000 tags)
CACHE_BYTES = 32 << 20
FETCHES_AT_ONCE = 16  # registry requests one page keeps in flight
# one registry request of a page: the upstream session has no total timeout (a 10 GB layer is
# legitimate), a page's small reads do
READ_TIMEOUT = aiohttp.ClientTimeout(total=30)


class RegistryDown(Exception):
    """The registry could not be asked, or answered something a page cannot use."""


class TooLarge(RegistryDown):
    """A document over its byte budget."""


@dataclass(frozen=True, slots=True)
class Manifest:
    digest: str
    media_type: str
    body: bytes
    doc: dict[str, Any]


class DigestCache:
    """Content-addressed bytes, least recently used dropped first, at most ``limit`` bytes.

    Kept per repository (keys ``NAME@DIGEST``): the registry answers a digest only in the
    repositories that hold it, and so must the cache, or a digest seen in a repository hidden from
    someone would show under one they may pull."""

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.limit = limit
        self.size = 0
        self._entries: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def get(self, name: str, digest: str) -> tuple[str, bytes] | None:
        entry = self._entries.get(f"{name}@{digest}")
        if entry is not None:
            self._entries.move_to_end(f"{name}@{digest}")
        return entry

    def put(self, name: str, digest: str, media_type: str, body: bytes) -> None:
        key = f"{name}@{digest}"
        if key in self._entries or len(body) > self.limit // 8 or not matches(digest, body):
            return
        self._entries[key] = (media_type, body)
        self.size += len(body)
        while self.size > self.limit:
            _old, (_type, dropped) = self._entries.popitem(last=False)
            self.size -= len(dropped)


def matches(digest: str, body: bytes) -> bool:
    """Only sha256 digests are checked, hence cached: the others are asked each time."""
    return digest == "sha256:" + hashlib.sha256(body).hexdigest()


def _object(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise RegistryDown("the registry returned a document that is not JSON") from None
    if not isinstance(doc, dict):
        raise RegistryDown("the registry returned a document that is not a JSON object")
    return doc


async def _read(response: aiohttp.ClientResponse, limit: int) -> bytes:
    try:
        return await read_capped(response.content.iter_any(), limit)
    except OverLimit:  # the same budget, told as the pages tell a registry failure
        raise TooLarge(f"a document over {limit} bytes") from None


class RegistryReader:
    def __init__(self, session: Callable[[], aiohttp.ClientSession], upstream: URL) -> None:
        self._session = session
        self.upstream = upstream
        self.cache = DigestCache()

    async def _get(self, path: str, limit: int, accept: str | None = None) -> tuple[int, aiohttp.ClientResponse, bytes]:
        headers = {"Accept": accept} if accept else {}
        try:
            async with self._session().get(
                upstream_url(self.upstream, path), headers=headers, timeout=READ_TIMEOUT
            ) as response:
                body = await _read(response, limit) if response.status == 200 else b""
                return response.status, response, body
        except UPSTREAM_ERRORS as exc:
            raise RegistryDown(f"the registry is not reachable: {exc.__class__.__name__}") from None

    async def catalog(self) -> list[str]:
        names: list[str] = []
        last = None
        for _ in range(MAX_CATALOG_PAGES):
            query = {"n": str(CATALOG_PAGE), **({"last": last} if last else {})}
            status, _response, body = await self._get("/v2/_catalog?" + urlencode(query), MAX_TAG_LIST)
            if status != 200:
                raise RegistryDown(f"the registry answered {status} to its catalog")
            page = [n for n in _object(body).get("repositories") or [] if isinstance(n, str)]
            names.extend(page)
            if len(page) < CATALOG_PAGE:
                break
            last = page[-1]
        return names

    async def tags(self, name: str) -> list[str] | None:
        """The repository's tags; None when it does not exist."""
        status, _response, body = await self._get(f"/v2/{name}/tags/list", MAX_TAG_LIST)
        if status == 404:
            return None
        if status != 200:
            raise RegistryDown(f"the registry answered {status} to the tags of {name}")
        return [t for t in _object(body).get("tags") or [] if isinstance(t, str)]

    async def resolve(self, name: str, tag: str) -> str | None:
        """The digest ``tag`` points at now (None: no such tag), from a HEAD: a page whose
        manifests are cached reads no manifest body at all."""
        try:
            async with self._session().head(
                upstream_url(self.upstream, f"/v2/{name}/manifests/{tag}"), headers={"Accept": ACCEPT_ALL},
                timeout=READ_TIMEOUT,
            ) as response:
                status, digest = response.status, response.headers.get("Docker-Content-Digest")
        except UPSTREAM_ERRORS as exc:
            raise RegistryDown(f"the registry is not reachable: {exc.__class__.__name__}") from None
        if status == 404:
            return None
        if status != 200 or not digest:
            raise RegistryDown(f"the registry answered {status} to the manifest {name}:{tag}")
        return digest

    async def manifest(self, name: str, reference: str, *, live: bool = False) -> Manifest | None:
        """The manifest ``reference`` (tag or digest) names; None when there is none.

        A cached body is used only once the registry still has that manifest in ``name`` (a HEAD),
        or the API would 404 what the page shows: ``live`` says the caller just learned it (a tag
        resolved to it, or a live index names it)."""
        cached = self.cache.get(name, reference)
        if cached is not None and (live or await self.resolve(name, reference) is not None):
            return Manifest(reference, cached[0], cached[1], _object(cached[1]))
        if cached is not None:
            return None  # deleted from the registry since it was cached (the LRU drops its bytes in time)
        status, response, body = await self._get(f"/v2/{name}/manifests/{reference}", MAX_MANIFEST, ACCEPT_ALL)
        if status == 404:
            return None
        if status != 200:
            raise RegistryDown(f"the registry answered {status} to the manifest {name}:{reference}")
        digest = response.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
        media_type = response.headers.get("Content-Type", "")
        doc = _object(body)
        self.cache.put(name, digest, media_type, body)
        return Manifest(digest, media_type, body, doc)

    async def config(self, name: str, digest: str) -> dict[str, Any] | None:
        """An image's config blob; None when it is missing or not JSON (the page says so)."""
        cached = self.cache.get(name, digest)
        if cached is None:
            try:
                status, _response, body = await self._get(f"/v2/{name}/blobs/{digest}", MAX_CONFIG)
            except TooLarge:
                return None
            if status != 200:
                return None
            self.cache.put(name, digest, "config", body)
        else:
            body = cached[1]
        try:
            return _object(body)
        except RegistryDown:
            return None

    async def referrers(self, name: str, digest: str) -> list[dict[str, Any]]:
        try:
            return await asyncio.wait_for(read_referrers(self._session(), self.upstream, name, digest), READ_TIMEOUT.total)
        except RegistryAnswer as answer:
            answer.response.close()
            raise RegistryDown(f"the registry answered {answer.response.status} to a referrers index") from None
        except UPSTREAM_ERRORS as exc:
            raise RegistryDown(f"the registry is not reachable: {exc.__class__.__name__}") from None


async def bounded(calls: list[Callable[[], Any]], at_once: int = FETCHES_AT_ONCE) -> list[Any]:
    """Run the coroutine factories ``calls`` with at most ``at_once`` in flight; results in order."""
    gate = asyncio.Semaphore(at_once)

    async def one(call: Callable[[], Any]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))
