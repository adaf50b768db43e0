"""The listener's book of open connections: who holds them, which are idle, which are stalled.

Two budgets a stranger must not be able to exhaust live here:

- The connection cap. When it is reached, a new connection does not simply get refused (one
  address holding the cap with idle connections would lock the team out): the oldest idle
  connection of the address that holds the most connections is closed to make room. Idle means
  no request in progress: a connection still silent, with unfinished headers, or idle between
  requests. When that address has none, its oldest connection whose request is not authorized
  goes instead (wrong passwords held by the login throttle or queued for bcrypt: a stranger
  re-sending them keeps every connection busy). Only when every open connection has an
  authorized request in progress is the new one refused.
- The stall timeout. A transfer that waits on its client (an upload whose body stopped coming,
  a download the client stopped reading) without progress for the idle timeout is cut. A sweep
  every few seconds compares each connection's progress mark (connection.py) with the last one
  seen, so the transfer itself pays nothing per chunk.

Addresses are keyed as the login throttle keys them: IPv4 addresses as such, IPv6 per /64.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator

from .connection import GuardedHandler
from .addresses import address_key

log = logging.getLogger("mreg.server")

# one line per this many seconds about the cap, however many connections it affects
LIMIT_LOG_INTERVAL = 10.0


@dataclass(eq=False, slots=True)
class Open:
    """One accepted connection. Until ``handler`` is set, the listener still holds it (waiting for
    its first byte, or its TLS handshake); ``close`` closes it either way."""

    peer: str
    key: str  # what connections are counted by: the address, or its /64
    close: Callable[[], None] = lambda: None  # set by the listener once it holds the connection
    handler: GuardedHandler | None = None
    mark: Hashable | None = None  # the handler's progress mark at the last sweep
    since: float = 0.0  # monotonic time the mark was first seen

    def idle(self) -> bool:
        return self.handler is None or self.handler.idle()

    def unauthorized(self) -> bool:
        return self.handler is not None and self.handler.unauthorized()


class OpenConnections:
    """Open connections by client address, oldest first; addresses by how many they hold."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._by_address: dict[str, dict[Open, None]] = {}  # dicts keep insertion order: age
        # addresses by the number of connections they hold, so that the busiest is found in
        # O(1) on each accept at the cap, whatever the number of addresses (a botnet's thousand)
        self._by_size: dict[int, dict[str, None]] = {}
        self._largest = 0
        self._count = 0
        self._logged = {"evict": float("-inf"), "refuse": float("-inf")}

    def __iter__(self) -> Iterator[Open]:
        for connections in list(self._by_address.values()):
            yield from list(connections)

    def add(self, peer: str) -> Open:
        entry = Open(peer, address_key(peer))
        connections = self._by_address.setdefault(entry.key, {})
        connections[entry] = None
        self._resized(entry.key, len(connections) - 1, len(connections))
        self._count += 1
        return entry

    def remove(self, entry: Open) -> None:
        """Forget a closed connection; closing it twice (evicted, then closed) counts once."""
        connections = self._by_address.get(entry.key)
        if connections is None or connections.pop(entry, False) is False:
            return
        self._count -= 1
        self._resized(entry.key, len(connections) + 1, len(connections))
        if not connections:
            del self._by_address[entry.key]

    def _resized(self, key: str, before: int, after: int) -> None:
        if before:
            bucket = self._by_size[before]
            del bucket[key]
            if not bucket:
                del self._by_size[before]
        if after:
            self._by_size.setdefault(after, {})[key] = None
        self._largest = max(self._largest, after)
        while self._largest and self._largest not in self._by_size:
            self._largest -= 1

    def make_room(self) -> bool:
        """At the cap, close the oldest idle connection of the busiest address, or else its oldest
        one with an unauthorized request (of the busiest address that has either); False when
        every connection has an authorized request in progress and the new one is to be refused.
        O(open connections) at worst, at the cap only."""
        if self._count < self._limit:
            return True
        for key, connections in self._busiest_first():
            victim = next((entry for entry in connections if entry.idle()), None)
            if victim is None:
                victim = next((entry for entry in connections if entry.unauthorized()), None)
            if victim is not None:
                self._log("evict", "connection limit reached (%d open): closing idle or unauthorized "
                          "connections of the busiest address %s (%d open)", self._count, key, len(connections))
                self.remove(victim)  # its slot is free now, though it closes on the next turn
                victim.close()
                return True
        self._log("refuse", "connection limit reached (%d open, MREG_MAX_CONNECTIONS), each with an "
                  "authorized request in progress: refusing new ones until some close", self._count)
        return False

    def _busiest_first(self) -> Iterator[tuple[str, dict[Open, None]]]:
        """Addresses by the connections they hold, most first (the first one is almost always
        the one that has a victim)."""
        for size in range(self._largest, 0, -1):
            for key in self._by_size.get(size, ()):  # make_room stops at the first victim
                yield key, self._by_address[key]

    def sweep(self, timeout: float) -> None:
        """Cut the transfers that have waited on their client without progress for ``timeout``."""
        now = time.monotonic()
        for entry in self:
            handler = entry.handler
            if handler is None:
                continue
            mark = handler.client_progress()
            if mark is None or mark != entry.mark:
                entry.mark, entry.since = mark, now
            elif now - entry.since >= timeout:
                log.info(
                    "transfer from %s stalled for %.0f s (%s): connection closed",
                    entry.peer, now - entry.since, handler.current(),
                )
                handler.cut()

    def _log(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._logged[kind] >= LIMIT_LOG_INTERVAL:
            self._logged[kind] = now
            log.warning(message, *args)
