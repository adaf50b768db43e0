"""``/readyz``: is the registry answering? Asked at most once a second, however often we are.

The endpoint needs no credentials, so without a memory every anonymous request would cost a
request to the registry. Concurrent askers share the answer in flight.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

TTL = 1.0  # seconds an answer is reused


class Readiness:
    def __init__(
        self, ask: Callable[[], Awaitable[str | None]], *, ttl: float = TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ask = ask  # None when ready, else why not
        self._ttl = ttl
        self._clock = clock
        self._answer: asyncio.Future[str | None] | None = None
        self._expiry = 0.0

    async def problem(self) -> str | None:
        now = self._clock()
        if self._answer is None or now >= self._expiry:
            self._answer = asyncio.ensure_future(self._ask())
            self._expiry = now + self._ttl
        return await asyncio.shield(self._answer)  # one client hanging up spoils no one's answer
