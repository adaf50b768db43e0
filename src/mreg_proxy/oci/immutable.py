"""Immutable tags (policy/rules.py): once pushed, such a tag never moves and is never deleted.

A push by tag is checked under the repository's manifest lock, after its body is read and before
it reaches the registry: the tag's current digest (a HEAD to the registry) against the digest of
the body. The same digest passes (a CI job that retries), another one gets 403 DENIED naming the
rule. A delete by tag of an immutable tag is refused outright; a delete by digest is refused when
an immutable tag points at that digest (registry 2.8's delete by digest takes every tag with it),
checked under the same lock, and refused (503) when the repository's tags cannot be read whole.
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
from ..spec.referrers_index import json_object
from ..transport.forwarder import upstream_url
from .referrers import TooLarge, read_capped

MAX_TAGS_CHECKED = 10_000  # a delete by digest in a repository with more tags is refused
# 10,000 tags of 128 characters, quoted and comma-separated, are 1.31 MB; the name and braces fit
MAX_TAG_LIST_BYTES = 2 << 20


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


class Unverifiable(Exception):
    """The tags of a repository could not be read whole: a delete by digest there cannot be shown
    to spare every immutable tag, so it is refused (503) rather than let through. ``transient``:
    worth trying again shortly (the registry failed), as opposed to a list over the cap."""

    def __init__(self, why: str, *, transient: bool) -> None:
        super().__init__(why)
        self.transient = transient


def guards(policy: Policy, name: str) -> bool:
    """Some immutable rule could match a tag of ``name``: only then does a delete by digest pay
    for reading the repository's tags."""
    return any(matches(rule.pattern, name) for rule in policy.immutable)


async def digest_delete_refusal(
    session: aiohttp.ClientSession, upstream: URL, policy: Policy, name: str, digest: str
) -> tuple[ImmutableRule, str] | None:
    """(rule, tag) when an immutable tag of ``name`` points at ``digest``. Raises Unverifiable
    when the tags cannot be read whole, or one of UPSTREAM_ERRORS; run it under the repository
    lock, or a first push of an immutable tag slips in between it and the delete."""
    if not guards(policy, name):
        return None
    tags = await _tags_of(session, upstream, name)
    protected = [(tag, rule) for tag in tags if (rule := policy.immutable_rule(name, tag))]
    for tag, rule in protected:
        if await current_digest(session, upstream, name, tag) == digest:
            return rule, tag
    return None


async def _tags_of(session: aiohttp.ClientSession, upstream: URL, name: str) -> list[str]:
    """Every tag of ``name`` ([] when the repository does not exist), or Unverifiable."""
    async with session.get(upstream_url(upstream, f"/v2/{name}/tags/list")) as response:
        if response.status == 404:
            return []  # no such repository: nothing to protect (the delete gets its own 404)
        if response.status != 200:
            raise Unverifiable(f"reading its tags answered {response.status}", transient=True)
        try:
            body = await read_capped(response.content.iter_any(), MAX_TAG_LIST_BYTES)
        except TooLarge:
            raise Unverifiable(f"its tag list is over {MAX_TAG_LIST_BYTES} bytes", transient=False) from None
    doc = json_object(body)
    tags = doc.get("tags") if doc is not None else "not JSON"
    if tags is None:  # registry 2.8 lists a repository without tags as null
        return []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise Unverifiable("its tag list is not a JSON list of tags", transient=True)
    if len(tags) > MAX_TAGS_CHECKED:
        raise Unverifiable(f"it has {len(tags)} tags, more than the {MAX_TAGS_CHECKED} checked", transient=False)
    return tags
