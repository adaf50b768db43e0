"""A listening site whose connections become TLS or stay plain, decided per connection.

aiohttp's TCPSite fixes TLS when the socket is opened. Here the site accepts connections itself
and hands each one to aiohttp's own request handler with ``loop.connect_accepted_socket``, with
the TLS context in force at that moment (or none). So a new certificate, or HTTPS switched on or
off, applies to new connections while transfers in flight keep the connection they started on.

connect_accepted_socket does the TLS handshake inside the event loop's own transport machinery,
which both asyncio and uvloop get right: upgrading a live transport with start_tls instead races
with uvloop, which starts reading a connection right after ``connection_made`` even when the
protocol paused it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl

from aiohttp import web

from .tls import TlsState

log = logging.getLogger("mreg.server")

HANDSHAKE_TIMEOUT = 15.0


class SwitchingSite(web.BaseSite):
    """Like web.TCPSite, with TLS decided per connection by a TlsState."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, tls: TlsState, *, backlog: int = 256
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._tls = tls
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        scheme = "https" if self._tls.context else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        self._listener = socket.create_server(
            (self._host, self._port), family=family, backlog=self._backlog
        )
        self._listener.setblocking(False)
        self._accepting = asyncio.get_running_loop().create_task(self._accept_forever(self._listener))

    async def stop(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._listener is not None:
            self._listener.close()
        for task in list(self._handshakes):
            task.cancel()
        await super().stop()

    async def _accept_forever(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection, _address = await loop.sock_accept(listener)
            except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                log.error("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            context = self._tls.context
            if context is None:
                await self._hand_over(connection, None)
                continue
            # the handshake takes round trips: it must not hold up the next accept
            task = loop.create_task(self._hand_over(connection, context))
            # the loop keeps only a weak reference to tasks; stop() cancels these
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _hand_over(self, connection: socket.socket, context: ssl.SSLContext | None) -> None:
        server = self._runner.server
        assert server is not None
        peer = None
        with contextlib.suppress(OSError):  # read now: a failed handshake closes the socket
            peer = connection.getpeername()
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                server, connection, ssl=context,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT if context is not None else None,
            )
        except OSError as exc:  # ssl.SSLError, ConnectionError and TimeoutError among them
            log.info("TLS handshake with %s failed: %s", peer, exc)
            connection.close()
        except Exception:  # a bug must cost one connection, never the accept loop
            log.exception("could not serve the connection from %s", peer)
            connection.close()
