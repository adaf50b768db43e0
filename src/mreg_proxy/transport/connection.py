"""One client connection: aiohttp's request handler with the budgets a stranger must not exceed.

A request body is not read until the request is authorized: reading pauses as soon as a request
with a body has been parsed (admission.py resumes it, or drops the body).

aiohttp bounds each header line (``max_field_size``) and the number of fields (``max_headers``),
but not the bytes of one request's header block as a whole, and it answers malformed requests with
a traceback in the log. This handler adds a total header budget, nginx's way: bytes that arrive
while no request body is being read and no request has been completed count against it; past it
the client gets a 431 and the connection is closed. Malformed requests get a 400 in the registry's
JSON envelope and one log line.

An upload refused before its body was read (admission.py) drops what keeps arriving, without
parsing or buffering it, for a short lingering time before its connection closes: closing a
socket with unread bytes sends a reset, and a client still sending its body would lose the answer.

The handler also tells the listener (openconns.py) what it is doing, without costing anything per
chunk: whether it is idle (evictable when the connection cap is reached), and whether its transfer
waits on the client, with a mark that changes whenever the client makes progress (a stall sweep
compares marks every few seconds).
"""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
import termios
from typing import Any, Callable, Hashable

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.http import RawRequestMessage
from aiohttp.web_protocol import RequestHandler

from .. import errors
from . import aiohttp_private

log = logging.getLogger("mreg.connection")

# set on a request once it is authorized (admission.py): its body may come, and its connection is
# never closed to make room for a new one (openconns.py)
ADMITTED = web.RequestKey("admitted", bool)

# nginx: 8 KiB per line (large_client_header_buffers 4 8k), so a header block is at most ~32 KiB
MAX_LINE_BYTES = 8190
MAX_HEADERS = 64
HEADER_BUDGET = 32 * 1024
LINGER_SECONDS = 2.0


class GuardedHandler(RequestHandler):
    """aiohttp's RequestHandler, plus a budget for a request's header block, a body held until
    the request is authorized, and input dropped once the connection is refused."""

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
        self._dropping = False  # refused: what arrives is dropped until the connection closes
        self._write_waits = 0  # times writing to the client had to wait: each one means progress
        self._splicing_waits = False  # splice.relay waits for the client's socket to take more
        # reading paused by flow control (admission, a full body buffer): kept here from the
        # public pause/resume calls rather than read from aiohttp's private flag
        self._reading_held = False

    def pause_reading(self) -> None:
        super().pause_reading()
        self._reading_held = True

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._reading_held = False  # first: resuming the parser may pause reading again
        super().resume_reading(resume_parser)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._write_waits += 1

    def splice_waits(self, waiting: bool) -> None:
        """splice.relay writes to the socket itself: it says when it waits for the client."""
        self._splicing_waits = waiting
        if waiting:
            self._write_waits += 1

    def idle(self) -> bool:
        """No request in progress: waiting for a request, or for the rest of its headers (the
        state aiohttp's own keep-alive timeout closes)."""
        return aiohttp_private.waits_for_request(self)

    def unauthorized(self) -> bool:
        """A request is in progress that has not been found authorized (yet): a password check
        queued or held by the login throttle, a refusal being answered."""
        request = aiohttp_private.current_request(self)
        return request is not None and not request.get(ADMITTED)

    def client_progress(self) -> Hashable | None:
        """None unless the transfer under way waits on the client; then a value that changes
        whenever the client makes progress.

        Writing waits on the client while the transport has paused us or splice waits for the
        socket; the client's progress is then the bytes it takes (our buffer and the kernel's
        queue shrink). Reading waits on the client while a body is unfinished, nothing of it is
        buffered and reading is not paused (by admission, or by backpressure from the registry);
        the client's progress is then the bytes that arrive. Waiting on the registry is neither.
        """
        transport = self.transport
        if transport is None:
            return None
        if self.writing_paused or self._splicing_waits:
            return (self._write_waits, transport.get_write_buffer_size(), _unsent(transport))
        payload = self._payload
        if (
            payload is not None and not payload.is_eof() and not self._reading_held
            and not self._dropping and not aiohttp_private.buffered_bytes(payload)
        ):
            return payload.total_bytes
        return None

    def current(self) -> str:
        """The request in progress, as "METHOD path", for a log line."""
        request = aiohttp_private.current_request(self)
        return f"{request.method} {request.path}" if request is not None else "no request"

    def cut(self) -> None:
        """Close at once, with a reset: nothing buffered for the client is worth waiting for.

        The shutdown also wakes splice.relay, which waits on a duplicate of the descriptor that
        closing ours would not close."""
        transport = self.transport
        if transport is None:
            return
        fd = _fileno(transport)
        if fd is not None:
            sock = socket.socket(fileno=fd)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already reset by the client
            finally:
                sock.detach()  # the transport owns the descriptor
        transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._on_close()

    def drop_input(self) -> None:
        """From now on, drop what the client sends (the body of a refused request)."""
        self._dropping = True
        aiohttp_private.release_buffer_hold(self)
        self.resume_reading(resume_parser=False)

    def data_received(self, data: bytes) -> None:
        if self._dropping:
            return
        reading_body = self._payload is not None and not self._payload.is_eof()
        parsed = aiohttp_private.parsed_count(self)
        super().data_received(data)
        if aiohttp_private.parsed_count(self) != parsed:  # a request was completed: a new header block starts
            last = aiohttp_private.last_parsed(self)
            self._payload = last[1] if last is not None else None
            self._header_bytes = 0
            if last is not None and not isinstance(last[0], RawRequestMessage):
                self._after_parse_error(last[0].exc)
            elif self._payload is not None and not self._payload.is_eof():
                # the body waits for the authorization decision (admission.py): only what came
                # with the headers is held, not what arrives while a password is checked
                self.pause_reading()
        elif not reading_body and not aiohttp_private.closing_now(self):
            self._header_bytes += len(data)
            if self._header_bytes > self._header_budget:
                self._refuse_headers()

    def _after_parse_error(self, exc: BaseException) -> None:
        """The request could not be parsed: its error answer is queued and the connection closes
        after it. Everything after it is dropped, and the error lets go of its traceback, whose
        frames hold the data chunk it was raised on: without that, every chunk a client kept
        sending became one more error holding one more chunk, until the garbage collector's next
        full pass (hundreds of MiB under a header flood on uvloop)."""
        exc.__traceback__ = None
        self._dropping = True

    def _refuse_headers(self) -> None:
        peer = self.peername[0] if isinstance(self.peername, tuple) else self.peername
        log.info(
            "request headers from %s exceed %d bytes: answered 431, connection closed",
            peer, self._header_budget,
        )
        if self.transport is None:
            return
        message = f"the request headers exceed {self._header_budget} bytes"
        self.transport.write(errors.raw_response(
            431, "Request Header Fields Too Large",
            errors.envelope("HEADERS_TOO_LARGE", message), "application/json",
        ))
        self.force_close()  # the transport sends the answer, then closes

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


def _fileno(transport: Any) -> int | None:
    sock = transport.get_extra_info("socket")
    return sock.fileno() if sock is not None else None


def _unsent(transport: Any) -> int:
    """Bytes the kernel holds for the client, not yet acknowledged (Linux's SIOCOUTQ): they go
    down as the client reads, however slowly."""
    fd = _fileno(transport)
    if fd is None:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return 0
