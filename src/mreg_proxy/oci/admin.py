"""mreg's own endpoints beside the API: the shared write pause, the metrics, retention runs and
garbage collection (admins; retention also for users with delete grants, on those repositories)."""

from __future__ import annotations

import json

from aiohttp import web

from .. import errors
from ..auth.decide import Kind
from ..auth.grants import Level
from ..auth.identify import admin_refusal, authenticate
from ..keys import MAINTENANCE, METRICS, POLICY, PRINCIPAL, SESSION, SETTINGS, WRITE_PAUSE
from ..spec.names import is_name
from ..transport.admission import admit
from ..transport.forwarder import UPSTREAM_ERRORS
from ..transport.metrics import CONTENT_TYPE
from .collect import DEFAULT_MIN_AGE, CollectError
from .retention_runs import RetentionError
from .tagdelete import RegistryAnswer
from .writepause import control


async def handle_write_pause(request: web.Request) -> web.Response:
    """The shared write pause (writepause.py)."""
    if refusal := await admin_refusal(request, "pause writes"):
        return refusal
    await admit(request)
    return await control(request, request.app[SESSION], request.app[WRITE_PAUSE], request[PRINCIPAL].name)


async def handle_metrics(request: web.Request) -> web.Response:
    mode = request.app[SETTINGS].metrics
    if mode == "off":
        return errors.not_found()
    if mode == "admin" and (refusal := await admin_refusal(request, "read the metrics")):
        return refusal
    return web.Response(body=request.app[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE})


MAX_BODY = 1024


async def handle_retention(request: web.Request) -> web.Response:
    """``POST /mreg/retention`` with ``{"repository": NAME or null, "dry_run": bool, "allow_empty":
    bool}``: a retention run over the repositories the caller may delete in (admins: all)."""
    principal = await authenticate(request)
    if principal is None or principal.kind is Kind.ANONYMOUS:
        return errors.unauthorized(request.app[SETTINGS].realm)
    if request.method != "POST":
        return errors.unsupported(request.method)
    may_delete = principal.may_delete_in
    if not principal.is_admin and not any(grant.level >= Level.DELETE for grant in principal.grants):
        return errors.error_response(403, "DENIED", f"{principal.name!r} may delete in no repository")
    await admit(request)
    try:
        doc = json.loads(await request.content.read(MAX_BODY + 1) or b"{}")
        if not isinstance(doc, dict) or set(doc) - {"repository", "dry_run", "allow_empty"}:
            raise ValueError
        repository, dry_run, allow_empty = doc.get("repository"), doc.get("dry_run", True), doc.get("allow_empty", False)
        if repository is not None and not (isinstance(repository, str) and is_name(repository)):
            raise ValueError
        if not isinstance(dry_run, bool) or not isinstance(allow_empty, bool):
            raise ValueError
    except ValueError:
        return errors.error_response(
            400, "UNSUPPORTED", 'expected {"repository": NAME or null, "dry_run": true|false, "allow_empty": true|false}'
        )
    if repository is not None and not may_delete(repository):
        return errors.error_response(403, "DENIED", f"{principal.name!r} may not delete in {repository}")
    try:
        report = await request.app[MAINTENANCE].retention(
            await request.app[POLICY].fresh(), may_delete, repository=repository, dry_run=dry_run,
            allow_empty=allow_empty, by=principal.name,
        )
    except RetentionError as exc:
        return errors.unavailable(502, str(exc))
    except UPSTREAM_ERRORS as exc:
        return errors.unavailable(503, f"the registry is not reachable: {exc!r}")
    return web.json_response(report.as_json(dry_run))


async def handle_gc(request: web.Request) -> web.Response:
    """``POST /mreg/gc`` with ``{"min_age": SECONDS}`` (optional): a collection (collect.py)."""
    if refusal := await admin_refusal(request, "collect garbage"):
        return refusal
    if request.method != "POST":
        return errors.unsupported(request.method)
    await admit(request)
    try:
        doc = json.loads(await request.content.read(MAX_BODY + 1) or b"{}")
        min_age = doc.get("min_age", DEFAULT_MIN_AGE) if isinstance(doc, dict) else None
        if isinstance(min_age, bool) or not isinstance(min_age, (int, float)) or not 0 <= min_age <= 30 * 86400:
            raise ValueError
    except ValueError:
        return errors.error_response(400, "UNSUPPORTED", 'expected {"min_age": SECONDS} (0 to 2592000) or nothing')
    try:
        collection = await request.app[MAINTENANCE].collect(request[PRINCIPAL].name, float(min_age))
    except CollectError as exc:
        return errors.unavailable(503, str(exc))
    except RegistryAnswer as answer:
        answer.response.close()
        return errors.unavailable(502, f"{answer.step}: the registry answered {answer.response.status}")
    except UPSTREAM_ERRORS as exc:
        return errors.unavailable(503, f"the registry is not reachable: {exc!r}")
    return web.json_response(collection.as_json())
