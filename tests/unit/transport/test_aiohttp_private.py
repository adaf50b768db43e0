"""The tripwire for a new aiohttp: one test per private name transport/aiohttp_private.py reads.

Each test drives a real aiohttp RequestHandler (on a socket pair) or a real Server, and checks that
the private name still exists and still means what the adapter says it means. When aiohttp renames
or changes one, the failure names it, so that the adapter (and nothing else) is what to fix before
widening the pin in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import AsyncIterator, Callable, Iterator, NoReturn

import aiohttp
import pytest
from aiohttp import web
from aiohttp.http import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from mreg_proxy.transport import aiohttp_private

pytestmark = pytest.mark.timeout(30)


@contextlib.contextmanager
def relied_on(name: str) -> Iterator[None]:
    """Turns a missing attribute into a failure that names it."""
    try:
        yield
    except AttributeError as exc:
        pytest.fail(changed(name, f"it is gone ({exc})"))


def changed(name: str, how: str) -> str:
    return (
        f"aiohttp {aiohttp.__version__} changed {name}, which mreg_proxy/transport/aiohttp_private.py "
        f"relies on: {how}. Adapt the adapter (and keep the pin in pyproject.toml below this version "
        f"until it passes)."
    )


class Connection:
    """A real RequestHandler on one end of a socket pair; the test holds the other end."""

    def __init__(self, handler: RequestHandler, client: socket.socket, name: str = "") -> None:
        self.handler = handler
        self.client = client
        self.name = name  # the private name under test

    def fail(self, how: str) -> NoReturn:
        pytest.fail(changed(self.name, how))


@contextlib.asynccontextmanager
async def connection(
    respond: Callable[[web.BaseRequest], object] | None = None,
) -> AsyncIterator[Connection]:
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        if respond is not None:
            await respond(request)  # type: ignore[misc]
        return web.Response(text="ok")

    loop = asyncio.get_running_loop()
    server = web.Server(answer)
    ours, theirs = socket.socketpair()
    try:
        _transport, handler = await loop.connect_accepted_socket(
            lambda: RequestHandler(server, loop=loop), ours
        )
        await asyncio.sleep(0)  # the handler's request loop starts
        try:
            yield Connection(handler, theirs)
        finally:
            handler.force_close()
            await server.shutdown(timeout=1)
    finally:
        theirs.close()
        ours.close()


@contextlib.asynccontextmanager
async def probe(
    name: str, respond: Callable[[web.BaseRequest], object] | None = None
) -> AsyncIterator[Connection]:
    """A connection to probe aiohttp's private ``name`` on: its absence fails naming it."""
    async with connection(respond) as conn:
        conn.name = name
        with relied_on(name):
            yield conn


async def turns(condition: Callable[[], bool], limit: int = 200) -> bool:
    """Let the loop run until ``condition`` holds (at most ``limit`` turns of 10 ms)."""
    for _ in range(limit):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


GET = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"


def post_head(length: int) -> bytes:
    return b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % length


async def test_server_kwargs_are_the_handler_args_of_the_application() -> None:
    name = "web.Server._kwargs"
    app = web.Application(handler_args={"max_headers": 7, "lingering_time": 0.5})
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        assert runner.server is not None
        with relied_on(name):
            kwargs = aiohttp_private.handler_kwargs(runner.server)
        if kwargs.get("max_headers") != 7 or kwargs.get("lingering_time") != 0.5:
            pytest.fail(changed(name, f"it no longer holds the application's handler_args: {kwargs!r}"))
        handler = RequestHandler(runner.server, loop=asyncio.get_running_loop(), **kwargs)
        assert handler.max_headers == 7, changed(name, "its arguments no longer make a RequestHandler")
    finally:
        await runner.cleanup()


async def test_waiter_is_pending_exactly_while_no_request_is_in_progress() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def respond(request: web.BaseRequest) -> None:
        started.set()
        await release.wait()

    async with probe("RequestHandler._waiter", respond) as conn:
        if not aiohttp_private.waits_for_request(conn.handler):
            conn.fail("it is not a pending future on a fresh connection")
        conn.client.sendall(b"GET /x HTTP/1.1\r\nHo")  # headers still coming: still idle
        await asyncio.sleep(0.05)
        if not aiohttp_private.waits_for_request(conn.handler):
            conn.fail("it is not pending while a request's headers are still coming")
        conn.client.sendall(b"st: a\r\n\r\n")
        await asyncio.wait_for(started.wait(), 5)
        if aiohttp_private.waits_for_request(conn.handler):
            conn.fail("it is still pending while a request is handled")
        release.set()
        if not await turns(lambda: aiohttp_private.waits_for_request(conn.handler)):
            conn.fail("it is not pending again once the answer is sent")


async def test_current_request_is_the_request_being_handled() -> None:
    release = asyncio.Event()
    handled: list[web.BaseRequest] = []

    async def respond(request: web.BaseRequest) -> None:
        handled.append(request)
        await release.wait()

    async with probe("RequestHandler._current_request", respond) as conn:
        if aiohttp_private.current_request(conn.handler) is not None:
            conn.fail("it is not None before any request")
        conn.client.sendall(GET)
        assert await turns(lambda: bool(handled))
        if aiohttp_private.current_request(conn.handler) is not handled[0]:
            conn.fail("it is not the request the application is handling")
        release.set()
        if not await turns(lambda: aiohttp_private.current_request(conn.handler) is None):
            conn.fail("it is not None again once the answer is sent")


async def test_request_count_counts_each_message_parsed_at_once() -> None:
    async with probe("RequestHandler._request_count") as conn:
        before = aiohttp_private.parsed_count(conn.handler)
        if before != 0:
            conn.fail(f"it is {before!r} on a fresh connection, not 0")
        # data_received as the transport calls it: the count must move synchronously
        conn.handler.data_received(GET + GET)
        after = aiohttp_private.parsed_count(conn.handler)
        if after != 2:
            conn.fail(f"two pipelined requests fed in one call count {after!r}")
        conn.handler.data_received(b"NOT HTTP AT ALL\r\n\r\n")
        if aiohttp_private.parsed_count(conn.handler) != 3:
            conn.fail("a request that cannot be parsed no longer counts as one")


async def test_messages_hold_the_last_parsed_request_and_its_body() -> None:
    async with probe("RequestHandler._messages") as conn:
        if aiohttp_private.last_parsed(conn.handler) is not None:
            conn.fail("it is not empty on a fresh connection")
        conn.handler.data_received(post_head(10) + b"abcd")
        last = aiohttp_private.last_parsed(conn.handler)
        if last is None or not isinstance(last[0], RawRequestMessage) or last[0].method != "POST":
            conn.fail(f"the request just parsed is not its last (message, body): {last!r}")
        if not isinstance(last[1], StreamReader) or last[1].is_eof():
            conn.fail(f"the body of the request just parsed is not an open StreamReader: {last[1]!r}")


async def test_messages_hold_an_error_record_for_an_unparsable_request() -> None:
    async with probe("RequestHandler._messages") as conn:
        conn.handler.data_received(b"NOT HTTP AT ALL\r\n\r\n")
        last = aiohttp_private.last_parsed(conn.handler)
        if last is None or isinstance(last[0], RawRequestMessage):
            conn.fail(f"an unparsable request does not queue an error record: {last!r}")
        if not isinstance(getattr(last[0], "exc", None), BaseException):
            conn.fail(f"its error record has no exception in .exc: {last[0]!r}")


async def test_force_close_flag_is_set_by_force_close() -> None:
    async with probe("RequestHandler._force_close") as conn:
        if aiohttp_private.closing_now(conn.handler) is not False:
            conn.fail("it is not False on a fresh connection")
        conn.handler.force_close()
        if aiohttp_private.closing_now(conn.handler) is not True:
            conn.fail("force_close() does not set it")


async def test_resume_reading_for_buffer_lifts_the_full_queue_pause() -> None:
    async with probe("BaseProtocol._resume_reading_for_buffer") as conn:
        transport = conn.handler.transport
        assert isinstance(transport, asyncio.Transport)
        # more pipelined requests at once than aiohttp queues: it pauses the transport itself
        conn.handler.data_received(GET * 200)
        if transport.is_reading():
            conn.fail("a full queue of pipelined requests no longer pauses reading")
        conn.handler.resume_reading(resume_parser=False)
        if transport.is_reading():
            conn.fail("resume_reading() alone now lifts the full-queue pause")
        aiohttp_private.release_buffer_hold(conn.handler)
        if not transport.is_reading():
            conn.fail("it no longer resumes reading paused for a full queue")


async def test_payload_size_is_the_body_bytes_buffered_and_unread() -> None:
    async with probe("StreamReader._size") as conn:
        conn.handler.data_received(post_head(10) + b"abcd")
        last = aiohttp_private.last_parsed(conn.handler)
        assert last is not None
        payload = last[1]
        if (buffered := aiohttp_private.buffered_bytes(payload)) != 4:
            conn.fail(f"4 body bytes received are counted {buffered!r}")
        payload.read_nowait()
        if aiohttp_private.buffered_bytes(payload) != 0:
            conn.fail("it is not 0 once the application has read what was buffered")


async def test_flow_control_pauses_through_the_public_methods() -> None:
    """Not a private name, but the public seam connection.py counts on instead of aiohttp's private
    ``_reading_paused``: a body buffer past its limit calls pause_reading(), reading it calls
    resume_reading()."""
    calls: list[str] = []

    class Watched(RequestHandler):
        def pause_reading(self) -> None:
            calls.append("pause")
            super().pause_reading()

        def resume_reading(self, resume_parser: bool = True) -> None:
            calls.append("resume")
            super().resume_reading(resume_parser)

    loop = asyncio.get_running_loop()

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    server = web.Server(answer)
    ours, theirs = socket.socketpair()
    try:
        _transport, handler = await loop.connect_accepted_socket(
            lambda: Watched(server, loop=loop, read_bufsize=16), ours
        )
        handler.data_received(post_head(1000) + b"x" * 100)  # past twice read_bufsize: pause
        last = aiohttp_private.last_parsed(handler)
        assert last is not None
        assert calls == ["pause"], "a body buffer past its limit no longer calls pause_reading()"
        await last[1].readany()
        assert calls == ["pause", "resume"], "reading the buffer no longer calls resume_reading()"
        handler.force_close()
        await server.shutdown(timeout=1)
    finally:
        theirs.close()
        ours.close()
