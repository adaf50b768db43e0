"""Manifest requests: malformed references answered by the proxy, writes and deletes in turn.

registry 2.8 answers some malformed references with 500; the proxy answers them as the spec
says (spec/references.py). Pushes and deletes by digest go through oci/referrers.py, which keeps
the referrers index; deleting by tag removes that tag only (tagdelete.py).
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

import aiohttp
from aiohttp import web

from .. import errors
from ..keys import ACCESS, POLICY, PRINCIPAL, SESSION, SETTINGS, TAG_LOCKS
from ..policy.rules import ImmutableRule, Policy
from ..spec.references import manifest_refusal
from ..spec.routes import Route
from ..transport.forwarder import UPSTREAM_ERRORS, upstream_failure
from . import immutable
from .referrers import delete_manifest, put_manifest
from .tagdelete import delete_tag

log = logging.getLogger("mreg.immutable")

RETRY_AFTER = 5  # seconds: a registry that failed to list tags is usually back by then


def refused(route: Route) -> web.Response | None:
    """The proxy's answer to a malformed manifest reference (registry 2.8 answers some with 500)."""
    assert route.reference is not None
    refusal = manifest_refusal(route.method, route.reference)
    return None if refusal is None else errors.error_response(refusal.status, refusal.code, refusal.message)


async def handle_write(request: web.Request, route: Route) -> web.StreamResponse:
    """registry 2.8 fails a delete by digest (500, a tag left dangling) while another tag link of
    the repository is being written: manifest writes of one repository take turns with each other
    and with tag deletions. Manifests are small; blob uploads are not held up. A manifest with a
    ``subject`` is added to its subject's referrers index under the same lock."""
    if answer := refused(route):
        return answer
    app = request.app
    assert route.name is not None
    # across replicas the lock orders nothing: each push by tag is also verified (manifestguard.py)
    tag = route.reference if route.is_tag else None
    policy = await app[POLICY].fresh()
    name = route.name

    async def keep_immutable(body: bytes) -> web.StreamResponse | None:
        """Under the repository lock: an immutable tag may be pushed again, never moved."""
        assert tag is not None
        try:
            found = await immutable.push_refusal(app[SESSION], app[SETTINGS].upstream, policy, name, tag, body)
        except UPSTREAM_ERRORS as exc:
            return upstream_failure(request, exc)
        if found is None:
            return None
        rule, current = found
        _audit_refusal(request, rule, name, tag, current, "push")
        return immutable.refusal(rule, name, tag, f"it points at {current}, the push would move it")

    return await put_manifest(
        request, app[SESSION], app[SETTINGS].upstream, app[TAG_LOCKS](name), name, tag,
        shared=app[SETTINGS].shared_storage,
        check=keep_immutable if tag is not None and policy.immutable_rule(name, tag) else None,
    )


def _audit_refusal(request: web.Request, rule: ImmutableRule, name: str, tag: str, digest: str | None, what: str) -> None:
    principal = request[PRINCIPAL]
    request.app[ACCESS].audit.record(
        "immutable_refused", user=principal.name, kind=principal.kind.value, address=request.remote,
        repository=name, tag=tag, digest=digest, action=what, rule=str(rule),
    )


def _tag_delete_refusal(request: web.Request, policy: Policy, name: str, tag: str) -> web.StreamResponse | None:
    rule = policy.immutable_rule(name, tag)
    if rule is None:
        return None
    _audit_refusal(request, rule, name, tag, None, "delete")
    return immutable.refusal(rule, name, tag, "it cannot be deleted")


def _digest_delete_check(
    request: web.Request, policy: Policy, name: str, digest: str
) -> Callable[[], Awaitable[web.StreamResponse | None]] | None:
    """The check delete_manifest runs under the repository lock (a push of an immutable tag at
    ``digest`` may be taking its turn before the delete); None where no immutable rule could match
    ``name``: those deletes read no tag list."""
    if not immutable.guards(policy, name):
        return None
    app = request.app

    async def keep_immutable() -> web.StreamResponse | None:
        try:
            found = await immutable.digest_delete_refusal(app[SESSION], app[SETTINGS].upstream, policy, name, digest)
        except immutable.Unverifiable as exc:
            # fail closed: a tag list not read whole could hide an immutable tag at this digest
            log.warning("delete of %s@%s refused: %s", name, digest, exc)
            return errors.error_response(
                503, "UNAVAILABLE",
                f"{name}: {exc}, so no check could show that the delete of {digest} spares every immutable tag;"
                " nothing was deleted",
                headers={"Retry-After": str(RETRY_AFTER)} if exc.transient else None,
            )
        except UPSTREAM_ERRORS as exc:
            failure = upstream_failure(request, exc)  # nothing deleted
            if isinstance(exc, aiohttp.ClientConnectorError):
                failure.headers["Retry-After"] = str(RETRY_AFTER)
            return failure
        if found is None:
            return None
        rule, tag = found
        _audit_refusal(request, rule, name, tag, digest, "delete")
        return immutable.refusal(rule, name, tag, f"it points at {digest}, which a delete by digest would take with it")

    return keep_immutable


async def handle_delete(request: web.Request, route: Route) -> web.StreamResponse:
    if answer := refused(route):
        return answer
    app = request.app
    assert route.name is not None and route.reference is not None
    policy = await app[POLICY].fresh()
    if route.is_tag:
        if answer := _tag_delete_refusal(request, policy, route.name, route.reference):
            return answer
        return await delete_tag(
            request, app[SESSION], app[SETTINGS].upstream, app[TAG_LOCKS], route.name, route.reference
        )
    # by digest: the registry's own delete, then the referrers index
    return await delete_manifest(
        request, app[SESSION], app[SETTINGS].upstream, app[TAG_LOCKS](route.name), route.name, route.reference,
        shared=app[SETTINGS].shared_storage,
        check=_digest_delete_check(request, policy, route.name, route.reference),
    )
