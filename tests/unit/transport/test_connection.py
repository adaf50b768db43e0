"""GuardedHandler's view of its connection for the stall sweep (openconns.py): a body held back
by the proxy itself waits on the proxy, not on the client."""

from __future__ import annotations

import asyncio
import socket
from typing import AsyncIterator

import pytest
from aiohttp import web

from mreg_proxy.transport.connection import GuardedHandler

pytestmark = pytest.mark.timeout(30)

POST_HEAD = b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n"


@pytest.fixture
async def handler() -> AsyncIterator[GuardedHandler]:
    decided = asyncio.Event()  # the authorization decision comes only at the end of a test

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        await decided.wait()
        return web.Response()

    loop = asyncio.get_running_loop()
    server = web.Server(answer)
    ours, theirs = socket.socketpair()
    try:
        _transport, protocol = await loop.connect_accepted_socket(
            lambda: GuardedHandler(server, loop=loop, on_close=lambda: None), ours
        )
        yield protocol
        decided.set()
        protocol.force_close()
        await server.shutdown(timeout=1)
    finally:
        theirs.close()
        ours.close()


async def test_a_body_held_until_authorization_does_not_wait_on_the_client(handler: GuardedHandler) -> None:
    handler.data_received(POST_HEAD)  # headers only: nothing of the body buffered
    assert handler.client_progress() is None


async def test_a_body_let_in_waits_on_the_client_until_it_comes(handler: GuardedHandler) -> None:
    handler.data_received(POST_HEAD)
    handler.resume_reading()  # admitted (admission.py)
    assert handler.client_progress() == 0
    handler.data_received(b"x" * 10)
    assert handler.client_progress() is None  # buffered: the application has bytes to forward


async def test_a_body_paused_again_by_its_buffer_does_not_wait_on_the_client(handler: GuardedHandler) -> None:
    handler.data_received(POST_HEAD)
    handler.resume_reading()
    handler.pause_reading()  # what the body's buffer does when the registry reads slowly
    assert handler.client_progress() is None
