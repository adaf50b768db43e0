"""Zero-copy relay of a response body from the registry's socket to the client's, with splice(2).

Copying a blob through Python costs about a core per GB/s (every chunk is received into a new
bytes object, then copied again into the kernel on send). splice moves the pages from one socket
to the other through a pipe without their ever entering the process, so the proxy's CPU cost of a
pull no longer grows with its size.

The caller owns both connections; this module only borrows their sockets for the body. The
readiness waits use duplicates of the file descriptors: asyncio refuses ``add_reader`` on a
descriptor that a transport owns, and the duplicates keep the sockets valid even if a transport
closes its own descriptor under us (the next splice then fails cleanly).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from typing import Callable, Iterator

# A bigger pipe means fewer splice calls and event-loop turns per blob. 1 MiB is Linux's default
# /proc/sys/fs/pipe-max-size, so unprivileged processes can have it.
PIPE_SIZE = 1 << 20
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)

AVAILABLE = hasattr(os, "splice") and hasattr(fcntl, "F_SETPIPE_SZ")


class UpstreamClosed(Exception):
    """The registry closed its connection before the whole body had been relayed."""


@contextlib.contextmanager
def _pipe() -> Iterator[tuple[int, int, int]]:
    """(read end, write end, capacity) of a fresh non-blocking pipe."""
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        try:
            capacity = fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # a lowered pipe-max-size: keep the default size
            capacity = fcntl.fcntl(write_fd, fcntl.F_GETPIPE_SZ)
        yield read_fd, write_fd, capacity
    finally:
        os.close(read_fd)
        os.close(write_fd)


@contextlib.contextmanager
def _dup(fd: int) -> Iterator[int]:
    copy = os.dup(fd)
    try:
        yield copy
    finally:
        os.close(copy)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    """Wait until ``fd`` is readable (or writable); errors and hang-ups count as ready."""
    waiter = loop.create_future()
    add, remove = (loop.add_writer, loop.remove_writer) if write else (loop.add_reader, loop.remove_reader)
    add(fd, lambda: waiter.done() or waiter.set_result(None))
    try:
        await waiter
    finally:
        remove(fd)


def _splice(src: int, dst: int, count: int, more: bool = False) -> int | None:
    """Bytes moved, or None when the call would block.

    ``more``: more body follows, so TCP need not push a partial segment now (like MSG_MORE);
    the last piece goes out without it and is sent at once.
    """
    try:
        return os.splice(src, dst, count, flags=_FLAGS | (os.SPLICE_F_MORE if more else 0))
    except BlockingIOError:
        return None


def socket_fd(transport: asyncio.BaseTransport) -> int | None:
    """The descriptor of a plain TCP transport; None for TLS (its bytes are not the payload)."""
    if transport.is_closing() or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    return sock.fileno() if sock is not None else None


def no_watch(waiting: bool) -> None:
    pass


async def relay(
    src_fd: int, dst: asyncio.WriteTransport, length: int,
    client_waits: Callable[[bool], None] = no_watch,
) -> int:
    """Move exactly ``length`` bytes from socket ``src_fd`` to the socket under ``dst``.

    The caller has stopped the source's transport from reading. What ``dst`` still has buffered
    (the response headers) goes out first. Returns the bytes moved; raises UpstreamClosed when the
    source ends early and ConnectionError (broken pipe, reset) when the client goes away. Memory
    use is one pipe, whatever ``length`` is. ``client_waits(True)`` and ``(False)`` bracket each
    wait for the client to take more (the stall sweep watches those, connection.py): a client
    that stops reading is cut by shutting its socket down, which ends the wait.
    """
    dst_fd = socket_fd(dst)
    if dst_fd is None:
        raise ConnectionResetError("client connection closed")
    loop = asyncio.get_running_loop()

    async def client_writable() -> None:
        client_waits(True)
        try:
            await _ready(loop, dst_copy, write=True)
        finally:
            client_waits(False)

    with _dup(src_fd) as src, _dup(dst_fd) as dst_copy, _pipe() as (pipe_r, pipe_w, capacity):
        while dst.get_write_buffer_size():
            await client_writable()
            await asyncio.sleep(0)  # let the transport's own writer run first
            if dst.is_closing():
                raise ConnectionResetError("client connection closed")
        remaining, in_pipe, sent = length, 0, 0
        while remaining or in_pipe:
            moved_in = moved_out = None
            if remaining and in_pipe < capacity:
                try:
                    moved_in = _splice(src, pipe_w, min(remaining, capacity - in_pipe))
                except OSError as exc:  # a reset from the registry, not from the client
                    raise UpstreamClosed(f"registry connection failed {remaining} bytes short: {exc}") from exc
                if moved_in == 0:
                    raise UpstreamClosed(f"registry closed the connection {remaining} bytes short")
                if moved_in:
                    remaining -= moved_in
                    in_pipe += moved_in
            if in_pipe:
                moved_out = _splice(pipe_r, dst_copy, in_pipe, more=remaining > 0)
                if moved_out:
                    in_pipe -= moved_out
                    sent += moved_out
            if moved_in or moved_out:
                await asyncio.sleep(0)  # a long transfer must not starve the other connections
            elif in_pipe:
                await client_writable()  # the client is the slow side
            else:
                await _ready(loop, src, write=False)  # waiting for the registry
        return sent
