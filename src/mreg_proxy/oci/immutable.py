"""Immutable tags (policy/rules.py): once pushed, such a tag never moves and is never deleted.

A push by tag is checked under the repository's manifest lock, after its body is read and before
it reaches the registry: the tag's current digest (a HEAD to the registry) against the digest of
the body. The same digest passes (a CI job that retries), another one gets 403 DENIED naming the
rule. A delete by tag of an immutable tag is refused outright; a delete by digest is refused when
an immutable tag points at that digest (registry 2.8's delete by digest takes every tag with it).
"""

from __future__ import annotations

import hashlib

import aiohttp
from aiohttp import web
from yarl import URL

from .. import errors
from ..auth.grants import matches
from ..policy.rules import ImmutableRule, Policy
from ..spec.names import ACCEPT_ALL
from ..transport.forwarder import upstream_url

MAX_TAGS_CHECKED = 10_000  # a delete by digest resolves at most this many immutable tags


async def current_digest(session: aiohttp.ClientSession, upstream: URL, name: str, tag: str) -> str | None:
    """The digest ``name:tag`` points at in the registry; None when there is no such tag."""
    async with session.head(
        upstream_url(upstream, f"/v2/{name}/manifests/{tag}"), headers={"Accept": ACCEPT_ALL}
    ) as response:
        if response.status == 404:
            return None
        if response.status != 200 or "Docker-Content-Digest" not in response.headers:
            raise aiohttp.ClientResponseError(
                response.request_info, (), status=response.status, message="resolving an immutable tag"
            )
        return response.headers["Docker-Content-Digest"]


def refusal(rule: ImmutableRule, name: str, tag: str, what: str) -> web.Response:
    return errors.error_response(
        403, "DENIED",
        f"{name}:{tag} is immutable (policy rule '{rule}'): {what}; push under a new tag instead",
    )


async def push_refusal(
    session: aiohttp.ClientSession, upstream: URL, policy: Policy, name: str, tag: str, body: bytes
) -> tuple[ImmutableRule, str] | None:
    """(rule, current digest) when pushing ``body`` as ``name:tag`` would move an immutable tag."""
    rule = policy.immutable_rule(name, tag)
    if rule is None:
        return None
    current = await current_digest(session, upstream, name, tag)
    if current is None or current == "sha256:" + hashlib.sha256(body).hexdigest():
        return None
    return rule, current


async def digest_delete_refusal(
    session: aiohttp.ClientSession, upstream: URL, policy: Policy, name: str, digest: str
) -> tuple[ImmutableRule, str] | None:
    """(rule, tag) when an immutable tag of ``name`` points at ``digest``."""
    if not any(matches(rule.pattern, name) for rule in policy.immutable):
        return None
    async with session.get(upstream_url(upstream, f"/v2/{name}/tags/list")) as response:
        if response.status != 200:
            return None  # no tags: nothing immutable to protect (the delete gets its own 404)
        tags = (await response.json(content_type=None)).get("tags") or []
    protected = [(tag, rule) for tag in tags[:MAX_TAGS_CHECKED] if (rule := policy.immutable_rule(name, tag))]
    for tag, rule in protected:
        if await current_digest(session, upstream, name, tag) == digest:
            return rule, tag
    return None
