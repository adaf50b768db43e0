"""Pages as responses: autoescaped templates, and the headers every answer of the web page carries.

Jinja2 with autoescape on for every template: whatever a pusher wrote (labels, history lines,
annotations, artifact types) reaches the page as text, never as markup. The policy headers are
set in one place, the ``page`` decorator, on every answer of every web handler (errors and
redirects too), so no handler can forget them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import jinja2
from aiohttp import web

from .pushtimes import PushTimes
from .registry import RegistryDown, RegistryReader
from .sessions import Signer

log = logging.getLogger("mreg.web")

# No inline script or style anywhere: the one script (copy buttons) and the stylesheet are files.
POLICY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
PRIVATE = {"Cache-Control": "no-store"}  # pages hold what only this viewer may see

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class WebState:
    signer: Signer
    reader: RegistryReader
    templates: jinja2.Environment
    pushes: PushTimes
    pushes_read: asyncio.Lock  # one reader of the audit log at a time
    registry_root: Path | None = None  # the registry's storage, mounted read-only: push times from its tag links

    async def refresh_pushes(self) -> None:
        async with self.pushes_read:
            await asyncio.to_thread(self.pushes.refresh)


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("mreg_proxy.web", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(request: web.Request, state: WebState, template: str, status: int = 200, **context: Any) -> web.Response:
    html = state.templates.get_template(template).render(context)
    return web.Response(status=status, text=html, content_type="text/html", charset="utf-8")


def problem(request: web.Request, state: WebState, status: int, title: str, message: str, **context: Any) -> web.Response:
    context.setdefault("viewer", None)
    context.setdefault("csrf", "")
    return render(request, state, "problem.html", status, title=title, message=message, **context)


def see_other(location: str) -> web.Response:
    """The answer to a form that worked, or to a page that needs a login: the browser GETs
    ``location`` (a path of this site, built by the handlers, never taken from the request)."""
    return web.Response(status=303, headers={"Location": location})


def page(state: Callable[[web.Request], WebState]) -> Callable[[Handler], Handler]:
    """A web handler: policy headers on every answer, a registry failure as a 502 page."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def secured(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except RegistryDown as exc:
                log.warning("web page %s: %s", request.path, exc)
                response = problem(request, state(request), 502, "The registry did not answer",
                                   "The registry behind this page did not answer properly; try again shortly.")
            response.headers.update(POLICY_HEADERS)
            response.headers.setdefault("Cache-Control", PRIVATE["Cache-Control"])
            return response

        return secured

    return wrap
