"""Deleting a tag from the web page: a confirmation page, then a form with the session's CSRF token.

The delete itself is the API's (oci/tagdelete.py ``remove_tag``): the tag only, never the image by
digest, under the same repository lock, refused during a write pause and on the reserved
repository and for an immutable tag (policy/rules.py), allowed by the same ``decide`` as
``DELETE /v2/<name>/manifests/<tag>``, and audited as the same ``manifest_deleted`` event (with
``via: ui``).
"""

from __future__ import annotations

import json

from aiohttp import web

from ..keys import ACCESS, POLICY, SESSION, SETTINGS, TAG_LOCKS, WRITE_PAUSE
from ..oci.tagdelete import RegistryAnswer, remove_tag
from ..oci.writepause import CONTROL_REPOSITORY
from ..spec.names import MAX_NAME, is_tag
from ..transport.forwarder import UPSTREAM_ERRORS
from .login import FormRefused, Viewer, read_form
from .pages import may_delete, may_pull, missing, repository_path
from .render import WebState, problem, render, see_other


def _target(fields: dict[str, str] | web.Request) -> tuple[str, str]:
    source = fields.query if isinstance(fields, web.Request) else fields
    return source.get("repository", "")[:MAX_NAME + 1], source.get("tag", "")[:129]


def _refusal(request: web.Request, state: WebState, viewer: Viewer, name: str, tag: str) -> web.Response | None:
    """None when the viewer may delete this tag; else the page: missing for a repository they
    may not see, 403 (and a ``denied`` audit event, as the API writes) for one they may only read."""
    if not may_pull(viewer.principal, name) or not is_tag(tag):
        return missing(request, state, viewer)
    if may_delete(viewer.principal, name, tag) and name != CONTROL_REPOSITORY:
        return None
    request.app[ACCESS].audit.record(
        "denied", user=viewer.name, kind=viewer.principal.kind.value, address=request.remote,
        method="POST", repository=name, reference=tag, action="delete", via="ui",
    )
    return problem(request, state, 403, "Not allowed", f"You may not delete tags in {name}.",
                   viewer=viewer, csrf=viewer.csrf)


async def confirm(request: web.Request, state: WebState, viewer: Viewer) -> web.Response:
    name, tag = _target(request)
    if refusal := _refusal(request, state, viewer, name, tag):
        return refusal
    return render(request, state, "confirm.html", viewer=viewer, csrf=viewer.csrf, name=name, tag=tag,
                  back=repository_path(name))


async def delete(request: web.Request, state: WebState, viewer: Viewer) -> web.Response:
    try:
        form = await read_form(request)
    except FormRefused as refusal:
        return problem(request, state, refusal.status, "Form refused", str(refusal), viewer=viewer, csrf=viewer.csrf)
    if not state.signer.csrf_ok(viewer.session.nonce, form.get("csrf")):
        return problem(request, state, 403, "Form refused", "This form is not from this session; nothing was deleted.",
                       viewer=viewer, csrf=viewer.csrf)
    name, tag = _target(form)
    if refusal := _refusal(request, state, viewer, name, tag):
        return refusal
    app = request.app
    if remaining := await app[WRITE_PAUSE].remaining(app[SESSION]):
        return problem(request, state, 503, "Writes are paused",
                       f"The registry is paused for maintenance for about {remaining:.0f} s more; nothing was deleted.",
                       viewer=viewer, csrf=viewer.csrf)
    if rule := (await app[POLICY].fresh()).immutable_rule(name, tag):  # as the API refuses it
        app[ACCESS].audit.record(
            "immutable_refused", user=viewer.name, kind=viewer.principal.kind.value, address=request.remote,
            repository=name, tag=tag, action="delete", rule=str(rule), via="ui",
        )
        return problem(request, state, 403, "Immutable tag",
                       f"{name}:{tag} is immutable (policy rule '{rule}'); nothing was deleted.",
                       viewer=viewer, csrf=viewer.csrf)
    try:
        await remove_tag(app[SESSION], app[SETTINGS].upstream, app[TAG_LOCKS](name), name, tag, {})
    except RegistryAnswer as answer:  # 202: the registry deleted the tag itself (OCI 1.1)
        status = answer.response.status
        try:
            body = await answer.response.read()
        except UPSTREAM_ERRORS:
            body = b""
        finally:
            answer.response.close()
        if status == 202:
            return _deleted(request, viewer, name, tag)
        if status == 404:
            return problem(request, state, 404, "Not found", f"{name} has no tag {tag} (any more).",
                           viewer=viewer, csrf=viewer.csrf)
        return problem(request, state, 502, "Not deleted",
                       f"The registry refused to delete {name}:{tag} ({status} {_code(body)}).",
                       viewer=viewer, csrf=viewer.csrf)
    except UPSTREAM_ERRORS:
        return problem(request, state, 502, "Not deleted", "The registry did not answer; nothing was deleted.",
                       viewer=viewer, csrf=viewer.csrf)
    return _deleted(request, viewer, name, tag)


def _deleted(request: web.Request, viewer: Viewer, name: str, tag: str) -> web.Response:
    request.app[ACCESS].audit.record(
        "manifest_deleted", user=viewer.name, kind=viewer.principal.kind.value, address=request.remote,
        repository=name, tag=tag, via="ui",
    )
    return see_other(repository_path(name, deleted=tag))


def _code(body: bytes) -> str:
    try:
        return str(json.loads(body)["errors"][0]["code"])[:64]
    except (ValueError, KeyError, IndexError, TypeError):
        return "no error code"
