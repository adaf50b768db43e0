"""A listening site whose connections become TLS or stay plain, decided per connection.

aiohttp's TCPSite fixes TLS when the socket is opened. Here each accepted connection is handed to
aiohttp's own request handler either as is or after ``loop.start_tls`` with the context in force at
that moment, so a new certificate, or HTTPS switched on or off, applies to new connections while
transfers in flight keep the connection they started on.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Callable, cast

from aiohttp import web

from .tls import TlsState

log = logging.getLogger("mreg.server")

HANDSHAKE_TIMEOUT = 15.0


class _Acceptor(asyncio.Protocol):
    """Receives the raw connection, then passes it (maybe wrapped in TLS) to aiohttp."""

    def __init__(
        self,
        make_handler: Callable[[], asyncio.Protocol],
        tls: TlsState,
        handshakes: set[asyncio.Task[None]],
    ) -> None:
        self._make_handler = make_handler
        self._tls = tls
        self._handshakes = handshakes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport, though not always an asyncio.Transport instance: uvloop's are not
        transport = cast(asyncio.Transport, transport)
        handler = self._make_handler()
        context = self._tls.context
        if context is None:
            transport.set_protocol(handler)
            handler.connection_made(transport)
            return
        # Not a byte may reach this protocol before start_tls takes over the transport.
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(_handshake(transport, handler, context))
        # the loop keeps only a weak reference to tasks; the site cancels these when it stops
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - reading is paused
        raise AssertionError("data before the connection was handed over")


class _HandOver(asyncio.Protocol):
    """Holds what the TLS layer delivers before aiohttp's handler owns the connection.

    start_tls finishes the handshake and may at once decrypt the first request, which TLS 1.3
    clients send right behind their last handshake message, before start_tls returns and the
    handler gets ``connection_made``. Those events are kept here and replayed, in order, after it.
    """

    def __init__(self) -> None:
        self._events: list[Callable[[asyncio.Protocol], object]] = []

    def data_received(self, data: bytes) -> None:
        self._events.append(lambda handler: handler.data_received(data))

    def eof_received(self) -> None:
        self._events.append(lambda handler: handler.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self._events.append(lambda handler: handler.connection_lost(exc))

    def hand_over(self, transport: asyncio.Transport, handler: asyncio.Protocol) -> None:
        transport.set_protocol(handler)
        handler.connection_made(transport)
        for event in self._events:
            event(handler)


async def _handshake(
    transport: asyncio.Transport, handler: asyncio.Protocol, context: ssl.SSLContext
) -> None:
    loop = asyncio.get_running_loop()
    pending = _HandOver()
    try:
        tls_transport = await loop.start_tls(
            transport, pending, context, server_side=True, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
        )
    except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
        peer = transport.get_extra_info("peername")
        log.info("TLS handshake with %s failed: %s", peer, exc)
        transport.abort()
        return
    if tls_transport is None:  # the peer closed during the handshake
        return
    pending.hand_over(tls_transport, handler)


class SwitchingSite(web.BaseSite):
    """Like web.TCPSite, with TLS decided per connection by a TlsState."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, tls: TlsState, *, backlog: int = 256
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._tls = tls
        self._handshakes: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        scheme = "https" if self._tls.context else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Acceptor(server, self._tls, self._handshakes),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )

    async def stop(self) -> None:
        for task in list(self._handshakes):
            task.cancel()
        await super().stop()
