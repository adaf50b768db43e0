import ipaddress

import pytest

from mreg_proxy.auth.throttle import Policy, Throttle, delay_after, guess_times
from mreg_proxy.transport.addresses import address_key, client_address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


PAIR = Policy(free=3, max_delay=60)
ADDRESS = Policy(free=10, max_delay=60)


def _throttle(clock: Clock, **kwargs: object) -> Throttle:
    kwargs.setdefault("spread", lambda: 0.0)  # refusals held exactly ``hold``, unless a test says
    return Throttle(PAIR, ADDRESS, hold=2.0, clock=clock, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("failures,delay", [(0, 0), (2, 0), (3, 1), (4, 2), (5, 4), (9, 60), (10_000, 60)])
def test_delay_doubles_after_the_free_failures_up_to_the_cap(failures: int, delay: float) -> None:
    assert delay_after(PAIR, failures) == delay


def test_first_failures_are_free() -> None:
    clock = Clock()
    throttle = _throttle(clock)
    assert [throttle.attempt("10.0.0.1", "bob").wait for _ in range(3)] == [0, 0, 0]


def test_then_attempts_are_held_for_a_growing_delay() -> None:
    clock = Clock()
    throttle = _throttle(clock)
    for _ in range(3):
        throttle.attempt("10.0.0.1", "bob")
    first = throttle.attempt("10.0.0.1", "bob")
    assert (first.wait, first.refused) == (1, False)
    # at once: 1 s (the first's slot) + 2 s (its own delay) is past the 2 s hold: held 2 s, then 429
    second = throttle.attempt("10.0.0.1", "bob")
    assert (second.wait, second.refused, second.retry_after) == (2, True, 1)


def test_refusals_are_held_a_random_time_so_a_flood_is_not_answered_in_bursts() -> None:
    """200 connections refused at the same moment must not all be answered 2 s later at the
    same moment again (and again): their holds are spread over [hold, 1.5 x hold)."""
    clock = Clock()
    draws = iter([0.0, 0.5, 0.999])
    throttle = _throttle(clock, spread=lambda: next(draws))
    for _ in range(4):
        throttle.attempt("10.0.0.1", "bob")  # 3 free, then 1 s of delay
    refused = [throttle.attempt("10.0.0.1", "bob") for _ in range(3)]  # would wait 3 s: past the hold
    assert all(v.refused for v in refused)
    assert [round(v.wait, 2) for v in refused] == [2.0, 2.5, 3.0]
    assert [v.retry_after for v in refused] == [1, 1, 1]  # the rest of the 3 s, at least 1


def test_past_the_hold_the_attempt_is_refused_and_charges_nothing() -> None:
    clock = Clock()
    throttle = _throttle(clock)
    for _ in range(5):
        clock.now += 100
        throttle.attempt("10.0.0.1", "bob")
    refused = throttle.attempt("10.0.0.1", "bob")  # 5 failures: 4 s to wait after the last
    clock.now += 3
    assert refused.refused
    assert not throttle.attempt("10.0.0.1", "bob").refused  # one second left: held, not refused


def test_another_address_is_not_slowed() -> None:
    """Never a global lock-out: a flood against bob from one address leaves bob's own login alone."""
    clock = Clock()
    throttle = _throttle(clock)
    for _ in range(50):
        throttle.attempt("10.0.0.1", "bob")
    assert throttle.attempt("10.0.0.2", "bob").wait == 0


def test_rotating_names_meet_the_address_limit() -> None:
    clock = Clock()
    throttle = _throttle(clock)
    waits = [throttle.attempt("10.0.0.1", f"user{i}").wait for i in range(12)]
    assert waits[:10] == [0] * 10 and waits[10] == 1 and waits[11] > 1


def test_success_forgets_the_pair_and_refunds_the_address() -> None:
    clock = Clock()
    throttle = _throttle(clock)
    for _ in range(3):
        throttle.attempt("10.0.0.1", "bob")
    throttle.succeeded("10.0.0.1", "bob")
    assert throttle.attempt("10.0.0.1", "bob").wait == 0
    assert throttle._addresses.peek("10.0.0.1", clock.now).failures == 3  # one refunded, one charged


def test_an_address_with_a_right_password_goes_first_for_a_while() -> None:
    clock = Clock()
    throttle = _throttle(clock, forget_after=600)
    throttle.attempt("10.0.0.1", "bob")
    throttle.succeeded("10.0.0.1", "bob")
    assert throttle.priority("10.0.0.1") == -1 < throttle.priority("10.0.0.2") == 0
    for i in range(10):
        throttle.attempt("10.0.0.1", f"user{i}")  # many failures since: no longer ahead
    assert throttle.priority("10.0.0.1") == 10
    throttle.succeeded("10.0.0.1", "bob")
    clock.now += 601
    assert throttle.priority("10.0.0.1") >= 0


def test_records_expire() -> None:
    clock = Clock()
    throttle = _throttle(clock, forget_after=600)
    for _ in range(8):
        throttle.attempt("10.0.0.1", "bob")
        clock.now += 100
    clock.now += 60 + 600
    assert throttle.attempt("10.0.0.1", "bob").wait == 0
    assert throttle.priority("10.0.0.1") == 1


def test_memory_is_bounded() -> None:
    clock = Clock()
    throttle = _throttle(clock, max_entries=100)
    for i in range(1000):
        throttle.attempt(f"10.0.{i // 256}.{i % 256}", f"user{i}")
    assert throttle.size() <= 200


def test_priority_is_the_failures_on_record_for_the_address() -> None:
    clock = Clock()
    throttle = _throttle(clock)
    assert throttle.priority("10.0.0.9") == 0
    throttle.attempt("10.0.0.9", "x")
    assert throttle.priority("10.0.0.9") == 1


@pytest.mark.parametrize(
    "address,key",
    [
        ("10.1.2.3", "10.1.2.3"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),  # one host has a whole /64 to rotate through
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_address_key(address: str, key: str) -> None:
    assert address_key(address) == key


TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    "peer,forwarded,trusted,expected",
    [
        ("203.0.113.5", ["198.51.100.1"], (), "203.0.113.5"),  # no trusted proxy: the header is ignored
        ("203.0.113.5", ["198.51.100.1"], TRUSTED, "203.0.113.5"),  # peer not trusted
        ("10.0.0.2", ["198.51.100.1"], TRUSTED, "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1, 10.0.0.3"], TRUSTED, "198.51.100.1"),  # rightmost untrusted hop
        ("10.0.0.2", ["6.6.6.6", "198.51.100.1"], TRUSTED, "198.51.100.1"),  # several headers, in order
        ("10.0.0.2", ["garbage, 198.51.100.1"], TRUSTED, "198.51.100.1"),
        ("10.0.0.2", ["198.51.100.1, garbage"], TRUSTED, "10.0.0.2"),  # cannot see past a bad hop
        ("10.0.0.2", [], TRUSTED, "10.0.0.2"),
        (None, [], TRUSTED, "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded: list[str], trusted: tuple, expected: str) -> None:
    assert client_address(peer, forwarded, trusted) == expected


def test_guess_schedule_falls_below_one_a_minute() -> None:
    times = guess_times(Policy(free=5, max_delay=300), Policy(free=20, max_delay=300), hold=2.0, seconds=3600)
    after_first_minute = [t for t in times if t >= 60]
    gaps = [b - a for a, b in zip(after_first_minute, after_first_minute[1:])]
    assert min(gaps) > 60


def test_rotating_names_follow_the_address_schedule() -> None:
    times = guess_times(Policy(free=5, max_delay=300), Policy(free=20, max_delay=300), hold=2.0, seconds=3600,
                        rotate_names=True)
    assert len([t for t in times if t == 0]) == 20 and len(times) < 40
