"""A request body is read only once the request is authorized.

Until then the connection's reading is paused (connection.py: only what arrived with the headers
is buffered), ``Expect: 100-continue`` is not granted, and a refused request is answered with
``Connection: close``; whatever body the client still sends is dropped, never buffered or
forwarded: a stranger cannot make the proxy hold megabytes per connection while a password is
being checked, nor upload anything through it.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.typedefs import Handler

from .connection import ADMITTED, GuardedHandler

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _body_pending(request: web.BaseRequest) -> bool:
    return request.body_exists and not request.content.is_eof()


async def no_early_continue(request: web.Request) -> None:
    """The routes' expect handler: aiohttp's default grants 100-continue before any middleware
    or handler runs, that is before authentication; ``admit`` grants it instead."""


async def admit(request: web.Request) -> None:
    """The request is authorized: let its body come."""
    request[ADMITTED] = True
    if not _body_pending(request):
        return
    request.protocol.resume_reading()
    if request.version == HttpVersion11 and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(CONTINUE)
        request.writer.output_size = 0  # as aiohttp's own expect handler: the response starts later


@web.middleware
async def body_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Close the connection of a request answered without having been admitted while its body is
    still unread (the connection paused reading it when the request was parsed)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # a refusal raised before authorization (e.g. a 429)
        if request.get(ADMITTED) or not _body_pending(request):
            raise
        response = web.Response(status=exc.status, reason=exc.reason, body=exc.body, headers=exc.headers)
    if not request.get(ADMITTED) and _body_pending(request):
        # The connection closes after the answer, once aiohttp's lingering time (app.py) is
        # over; until then what the client keeps sending is dropped unparsed (connection.py):
        # closing a socket with unread bytes sends a reset, and the client would lose the answer.
        response.force_close()
        protocol = request.protocol
        if isinstance(protocol, GuardedHandler):
            protocol.drop_input()
    return response
