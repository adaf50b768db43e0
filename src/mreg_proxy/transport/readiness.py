"""``/readyz``: is the registry answering? Asked at most once a second, however often we are.

The endpoint needs no credentials, so without a memory every anonymous request would cost a
request to the registry. Concurrent askers share the answer in flight.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

import aiohttp
from aiohttp import web
from yarl import URL

from ..keys import READINESS, TLS

TTL = 1.0  # seconds an answer is reused
ASK_TIMEOUT = aiohttp.ClientTimeout(total=3)


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


async def registry_problem(session: aiohttp.ClientSession, upstream: URL) -> str | None:
    """None when the registry answers its API root (any status below 500), else why not."""
    try:
        async with session.get(upstream / "v2/", timeout=ASK_TIMEOUT) as response:
            if response.status < 500:
                return None
            return f"registry answered {response.status}"
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return f"registry unreachable: {exc.__class__.__name__}"


async def handle_healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def handle_readyz(request: web.Request) -> web.Response:
    """Ready when TLS, if wanted, can be served and the registry answers its API root (any
    status below 500; asked at most once a second, see Readiness)."""
    if request.app[TLS].refused:
        return web.Response(status=503, text="not ready: the TLS certificate and key are unusable\n")
    problem = await request.app[READINESS].problem()
    if problem is None:
        return web.Response(text="ok\n")
    return web.Response(status=503, text=f"not ready: {problem}\n")
