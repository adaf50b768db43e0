"""Giving freed memory back to the system (glibc's allocator), so a burst does not leave the
proxy at its peak RSS for good.

Request and response bodies pass through as chunks of up to 1 MiB. glibc serves them from its
heaps once its mmap threshold has adapted upwards, and a heap returns freed pages only from its
top: after 200 parallel uploads the proxy kept 700 MiB it no longer used. ``malloc_trim(0)``
returns every free page of every heap; it is run every few seconds, which costs microseconds
when there is nothing to return. The number of heaps (arenas) is capped too: each thread that
ever allocated (bcrypt's executor, the DNS resolver) would otherwise get its own.

Freed memory includes what only the cycle collector frees: a flood of connections leaves
thousands of connection objects in reference cycles, promoted to the oldest generation, whose
full collection Python may not run for a long time (12 MiB after 1,000 refused uploads). When the
process stays well above its size at start, the trimmer runs a full collection first; what
start-up created is frozen out of those collections, so they stay cheap.

On a C library without these functions (musl) nothing is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
from typing import AsyncIterator

from aiohttp import web

log = logging.getLogger("mreg.memory")

M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h
ARENAS = 2
TRIM_INTERVAL = 5.0
GROWTH_BEFORE_COLLECTING = 1.15  # resident size over the size at start that is worth a full gc


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None
    return libc


LIBC = _glibc()


def cap_arenas() -> None:
    """At start, before any thread allocates."""
    if LIBC is not None:
        LIBC.mallopt(M_ARENA_MAX, ARENAS)


def trim() -> None:
    if LIBC is not None:
        LIBC.malloc_trim(0)


def resident_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def give_back(baseline: int) -> None:
    """One round: collect cycles if the process has grown well past ``baseline``, then trim."""
    if resident_bytes() > baseline * GROWTH_BEFORE_COLLECTING:
        gc.collect()
    trim()


async def trimmer(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: give memory back every TRIM_INTERVAL seconds while the app runs."""

    async def run() -> None:
        gc.freeze()  # what start-up made lives as long as the process
        baseline = resident_bytes()
        while True:
            await asyncio.sleep(TRIM_INTERVAL)
            give_back(baseline)

    task = asyncio.create_task(run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
