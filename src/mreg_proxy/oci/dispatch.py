"""Every /v2 request: who asks, may they, then the one handler its (endpoint, method) names.

What registry 2.8 gets wrong is mended by one entry of ``HANDLERS`` each; everything else is
forwarded as it is.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

from .. import errors
from ..auth.decide import Decision, decide
from ..auth.identify import authenticate
from ..keys import ACCESS, PRINCIPAL, PULL_TIMES, SESSION, SETTINGS, WRITE_PAUSE
from ..spec.routes import Action, Endpoint, Route, classify
from ..transport.admission import admit
from ..transport.forwarder import pass_through
from . import catalog, manifests, reads, referrers, tags, uploads
from .writepause import CONTROL_REPOSITORY, refused, reserved

RouteHandler = Callable[[web.Request, Route], Awaitable[web.StreamResponse]]


def audited(event: str, handler: RouteHandler) -> RouteHandler:
    """``handler``, plus one audit event when it succeeds (who, what, which digest)."""

    async def audited_handler(request: web.Request, route: Route) -> web.StreamResponse:
        response = await handler(request, route)
        if 200 <= response.status < 300:
            principal = request[PRINCIPAL]
            digest = response.headers.get("Docker-Content-Digest")
            request.app[ACCESS].audit.record(
                event, user=principal.name, kind=principal.kind.value, address=request.remote,
                repository=route.name, **({"tag": route.reference} if route.is_tag else {}),
                digest=digest or (None if route.is_tag else route.reference),
            )
        return response

    return audited_handler


def pulled(handler: RouteHandler) -> RouteHandler:
    """``handler``, plus a note of when the image was pulled (retention's pulled_within)."""

    async def noting_handler(request: web.Request, route: Route) -> web.StreamResponse:
        response = await handler(request, route)
        digest = response.headers.get("Docker-Content-Digest")
        if response.status == 200 and digest and route.name:
            request.app[PULL_TIMES].noted(route.name, digest)
        return response

    return noting_handler


HANDLERS: dict[tuple[Endpoint, str], RouteHandler] = {
    (Endpoint.MANIFEST, "GET"): pulled(reads.handle_manifest),
    (Endpoint.MANIFEST, "HEAD"): reads.handle_manifest,
    (Endpoint.MANIFEST, "PUT"): audited("manifest_pushed", manifests.handle_write),
    (Endpoint.MANIFEST, "DELETE"): audited("manifest_deleted", manifests.handle_delete),
    (Endpoint.BLOB, "GET"): reads.handle_blob,
    (Endpoint.BLOB, "HEAD"): reads.handle_blob,
    (Endpoint.BLOB, "DELETE"): audited("blob_deleted", pass_through),
    (Endpoint.CATALOG, "GET"): catalog.handle_list,
    (Endpoint.TAGS, "GET"): tags.handle_list,
    (Endpoint.REFERRERS, "GET"): referrers.handle_list,
    (Endpoint.REFERRERS, "HEAD"): referrers.handle_list,
    (Endpoint.UPLOADS, "POST"): uploads.handle_start,
    **{(Endpoint.UPLOAD, method): uploads.handle_continue for method in ("GET", "HEAD", "PATCH", "PUT", "DELETE")},
}


async def handle_v2(request: web.Request) -> web.StreamResponse:
    app = request.app
    principal = await authenticate(request)
    if principal is None:
        return errors.unauthorized(app[SETTINGS].realm)
    route = classify(request.method, request.path)
    decision = decide(principal, route)
    if decision is not Decision.ALLOW:
        return app[ACCESS].refuse(request, principal, route, decision, app[SETTINGS].realm)
    if route.action is not Action.PULL:
        if route.name == CONTROL_REPOSITORY:
            return reserved(request.method)
        if remaining := await app[WRITE_PAUSE].remaining(app[SESSION]):
            return refused(remaining)  # before admit: the body is dropped, never forwarded
    await admit(request)
    return await HANDLERS.get((route.endpoint, route.method), pass_through)(request, route)


async def handle_not_found(request: web.Request) -> web.Response:
    return errors.not_found()
