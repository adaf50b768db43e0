"""Zero-copy bodies: the registry's socket to the client's with splice(2), and a file of the
registry's storage to the client's socket with sendfile(2) (send_file).

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
from typing import Awaitable, Callable, Iterator

# A bigger pipe means fewer splice calls and event-loop turns per blob. 1 MiB is Linux's default
# /proc/sys/fs/pipe-max-size, so unprivileged processes can have it.
PIPE_SIZE = 1 << 20
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)

AVAILABLE = hasattr(os, "splice") and hasattr(fcntl, "F_SETPIPE_SZ")
# bytes asked of one sendfile call: about what a socket's send buffer takes at most, so a hot file
# rarely needs more per turn, and a cold one (read from disk inside the call, on the event loop)
# holds the loop for one such read at most (40 ms at 100 MB/s)
SENDFILE_MAX = 4 << 20


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
    with _dup(src_fd) as src, _dup(dst_fd) as dst_copy, _pipe() as (pipe_r, pipe_w, capacity):
        client_writable = _client_writable(loop, dst_copy, client_waits)
        await _flush(dst, client_writable)
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


def _client_writable(
    loop: asyncio.AbstractEventLoop, fd: int, client_waits: Callable[[bool], None]
) -> Callable[[], Awaitable[None]]:
    async def client_writable() -> None:
        client_waits(True)
        try:
            await _ready(loop, fd, write=True)
        finally:
            client_waits(False)

    return client_writable


async def _flush(dst: asyncio.WriteTransport, client_writable: Callable[[], Awaitable[None]]) -> None:
    """Wait until what ``dst`` buffered (the response headers) has gone out: the socket is ours."""
    while dst.get_write_buffer_size():
        await client_writable()
        await asyncio.sleep(0)  # let the transport's own writer run first
        if dst.is_closing():
            raise ConnectionResetError("client connection closed")


class FileShrunk(Exception):
    """The file ended before the bytes it announced had been sent."""


async def send_file(
    file_fd: int, offset: int, length: int, dst: asyncio.WriteTransport,
    client_waits: Callable[[bool], None] = no_watch,
) -> int:
    """Send ``length`` bytes of file ``file_fd`` from ``offset`` to the socket under ``dst``, with
    sendfile(2): the pages go from the page cache to the socket without entering the process.

    Like relay: what ``dst`` buffered goes out first, ``client_waits`` brackets each wait for
    the client (a client that stops reading is cut by the stall sweep), ConnectionError when the
    client goes away, and FileShrunk if the file is shorter than announced. Returns the bytes sent.
    """
    dst_fd = socket_fd(dst)
    if dst_fd is None:
        raise ConnectionResetError("client connection closed")
    loop = asyncio.get_running_loop()
    with _dup(dst_fd) as dst_copy:
        client_writable = _client_writable(loop, dst_copy, client_waits)
        await _flush(dst, client_writable)
        sent = 0
        while sent < length:
            try:
                moved = os.sendfile(dst_copy, file_fd, offset + sent, min(length - sent, SENDFILE_MAX))
            except BlockingIOError:
                await client_writable()
                continue
            if moved == 0:
                raise FileShrunk(f"file ended {length - sent} bytes short")
            sent += moved
            await asyncio.sleep(0)  # a long transfer must not starve the other connections
        return sent
