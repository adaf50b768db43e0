"""One client connection: aiohttp's request handler with the budgets a stranger must not exceed.

aiohttp bounds each header line (``max_field_size``) and the number of fields (``max_headers``),
but not the bytes of one request's header block as a whole, and it answers malformed requests with
a traceback in the log. This handler adds a total header budget, nginx's way: bytes that arrive
while no request body is being read and no request has been completed count against it; past it
the client gets a 431 and the connection is closed. Malformed requests get a 400 in the registry's
JSON envelope and one log line.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from . import errors

log = logging.getLogger("mreg.connection")

# nginx: 8 KiB per line (large_client_header_buffers 4 8k), so a header block is at most ~32 KiB
MAX_LINE_BYTES = 8190
MAX_HEADERS = 64
HEADER_BUDGET = 32 * 1024


class GuardedHandler(RequestHandler):
    """aiohttp's RequestHandler, plus a budget for the bytes of a request's header block."""

    def __init__(
        self,
        *args: Any,
        on_close: Callable[[], None],
        header_budget: int = HEADER_BUDGET,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._on_close = on_close  # the listener counts open connections
        self._header_budget = header_budget
        self._header_bytes = 0
        self._payload: StreamReader | None = None  # body of the last request parsed

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._on_close()

    def data_received(self, data: bytes) -> None:
        reading_body = self._payload is not None and not self._payload.is_eof()
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a request was completed: a new header block starts
            self._payload = self._messages[-1][1] if self._messages else None
            self._header_bytes = 0
        elif not reading_body and not self._force_close:
            self._header_bytes += len(data)
            if self._header_bytes > self._header_budget:
                self._refuse_headers()

    def _refuse_headers(self) -> None:
        peer = self.peername[0] if isinstance(self.peername, tuple) else self.peername
        log.warning(
            "request headers from %s exceed %d bytes: answered 431, connection closed",
            peer, self._header_budget,
        )
        if self.transport is not None:
            message = f"the request headers exceed {self._header_budget} bytes"
            self.transport.write(errors.raw_response(
                431, "Request Header Fields Too Large",
                errors.envelope("HEADERS_TOO_LARGE", message), "application/json",
            ))
        self.force_close()  # the transport sends what it holds, then closes

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400:  # a bug in a handler: aiohttp's own answer and traceback
            return super().handle_error(request, status, exc, message)
        # A request aiohttp could not parse: one line, no traceback, and never the raw bytes
        # (they are the stranger's, and may be binary)
        too_long = isinstance(exc, LineTooLong)
        log.info("unparsable request from %s: %s", request.remote, type(exc).__name__)
        response = errors.error_response(
            431 if too_long else 400,
            "HEADERS_TOO_LARGE" if too_long else "BAD_REQUEST",
            f"a request line or header exceeds {self.max_field_size} bytes" if too_long
            else "the request is not valid HTTP/1.1",
        )
        response.force_close()
        return response
