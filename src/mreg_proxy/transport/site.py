"""A listening site whose connections become TLS or stay plain, decided per connection.

aiohttp's TCPSite fixes TLS when the socket is opened. Here the site accepts connections itself
and hands each one to aiohttp's own request handler with ``loop.connect_accepted_socket``, with
the TLS context in force at that moment (or none). So a new certificate, or HTTPS switched on or
off, applies to new connections while transfers in flight keep the connection they started on.

connect_accepted_socket does the TLS handshake inside the event loop's own transport machinery,
which both asyncio and uvloop get right: upgrading a live transport with start_tls instead races
with uvloop, which starts reading a connection right after ``connection_made`` even when the
protocol paused it there.

Before a connection is handed over, its first byte is looked at (without reading it): a TLS
ClientHello starts with 0x16, an HTTP request with a letter. So a client that speaks the wrong one
gets a clear answer instead of a parse error or a failed handshake: plain HTTP on the HTTPS port is
told "this port speaks HTTPS"; a TLS probe on the plain port (podman tries HTTPS first) is closed
with one debug line. The site also caps how many connections are open at once, making room by
closing idle ones, and cuts transfers stalled by their client (openconns.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl

from aiohttp import web

from .. import errors
from . import aiohttp_private
from .connection import GuardedHandler
from .openconns import Open, OpenConnections
from .tls import TlsState

log = logging.getLogger("mreg.server")

HANDSHAKE_TIMEOUT = 15.0
TLS_RECORD_HANDSHAKE = 0x16  # the first byte of every TLS ClientHello
MAX_DRAIN = 64 * 1024  # a plain request sent to the HTTPS port: its headers, read and dropped
# the stall sweep runs this often (a fraction of the idle timeout, so that a stall is cut at
# most a quarter late), and at least every 5 s
MAX_SWEEP_INTERVAL = 5.0
SPEAKS_HTTPS = errors.raw_response(
    400, "Bad Request",
    "this port speaks HTTPS: use https:// (plain HTTP is refused)\n", "text/plain; charset=utf-8",
)


class SwitchingSite(web.BaseSite):
    """Like web.TCPSite, with TLS decided per connection by a TlsState.

    ``max_connections`` counts every accepted socket until it closes; at it, a new connection
    takes the place of an idle one, and is closed at once only when none is idle. ``idle_timeout``:
    seconds a new connection may stay silent, and a transfer may wait on its client without
    progress.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        tls: TlsState,
        *,
        backlog: int = 256,
        max_connections: int = 1000,
        idle_timeout: float = 60.0,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        # our own references: BaseSite keeps them too, under private names
        self._app_runner = runner
        self._listen_backlog = backlog
        self._host = host
        self._port = port
        self._tls = tls
        self._idle_timeout = idle_timeout
        self._connections = OpenConnections(max_connections)
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        scheme = "https" if self._tls.context else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        self._listener = socket.create_server(
            (self._host, self._port), family=family, backlog=self._listen_backlog
        )
        self._listener.setblocking(False)
        loop = asyncio.get_running_loop()
        self._accepting = loop.create_task(self._accept_forever(self._listener))
        self._sweeping = loop.create_task(self._sweep_forever())

    async def stop(self) -> None:
        for task in (self._accepting, self._sweeping):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._listener is not None:
            self._listener.close()
        for task in list(self._pending):
            task.cancel()
        await super().stop()

    async def _accept_forever(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection, address = await loop.sock_accept(listener)
            except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                log.error("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if not self._room_for_one_more():
                connection.close()
                continue
            entry = self._connections.add(address[0])  # counted at once: accepts come in bursts
            # waiting for the first byte (and a handshake) must not hold up the next accept
            task = loop.create_task(self._serve(connection, entry))
            entry.close = task.cancel  # evicted before the handover
            # the loop keeps only a weak reference to tasks; stop() cancels these
            self._pending.add(task)
            task.add_done_callback(functools.partial(self._served, connection, entry))

    def _room_for_one_more(self) -> bool:
        try:
            return self._connections.make_room()
        except Exception:  # a bug must cost a refused connection, never the accept loop
            log.exception("could not make room for a new connection: refused")
            return False

    def _served(self, connection: socket.socket, entry: Open, task: asyncio.Task[None]) -> None:
        """``_serve`` is over: close the connection unless a handler took it over (its
        connection_lost then counts it). Here rather than in ``_serve``: a task cancelled before
        it started (a connection evicted at once) never runs its finally clause."""
        self._pending.discard(task)
        if entry.handler is None:
            connection.close()
            self._connections.remove(entry)

    async def _sweep_forever(self) -> None:
        interval = min(MAX_SWEEP_INTERVAL, self._idle_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                self._connections.sweep(self._idle_timeout)
            except Exception:  # a bug must cost one sweep, never the next ones
                log.exception("stall sweep failed")

    async def _serve(self, connection: socket.socket, entry: Open) -> None:
        peer = entry.peer
        try:
            first = await _first_byte(connection, self._idle_timeout)
            context = self._tls.context
            if first is None:
                return  # silent or gone: nothing to answer
            if context is None and first[0] == TLS_RECORD_HANDSHAKE:
                state = "its TLS pair is unusable" if self._tls.refused else "TLS is off"
                log.debug("TLS handshake from %s on the plain-HTTP port (%s): closed", peer, state)
                return
            if context is not None and first[0] != TLS_RECORD_HANDSHAKE:
                log.info("plain HTTP from %s on the HTTPS port: answered 400", peer)
                with contextlib.suppress(OSError):
                    # what the client sent is read first: closing a socket with unread bytes sends
                    # a reset, and the client would lose the answer
                    connection.recv(MAX_DRAIN)
                    connection.send(SPEAKS_HTTPS)  # a few hundred bytes: the socket buffer takes them
                return
            entry.handler = await self._hand_over(connection, context, entry)
            entry.close = entry.handler.force_close
        except OSError as exc:  # ssl.SSLError, ConnectionError and TimeoutError among them
            log.info("TLS handshake with %s failed: %s", peer, str(exc) or type(exc).__name__)
        except Exception:  # a bug must cost one connection, never the accept loop
            log.exception("could not serve the connection from %s", peer)

    async def _hand_over(
        self, connection: socket.socket, context: ssl.SSLContext | None, entry: Open
    ) -> GuardedHandler:
        server = self._app_runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        closed = functools.partial(self._connections.remove, entry)
        kwargs = aiohttp_private.handler_kwargs(server)

        made: list[GuardedHandler] = []

        # the runner's Server would build aiohttp's plain RequestHandler; same arguments, our class
        def protocol() -> GuardedHandler:
            made.append(GuardedHandler(server, loop=loop, on_close=closed, **kwargs))
            return made[-1]

        # the handler is the one the factory made: for a TLS connection uvloop returns its own
        # SSL protocol here, not ours (asyncio returns ours)
        await loop.connect_accepted_socket(
            protocol, connection, ssl=context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if context is not None else None,
        )
        return made[0]


async def _first_byte(connection: socket.socket, timeout: float) -> bytes | None:
    """The connection's first byte, left unread for whoever reads next; None when the client
    closes or stays silent for ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    connection.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            while True:
                readable = loop.create_future()
                loop.add_reader(connection.fileno(), lambda: readable.done() or readable.set_result(None))
                try:
                    await readable
                finally:
                    loop.remove_reader(connection.fileno())
                try:
                    return connection.recv(1, socket.MSG_PEEK) or None
                except (BlockingIOError, InterruptedError):
                    continue
    except (TimeoutError, ConnectionError):
        return None
