"""mreg's own endpoints beside the API, for admins: the shared write pause and the metrics."""

from __future__ import annotations

from aiohttp import web

from .. import errors
from ..auth.identify import admin_refusal
from ..keys import METRICS, PRINCIPAL, SESSION, SETTINGS, WRITE_PAUSE
from ..transport.admission import admit
from ..transport.metrics import CONTENT_TYPE
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
