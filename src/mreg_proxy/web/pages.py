"""The browsing pages: repositories, a repository's tags, an image.

Who may see what is decided by the API's own ``decide(principal, route)`` on the route the API
request would have (spec/routes.py ``classify``): a repository is listed, counted, found by a
search or shown only when ``GET /v2/<name>/tags/list`` would be allowed; otherwise its page answers
exactly as for a repository that does not exist. Delete buttons appear where
``DELETE /v2/<name>/manifests/<tag>`` would be allowed.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from datetime import datetime, timezone
from urllib.parse import quote, urlencode

from aiohttp import web

from ..auth.decide import Decision, Principal, decide
from ..oci.writepause import CONTROL_REPOSITORY
from ..spec.names import MAX_NAME, is_digest, is_name, is_tag
from ..spec.routes import classify
from ..storage.tree import tag_push_times
from .login import Viewer
from .registry import Manifest, RegistryReader, bounded
from .render import WebState, problem, render
from .views import (
    BUDGETS, PAGE_BYTES, ROW_PLATFORMS, Platform, TagRow, children, clip, config_descriptor, created_of,
    human_size, image_size, image_view, is_index, platform_text, raw_text, referrers_by_type, short,
    shown_tags, sort_rows,
)

REPOSITORIES_PER_PAGE = 50
TAGS_PER_PAGE = 30  # a row's worst case (long names, ROW_PLATFORMS platforms) keeps a page < 100 kB
MAX_QUERY = MAX_NAME
MAX_PAGE = 100_000
MAX_SORTED_TAGS = 5000  # "newest first" resolves every tag; beyond this, tags are listed by name
MAX_SUMMARIES = 20_000
# "newest first" sends a HEAD per tag (up to MAX_SORTED_TAGS) and reads the manifests not seen yet:
# at most NEWEST_AT_ONCE such pages at once, each within NEWEST_SECONDS (waiting included), past
# which the page is listed by name (only its own tags resolved) and says so
NEWEST_AT_ONCE = 2
NEWEST_SECONDS = 20.0


def allowed(principal: Principal, method: str, path: str) -> bool:
    return decide(principal, classify(method, path)) is Decision.ALLOW


def may_pull(principal: Principal, name: str) -> bool:
    return is_name(name) and allowed(principal, "GET", f"/v2/{name}/tags/list")


def may_delete(principal: Principal, name: str, tag: str) -> bool:
    return is_name(name) and is_tag(tag) and allowed(principal, "DELETE", f"/v2/{name}/manifests/{tag}")


def may_see_retention(principal: Principal, name: str) -> bool:
    """The repository's retention dry run is shown to whoever may run retention there: the same
    rule as ``POST /mreg/retention`` (``Principal.may_delete_in``), never the reserved repository."""
    return may_pull(principal, name) and name != CONTROL_REPOSITORY and principal.may_delete_in(name)


def page_number(request: web.Request) -> int:
    raw = request.query.get("page", "1")
    return int(raw) if raw.isascii() and raw.isdigit() and 0 < len(raw) <= 6 and 0 < int(raw) <= MAX_PAGE else 1


def repository_path(name: str, **query: str) -> str:
    return f"/ui/r/{quote(name)}" + (f"?{urlencode(query)}" if query else "")


def missing(request: web.Request, state: WebState, viewer: Viewer) -> web.Response:
    """One answer for a repository that does not exist and for one the viewer may not see."""
    return problem(request, state, 404, "Not found", "There is no such repository or image.",
                   viewer=viewer, csrf=viewer.csrf)


async def repositories(request: web.Request, state: WebState, viewer: Viewer) -> web.Response:
    query = request.query.get("q", "")[:MAX_QUERY].strip()
    visible = [n for n in await state.reader.catalog() if may_pull(viewer.principal, n) and query in n]
    number = page_number(request)
    pages = max(1, -(-len(visible) // REPOSITORIES_PER_PAGE))
    number = min(number, pages)
    shown = visible[(number - 1) * REPOSITORIES_PER_PAGE:number * REPOSITORIES_PER_PAGE]
    listed = await bounded([lambda name=name: state.reader.tags(name) for name in shown])
    rows = [(name, repository_path(name), len(shown_tags(tags or []))) for name, tags in zip(shown, listed)]
    return render(request, state, "repositories.html", viewer=viewer, csrf=viewer.csrf, rows=rows, query=query,
                  total=len(visible), number=number, pages=pages,
                  previous=f"/?{urlencode({'q': query, 'page': number - 1})}" if number > 1 else "",
                  next=f"/?{urlencode({'q': query, 'page': number + 1})}" if number < pages else "")


class Summaries:
    """What a tag row shows of a manifest, by repository and digest (as DigestCache): computed
    once, as the digest never changes."""

    def __init__(self, reader: RegistryReader, limit: int = MAX_SUMMARIES) -> None:
        self.reader = reader
        self.limit = limit
        self._rows: OrderedDict[tuple[str, str], tuple[str, list[Platform], str]] = OrderedDict()
        self.newest_pages = asyncio.Semaphore(NEWEST_AT_ONCE)

    async def row(self, name: str, tag: str) -> TagRow | None:
        digest = await self.reader.resolve(name, tag)
        if digest is None:  # deleted since the tag list was read
            return None
        key = (name, digest)
        known = self._rows.get(key)
        if known is None:
            manifest = await self.reader.manifest(name, digest, live=True) if is_digest(digest) else None
            if manifest is None:
                return None
            known = await self._summarise(name, manifest)
            self._rows[key] = known
            if len(self._rows) > self.limit:
                self._rows.popitem(last=False)
        else:
            self._rows.move_to_end(key)
        kind, platforms, created = known
        return TagRow(tag, digest, kind, list(platforms), created)

    async def _summarise(self, name: str, manifest: Manifest) -> tuple[str, list[Platform], str]:
        if is_index(manifest.doc, manifest.media_type):
            platforms, created = [], ""
            for child in children(manifest.doc):
                image = (await self.reader.manifest(name, child["digest"], live=True)
                         if is_digest(child["digest"]) else None)
                size = image_size(image.doc) if image else 0
                platforms.append(Platform(platform_text(child.get("platform")), size, child["digest"]))
                if not created and image is not None and (config := config_descriptor(image.doc)):
                    created = created_of(await self.reader.config(name, config[0]))
            return "index", platforms, created
        config = config_descriptor(manifest.doc)
        if config is None:
            return "artifact", [Platform("", image_size(manifest.doc), manifest.digest)], ""
        doc = await self.reader.config(name, config[0])
        return "image", [Platform(platform_text(doc), image_size(manifest.doc), manifest.digest)], created_of(doc)


async def note_push_times(state: WebState, name: str, rows: list[TagRow]) -> None:
    """Each row's push time: with the registry's storage mounted (MREG_REGISTRY_ROOT), its tag
    link's modification time, as retention reads it (storage/tree.py ``tag_push_times``: pushes
    straight to the registry count too); otherwise mreg's audit log (pushtimes.py). Rows with
    neither sort by creation time."""
    if state.registry_root is not None:
        times = await asyncio.to_thread(tag_push_times, state.registry_root, name, [row.tag for row in rows])
        for row in rows:
            moment = times.get(row.tag)
            row.pushed = "" if moment is None else utc_text(moment)
        return
    await state.refresh_pushes()
    for row in rows:
        row.pushed = state.pushes.of(name, row.tag)


def utc_text(moment: float) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` in UTC: how the audit log's times and the configs' compare."""
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def pull_line(request: web.Request, name: str, reference: str) -> str:
    separator = "@" if ":" in reference else ":"
    flag = "" if request.secure else " --tls-verify=false"
    return f"podman pull{flag} {request.host}/{name}{separator}{reference}"


async def repository(request: web.Request, state: WebState, summaries: Summaries, viewer: Viewer, name: str) -> web.Response:
    if not may_pull(viewer.principal, name):
        return missing(request, state, viewer)
    tags = await state.reader.tags(name)
    if tags is None:
        return missing(request, state, viewer)
    tags = shown_tags(tags)
    order = "name" if request.query.get("sort") == "name" or len(tags) > MAX_SORTED_TAGS else "newest"
    number = page_number(request)
    pages = max(1, -(-len(tags) // TAGS_PER_PAGE))
    number = min(number, pages)
    window = slice((number - 1) * TAGS_PER_PAGE, number * TAGS_PER_PAGE)
    slow = False
    if order == "newest":
        try:
            async with asyncio.timeout(NEWEST_SECONDS), summaries.newest_pages:
                found = await bounded([lambda tag=tag: summaries.row(name, tag) for tag in tags])
                rows = [row for row in found if row is not None]
                await note_push_times(state, name, rows)
            rows = sort_rows(rows, "newest")[window]
        except TimeoutError:
            order, slow = "name", True
    if order == "name":  # only the page's tags need resolving
        wanted = sort_rows([TagRow(t, "", "") for t in tags], "name")[window]
        found = await bounded([lambda tag=row.tag: summaries.row(name, tag) for row in wanted])
        rows = [row for row in found if row is not None]
        await note_push_times(state, name, rows)
    shown = [
        {
            "row": row, "short": short(row.digest), "size": human_size(row.size),
            "platforms": [(p.name, human_size(p.size)) for p in row.platforms[:ROW_PLATFORMS]],
            "more": max(0, len(row.platforms) - ROW_PLATFORMS),
            "pull": pull_line(request, name, row.tag),
            "image": repository_path(f"{name}@{row.digest}"),
            "delete": f"/ui/delete?{urlencode({'repository': name, 'tag': row.tag})}"
            if may_delete(viewer.principal, name, row.tag) else "",
        }
        for row in rows
    ]
    message = request.query.get("deleted", "")
    return render(request, state, "repository.html", viewer=viewer, csrf=viewer.csrf, name=name, rows=shown,
                  order=order, slow=slow, total=len(tags), number=number, pages=pages,
                  deleted=message[:128] if is_tag(message[:128]) else "",
                  retention=f"/ui/retention/{quote(name)}" if may_see_retention(viewer.principal, name) else "",
                  by_name=repository_path(name, sort="name"), by_newest=repository_path(name),
                  previous=repository_path(name, sort=order, page=str(number - 1)) if number > 1 else "",
                  next=repository_path(name, sort=order, page=str(number + 1)) if number < pages else "")


async def image(request: web.Request, state: WebState, viewer: Viewer, name: str, reference: str) -> web.Response:
    if not may_pull(viewer.principal, name) or not (is_digest(reference) or is_tag(reference)):
        return missing(request, state, viewer)
    manifest = await state.reader.manifest(name, reference)
    if manifest is None:
        return missing(request, state, viewer)
    entries = await state.reader.referrers(name, manifest.digest) if is_digest(manifest.digest) else []
    config_doc = None
    index = is_index(manifest.doc, manifest.media_type)
    config = None if index else config_descriptor(manifest.doc)
    if config is not None:
        config_doc = await state.reader.config(name, config[0])
    raw_config = manifest.doc.get("config")
    for budget in BUDGETS:  # the first that makes a page under PAGE_BYTES
        response = render(
            request, state, "image.html", viewer=viewer, csrf=viewer.csrf, name=name, reference=reference,
            digest=manifest.digest, media_type=clip(manifest.media_type, 100), repository=repository_path(name),
            raw=raw_text(manifest.body, budget.raw), pull=pull_line(request, name, manifest.digest),
            human_size=human_size, referrers=referrers_by_type(entries, budget),
            link=lambda digest: repository_path(f"{name}@{digest}"),
            platforms=[
                (platform_text(child.get("platform")), child["digest"], human_size(_size(child)))
                for child in children(manifest.doc)[:budget.items]
            ] if index else [],
            view=image_view(manifest.doc, config_doc, budget),
            artifact_type=clip(manifest.doc.get("artifactType") or "", budget.text),
            config_type=clip(raw_config.get("mediaType") or "", budget.text)
            if config is None and not index and isinstance(raw_config, dict) else "",
        )
        assert isinstance(response.body, bytes)
        if len(response.body) < PAGE_BYTES:
            break
    return response


def _size(descriptor: dict[str, object]) -> int | None:
    size = descriptor.get("size")
    return size if isinstance(size, int) else None
