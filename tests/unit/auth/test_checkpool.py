import concurrent.futures
import threading
from typing import Callable, Iterator

import pytest

from mreg_proxy.auth.checkpool import CheckPool, PoolFull

WAIT = 10  # seconds: a bound on every wait, never a timed assertion


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a worker blocked


def _blocked_pool(gate: threading.Event, max_queued: int) -> tuple[CheckPool, concurrent.futures.Future[object]]:
    """A one-worker pool whose worker is busy until ``gate`` is set."""
    pool = CheckPool(workers=1, max_queued=max_queued)
    started = threading.Event()

    def busy() -> str:
        started.set()
        gate.wait(WAIT)
        return "busy"

    running = pool.submit(0, busy)
    assert started.wait(WAIT)
    return pool, running


def _recorder(order: list[str], name: str) -> Callable[[], str]:
    def call() -> str:
        order.append(name)
        return name
    return call


def test_runs_a_check() -> None:
    pool = CheckPool(workers=2, max_queued=4)
    assert pool.submit(0, lambda: 42).result(WAIT) == 42


def test_an_exception_reaches_the_caller() -> None:
    pool = CheckPool(workers=1, max_queued=4)
    with pytest.raises(ZeroDivisionError):
        pool.submit(0, lambda: 1 / 0).result(WAIT)


def test_full_queue_refuses_at_once(gate: threading.Event) -> None:
    pool, _running = _blocked_pool(gate, max_queued=2)
    pool.submit(5, lambda: None)
    pool.submit(5, lambda: None)
    with pytest.raises(PoolFull):
        pool.submit(5, lambda: None)


def test_a_better_client_displaces_the_worst_queued_check(gate: threading.Event) -> None:
    pool, _running = _blocked_pool(gate, max_queued=2)
    flood = [pool.submit(9, lambda: "flood") for _ in range(2)]
    legit = pool.submit(0, lambda: "legit")
    assert isinstance(flood[1].exception(WAIT), PoolFull)  # the later of the two equals goes
    gate.set()
    assert legit.result(WAIT) == "legit" and flood[0].result(WAIT) == "flood"


def test_lowest_priority_number_runs_first(gate: threading.Event) -> None:
    pool, running = _blocked_pool(gate, max_queued=8)
    order: list[str] = []
    futures = [pool.submit(p, _recorder(order, n)) for p, n in ((3, "c"), (1, "a"), (3, "d"), (2, "b"))]
    gate.set()
    for future in futures:
        future.result(WAIT)
    assert order == ["a", "b", "c", "d"]


def test_a_cancelled_check_is_never_run(gate: threading.Event) -> None:
    pool, running = _blocked_pool(gate, max_queued=8)
    order: list[str] = []
    dropped = pool.submit(0, _recorder(order, "dropped"))
    kept = pool.submit(0, _recorder(order, "kept"))
    assert dropped.cancel()
    gate.set()
    kept.result(WAIT)
    assert order == ["kept"]


def test_cancelled_checks_free_their_place(gate: threading.Event) -> None:
    pool, _running = _blocked_pool(gate, max_queued=2)
    for future in [pool.submit(0, lambda: None) for _ in range(2)]:
        future.cancel()
    pool.submit(0, lambda: None)  # no PoolFull


def test_close_refuses_the_queue_without_waiting(gate: threading.Event) -> None:
    pool, running = _blocked_pool(gate, max_queued=100)
    queued = [pool.submit(0, lambda: None) for _ in range(100)]
    pool.close()  # returns although the running check is still blocked
    assert all(isinstance(f.exception(WAIT), PoolFull) for f in queued)
    with pytest.raises(PoolFull):
        pool.submit(0, lambda: None)
    gate.set()
    assert running.result(WAIT) == "busy"


def test_full_queue_is_logged_once_per_episode(gate: threading.Event, caplog: pytest.LogCaptureFixture) -> None:
    pool, _running = _blocked_pool(gate, max_queued=1)
    pool.submit(0, lambda: None)
    for _ in range(5):
        with pytest.raises(PoolFull):
            pool.submit(0, lambda: None)
    assert len([r for r in caplog.records if "waiting" in r.getMessage()]) == 1


def test_workers_run_below_the_event_loop() -> None:
    """Under a flood of checks on every core, requests that need none still get the CPU."""
    import os

    pool = CheckPool(workers=1, max_queued=1)
    niceness = pool.submit(0, lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result(WAIT)
    assert niceness == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
