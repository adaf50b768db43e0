"""The only module that touches aiohttp's private names: one function per name.

connection.py adds budgets to aiohttp's RequestHandler (a header block's total size, a body held
until the request is authorized, a stall sweep that costs nothing per chunk). aiohttp has no public
view of some of the state those need: whether the handler waits for a request, which request it
is serving, what its parser has just produced, how many body bytes it buffers. They are read here,
and nowhere else (tests/unit/transport/test_private_names.py scans the sources for it), so that a
new aiohttp release can break only this file: tests/unit/transport/test_aiohttp_private.py has one
test per name below, each naming the name and failing with a clear message when aiohttp changes
it. That suite is what to run first on a new aiohttp minor before widening the pin.

Each function takes the aiohttp object and returns plain values; none keeps state.
"""

from __future__ import annotations

from typing import Any, Mapping

from aiohttp import web
from aiohttp.http import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler


def handler_kwargs(server: web.Server) -> Mapping[str, Any]:
    """The arguments the runner's Server gives each RequestHandler it makes (the application's
    handler_args merged with the runner's access-log settings), for the site to make its own
    handler class with the same ones. ``Server._kwargs``."""
    return server._kwargs


def waits_for_request(handler: RequestHandler) -> bool:
    """The handler waits for a request: none parsed yet, or the last one answered, or its headers
    still coming. ``RequestHandler._waiter``: the future its request loop awaits then."""
    waiter = handler._waiter
    return waiter is not None and not waiter.done()


def current_request(handler: RequestHandler) -> web.BaseRequest | None:
    """The request being handled, from its creation until its response is finished.
    ``RequestHandler._current_request``."""
    return handler._current_request


def parsed_count(handler: RequestHandler) -> int:
    """How many messages the parser has produced on this connection (a parse error is one).
    ``RequestHandler._request_count``."""
    return handler._request_count


def last_parsed(handler: RequestHandler) -> tuple[RawRequestMessage | Any, StreamReader] | None:
    """The newest (message, body) pair the parser queued and the request loop has not taken yet:
    a RawRequestMessage, or an error record with an ``exc`` attribute for an unparsable request.
    ``RequestHandler._messages``."""
    messages = handler._messages
    return messages[-1] if messages else None


def closing_now(handler: RequestHandler) -> bool:
    """The connection closes as soon as possible: force_close() was called, or aiohttp decided
    so itself (a parse error, shutdown); the handler then ignores what arrives.
    ``RequestHandler._force_close``."""
    return handler._force_close


def release_buffer_hold(handler: RequestHandler) -> None:
    """Lift the pause aiohttp puts on the transport while its queue of parsed requests is full
    (resume_reading() alone leaves that one on). ``BaseProtocol._resume_reading_for_buffer``."""
    handler._resume_reading_for_buffer()


def buffered_bytes(payload: StreamReader) -> int:
    """Bytes of a request body received and not yet read by the application.
    ``StreamReader._size``."""
    return payload._size
