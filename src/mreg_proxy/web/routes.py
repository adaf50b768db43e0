"""The web page's routes, outside /v2: ``/`` (login, then the repositories) and ``/ui/...``.

``install`` is all the composition root calls. Every page but the login form and the two static
files needs a session; without one the browser is sent to ``/``.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from ..auth.audit import STDOUT
from ..config import ConfigError, Settings
from ..keys import SESSION, WEB
from ..transport.admission import no_early_continue
from . import admin, cleanup, pages, retention
from .login import Viewer, current_viewer, handle_login, handle_logout, login_page
from .pushtimes import PushTimes
from .registry import RegistryReader
from .render import WebState, page, see_other, templates
from .sessions import Signer, load_or_create_key

log = logging.getLogger("mreg.web")

STATIC = {"mreg.css": "text/css", "copy.js": "text/javascript"}
SUMMARIES = web.AppKey("web_summaries", pages.Summaries)

secured = page(lambda request: request.app[WEB])
ViewerHandler = Callable[[web.Request, WebState, Viewer], Awaitable[web.Response]]


def _logged_in(handler: ViewerHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    @secured
    async def with_viewer(request: web.Request) -> web.StreamResponse:
        state = request.app[WEB]
        viewer = await current_viewer(request, state)
        if viewer is None:
            return see_other("/")
        return await handler(request, state, viewer)

    return with_viewer


@secured
async def home(request: web.Request) -> web.StreamResponse:
    state = request.app[WEB]
    viewer = await current_viewer(request, state)
    if viewer is None:
        return login_page(request, state)
    return await pages.repositories(request, state, viewer)


@secured
async def login(request: web.Request) -> web.StreamResponse:
    return await handle_login(request, request.app[WEB])


@secured
async def logout(request: web.Request) -> web.StreamResponse:
    return await handle_logout(request, request.app[WEB])


async def _browse(request: web.Request, state: WebState, viewer: Viewer) -> web.Response:
    name, at, reference = request.match_info["tail"].partition("@")
    if at:
        return await pages.image(request, state, viewer, name, reference)
    return await pages.repository(request, state, request.app[SUMMARIES], viewer, name)


async def static(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    if name not in STATIC:
        return web.Response(status=404, text="no such file")
    body = resources.files("mreg_proxy.web").joinpath("static", name).read_bytes()
    response = web.Response(body=body, content_type=STATIC[name])
    response.headers["Cache-Control"] = "max-age=3600"  # the same for everyone, and not private
    return response


def install(app: web.Application, settings: Settings) -> None:
    """The web page's state and routes (before the catch-all 404 route). Without a usable session
    key (a read-only auth volume holding none, a damaged file) the registry is served without its
    web page: the page must never be the reason pulls stop, e.g. in an upgrade of replicas whose
    auth volume is a read-only Secret."""
    try:
        key = load_or_create_key(settings.ui_key_file)
    except ConfigError as exc:
        log.error("the web page is off: %s", exc)
        return
    reader = RegistryReader(lambda: app[SESSION], settings.upstream)
    audit = None if settings.audit_target == STDOUT else Path(settings.audit_target)
    app[WEB] = WebState(Signer(key), reader, templates(), PushTimes(audit), asyncio.Lock(), settings.registry_root)
    app[SUMMARIES] = pages.Summaries(reader)
    add = app.router
    add.add_get("/", home, expect_handler=no_early_continue)
    add.add_post("/ui/login", login, expect_handler=no_early_continue)
    add.add_post("/ui/logout", logout, expect_handler=no_early_continue)
    add.add_get("/ui/r/{tail:.+}", _logged_in(_browse), expect_handler=no_early_continue)
    add.add_get("/ui/delete", _logged_in(cleanup.confirm), expect_handler=no_early_continue)
    add.add_post("/ui/delete", _logged_in(cleanup.delete), expect_handler=no_early_continue)
    add.add_get("/ui/retention/{tail:.+}", _logged_in(retention.dry_run), expect_handler=no_early_continue)
    add.add_get("/ui/admin", _logged_in(admin.users), expect_handler=no_early_continue)
    add.add_get("/ui/audit", _logged_in(admin.audit), expect_handler=no_early_continue)
    add.add_get("/ui/static/{file}", secured(static), expect_handler=no_early_continue)
