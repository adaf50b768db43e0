"""Retention runs in the proxy: gather the facts, plan (policy/retention.py), delete tags.

The facts: each repository's tags and the digests they point at (from the registry), push times
(the tag link's modification time in the registry's storage, mounted read-only in the proxy's
container: ``MREG_REGISTRY_ROOT``), pull times (policy/pulls.py, the file plus what this proxy
has not written yet). The dry run stops at the plan; the real run deletes exactly the planned
tags, one by one, with the proxy's single-tag delete (tagdelete.py), never by digest: two tags
may share one. A tag that moved since it was planned is left alone. Every deletion is audited.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Iterable, TypeVar

import aiohttp
from yarl import URL

from ..auth.audit import AuditLog
from ..policy.pulls import PullTimes, key, read_pull_times
from ..policy.retention import Doomed, RepositoryPlan, TagFacts, attribute_bytes, line, plan_repository
from ..policy.rules import Policy
from ..spec.names import ACCEPT_ALL
from ..spec.referrers_index import MAX_MANIFEST, json_object
from ..storage.tree import tag_push_times
from ..transport.forwarder import upstream_url
from .referrers import TooLarge, read_capped
from .tagdelete import RegistryAnswer, RepositoryLocks, remove_tag
from .writepause import CONTROL_REPOSITORY

log = logging.getLogger("mreg.retention")
T = TypeVar("T")

CATALOG_PAGE = 1000  # registry 2.8's largest catalog page
MAX_REPOSITORIES = 100_000
PARALLEL = 8  # manifest reads in flight to the registry


class RetentionError(Exception):
    """The run could not gather its facts; the message says which step failed."""


@dataclass
class Report:
    plans: list[RepositoryPlan] = field(default_factory=list)
    deleted: list[Doomed] = field(default_factory=list)
    moved: list[Doomed] = field(default_factory=list)  # planned, but the tag moved before its turn
    failed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [line(item) for plan in self.plans for item in plan.doomed]

    def as_json(self, dry_run: bool) -> dict[str, object]:
        return {
            "dry_run": dry_run,
            "lines": self.lines(),
            "left_alone": [f"{p.repository}: {p.left_alone}" for p in self.plans if p.left_alone and p.rule],
            "tags": sum(len(p.doomed) for p in self.plans),
            "freed_bytes": sum(p.freed for p in self.plans),
            "deleted": len(self.deleted),
            "moved": [f"{d.repository}:{d.tag}" for d in self.moved],
            "failed": self.failed,
        }


@dataclass
class Registry:
    """What a run reads and changes: the registry, its storage, the pull times."""

    session: aiohttp.ClientSession
    upstream: URL
    storage_root: Path | None
    pull_times: PullTimes

    async def _json(self, path: str) -> tuple[int, object]:
        async with self.session.get(upstream_url(self.upstream, path)) as response:
            if response.status != 200:
                return response.status, None
            doc = json_object(await _body(response, path))
            if doc is None:
                raise RetentionError(f"reading {path}: the registry's answer is not a JSON object")
            return 200, doc

    async def repositories(self) -> list[str]:
        found: list[str] = []
        last = ""
        while len(found) < MAX_REPOSITORIES:
            status, doc = await self._json(f"/v2/_catalog?n={CATALOG_PAGE}" + (f"&last={last}" if last else ""))
            if status != 200 or not isinstance(doc, dict):
                raise RetentionError(f"listing the repositories: the registry answered {status}")
            page = [name for name in doc.get("repositories") or [] if isinstance(name, str)]
            found.extend(page)
            if len(page) < CATALOG_PAGE:
                break
            last = page[-1]
        return found

    async def tags(self, name: str) -> list[str]:
        status, doc = await self._json(f"/v2/{name}/tags/list")
        if status == 404:
            return []
        if status != 200 or not isinstance(doc, dict):
            raise RetentionError(f"listing the tags of {name}: the registry answered {status}")
        return [tag for tag in doc.get("tags") or [] if isinstance(tag, str)]

    async def manifest(self, name: str, reference: str) -> tuple[str, bytes] | None:
        """(digest, body) of ``name:reference``; None when it is gone."""
        url = upstream_url(self.upstream, f"/v2/{name}/manifests/{reference}")
        async with self.session.get(url, headers={"Accept": ACCEPT_ALL}) as response:
            if response.status == 404:
                return None
            if response.status != 200:
                raise RetentionError(f"reading {name}:{reference}: the registry answered {response.status}")
            return response.headers["Docker-Content-Digest"], await _body(response, f"{name}:{reference}")

    def pushed(self, name: str, tags: Iterable[str]) -> dict[str, float | None]:
        """Each tag's push time: its link's modification time (blocking: call it in a thread)."""
        return tag_push_times(self.storage_root, name, tags)

    async def pulls(self) -> dict[str, float]:
        """Pull times from the file, and those this proxy has not written yet."""
        pending = self.pull_times.pending()  # on the loop, before the file: nothing falls between
        times = await asyncio.to_thread(read_pull_times, self.pull_times.path)
        for name, moment in pending.items():
            times[name] = max(moment, times.get(name, 0.0))
        return times


async def _body(response: aiohttp.ClientResponse, what: str) -> bytes:
    # content.read(n) returns what is buffered so far, not the whole body: read to the end, capped
    try:
        return await read_capped(response.content.iter_any(), MAX_MANIFEST)
    except TooLarge:
        raise RetentionError(f"reading {what}: the registry's answer is over {MAX_MANIFEST} bytes") from None


async def _bounded(limit: asyncio.Semaphore, work: Awaitable[T]) -> T:
    async with limit:
        return await work


async def plan_one(
    registry: Registry, policy: Policy, name: str, pulls: dict[str, float], now: float, allow_empty: bool,
    limit: asyncio.Semaphore,
) -> RepositoryPlan:
    if policy.retention_rule(name) is None:
        return RepositoryPlan(name, None, left_alone="no rule")
    tags = await registry.tags(name)
    answers = await asyncio.gather(*(_bounded(limit, registry.manifest(name, tag)) for tag in tags))
    pushed = await asyncio.to_thread(registry.pushed, name, tags)
    documents: dict[str, dict] = {}
    sizes: dict[str, int] = {}
    facts = []
    for tag, answer in zip(tags, answers):
        if answer is None:
            continue  # deleted meanwhile
        digest, body = answer
        sizes[digest] = len(body)
        documents[digest] = _parsed(body)
        facts.append(TagFacts(tag, digest, pushed.get(tag), pulls.get(key(name, digest))))
    plan = plan_repository(name, policy, facts, now, allow_empty=allow_empty)
    if not plan.doomed:
        return plan
    # the platform manifests of doomed and kept indexes, so that their blobs count on the right side
    children = {
        entry["digest"] for doc in documents.values() for entry in doc.get("manifests") or []
        if isinstance(entry, dict) and isinstance(entry.get("digest"), str)
    } - set(documents)
    answers = await asyncio.gather(*(_bounded(limit, registry.manifest(name, child)) for child in sorted(children)))
    for answer in answers:
        if answer is not None:
            digest, body = answer
            sizes[digest] = len(body)
            documents[digest] = _parsed(body)
    doomed_tags = {item.tag for item in plan.doomed}
    kept_digests = {f.digest for f in facts if f.tag not in doomed_tags}
    return attribute_bytes(plan, kept_digests, documents, sizes)


def _parsed(body: bytes) -> dict:
    return json_object(body) or {}


async def run_retention(
    registry: Registry,
    policy: Policy,
    may_delete: Callable[[str], bool],
    *,
    repository: str | None = None,
    dry_run: bool,
    allow_empty: bool = False,
    locks: RepositoryLocks,
    audit: AuditLog,
    by: str,
    clock: Callable[[], float] = time.time,
) -> Report:
    """Plan every repository in scope (``repository``, else the catalog) that ``may_delete``
    allows; unless ``dry_run``, delete the planned tags."""
    names = [repository] if repository else await registry.repositories()
    names = [name for name in names if name != CONTROL_REPOSITORY and may_delete(name)]
    pulls = await registry.pulls()
    now = clock()
    limit = asyncio.Semaphore(PARALLEL)
    report = Report()
    for name in names:
        report.plans.append(await plan_one(registry, policy, name, pulls, now, allow_empty, limit))
    if dry_run:
        return report
    for plan in report.plans:
        for item in plan.doomed:
            await _delete(registry, item, locks, audit, by, report)
    return report


async def _delete(
    registry: Registry, item: Doomed, locks: RepositoryLocks, audit: AuditLog, by: str, report: Report
) -> None:
    try:
        if not await remove_tag(
            registry.session, registry.upstream, locks(item.repository), item.repository, item.tag, {},
            expected_digest=item.digest,
        ):
            report.moved.append(item)
            return
    except RegistryAnswer as answer:
        answer.response.close()
        if answer.step == "delete by tag" and answer.response.status == 202:
            pass  # a registry that deletes single tags itself: done
        elif answer.response.status == 404:
            report.moved.append(item)  # deleted by someone else meanwhile
            return
        else:
            report.failed.append(f"{item.repository}:{item.tag}: {answer.step}: the registry answered {answer.response.status}")
            return
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        report.failed.append(f"{item.repository}:{item.tag}: {exc!r}")
        return
    report.deleted.append(item)
    audit.record(
        "retention_deleted", by=by, repository=item.repository, tag=item.tag, digest=item.digest, why=item.why,
    )
    log.info("retention: deleted %s:%s (%s)", item.repository, item.tag, item.why)
