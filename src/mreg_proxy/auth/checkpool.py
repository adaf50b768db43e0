"""The password-check executor: its own threads, a bounded queue, the best-behaved clients first.

bcrypt is slow on purpose; in asyncio's default executor (unbounded queue, shared with every other
``to_thread``) a flood of wrong passwords delays every login behind it. Here:

- at most ``max_queued`` checks wait; a new one is refused at once (``PoolFull``) when the queue
  is full, unless it ranks better than the worst queued one, which is then refused instead;
- waiting checks run lowest ``priority`` first (the caller passes the failures on record for the
  client: someone who never failed goes ahead of a flood), in arrival order among equals;
- a check whose future was cancelled while it waited (its client hung up) is never run;
- ``close()`` refuses everything still queued and does not wait for the running checks (the
  threads are daemons), so a stop is prompt with a full queue.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import heapq
import itertools
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("mreg.auth")

WORKER_NICENESS = 10  # added to the process's; raising it needs no privilege


class PoolFull(Exception):
    """The check was not run: too many are waiting, or the proxy is stopping."""


@dataclass(order=True)
class _Job:
    priority: int
    sequence: int
    future: concurrent.futures.Future[Any] = field(compare=False)
    call: Callable[[], Any] = field(compare=False)


class CheckPool:
    def __init__(self, workers: int, max_queued: int) -> None:
        self._workers = workers
        self._max_queued = max_queued
        self._queue: list[_Job] = []  # a heap
        self._sequence = itertools.count()
        self._lock = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._full_logged = False

    def submit(self, priority: int, call: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        displaced: _Job | None = None
        with self._lock:
            if self._closed:
                raise PoolFull("the proxy is stopping")
            if len(self._queue) >= self._max_queued:
                self._drop_cancelled()
            if len(self._queue) >= self._max_queued:
                worst = max(self._queue)
                if worst.priority <= priority:
                    self._log_full()
                    raise PoolFull(f"{len(self._queue)} password checks are waiting")
                self._queue.remove(worst)
                heapq.heapify(self._queue)
                displaced = worst
            elif len(self._queue) < self._max_queued // 2:
                self._full_logged = False  # drained: a new episode gets a new log line
            heapq.heappush(self._queue, _Job(priority, next(self._sequence), future, call))
            self._start_workers()
            self._lock.notify()
        if displaced is not None:
            displaced.future.set_exception(PoolFull("displaced by a client with fewer failures"))
        return future

    def waiting(self) -> int:
        """Checks waiting for a thread that someone still waits for."""
        with self._lock:
            return sum(not job.future.cancelled() for job in self._queue)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            queued, self._queue = self._queue, []
            self._lock.notify_all()
        for job in queued:
            if not job.future.cancelled():
                job.future.set_exception(PoolFull("the proxy is stopping"))

    def _drop_cancelled(self) -> None:
        live = [job for job in self._queue if not job.future.cancelled()]
        if len(live) != len(self._queue):
            self._queue = live
            heapq.heapify(self._queue)

    def _log_full(self) -> None:
        if not self._full_logged:
            self._full_logged = True
            log.warning("password checks: %d waiting, refusing new ones with 503 until the queue drains",
                        len(self._queue))

    def _start_workers(self) -> None:
        # started on first use: an application that never checks a password owns no threads
        while len(self._threads) < self._workers:
            thread = threading.Thread(target=self._work, name=f"bcrypt-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        # Linux nices threads one by one: under a flood of checks on every core, the event loop
        # (requests with cached credentials, transfers) still gets the CPU when it needs it
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                job = heapq.heappop(self._queue)
            if not job.future.set_running_or_notify_cancel():
                continue  # nobody waits for it any more
            try:
                job.future.set_result(job.call())
            except BaseException as exc:  # handed to the waiter, never lost in the thread
                job.future.set_exception(exc)
