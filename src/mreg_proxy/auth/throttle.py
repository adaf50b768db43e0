"""Throttle failed logins, not people: per (client address, user name) and per client address.

Every password check is charged as a failure when it starts (a success refunds it), so that many
attempts sent at once are spaced like attempts sent one after the other. After ``free`` failures
each one earns a delay that doubles (1 s, 2 s, 4 s, ...) up to ``max_delay``: the next attempt
from that address (for that user) may start no earlier. An attempt that would have to wait up to
``hold`` seconds is held that long and then checked; one that would wait longer is held ``hold``
to 1.5 x ``hold`` seconds (at random: the attempts of a flood that arrive together are answered
apart, not in one burst every ``hold`` seconds that would stall everyone else's requests) and
refused (429 with Retry-After) without being checked. Nothing here ever locks a user out for everyone: the
counters are keyed by the client's address, and a request with verified cached credentials never
gets here.

Memory is bounded: each table keeps at most ``max_entries`` records, least recently used first
out, and a record is forgotten ``forget_after`` seconds after its delay ran out.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Hashable

from ..escape import escaped
from ..transport.addresses import address_key

log = logging.getLogger("mreg.auth")

BASE_DELAY = 1.0  # seconds: the first delay after the free failures
HOLD = 2.0  # a request that would wait longer is refused (429), after this long
HOLD_SPREAD = 0.5  # ... and up to this much of it more, at random
FORGET_AFTER = 3600.0  # seconds of calm after which a record starts from zero again
MAX_ENTRIES = 10_000  # records per table (pairs, addresses): about 1 MiB each when full


@dataclass(frozen=True, slots=True)
class Policy:
    free: int  # failures before any delay
    max_delay: float  # seconds: the cap of the doubling


def delay_after(policy: Policy, failures: int) -> float:
    """Seconds the next attempt waits after ``failures`` failed ones."""
    if failures < policy.free:
        return 0.0
    doublings = min(failures - policy.free, 64)  # 2**64 seconds is far past any cap
    return min(BASE_DELAY * 2.0**doublings, policy.max_delay)


@dataclass(frozen=True, slots=True)
class Verdict:
    wait: float  # seconds to hold the request (before checking it, or before refusing it)
    refused: bool  # answer 429 after the wait, without checking the password
    retry_after: int = 0  # seconds, for the 429's Retry-After


@dataclass(slots=True)
class _Record:
    failures: int = 0
    not_before: float = 0.0  # earliest start of the next attempt
    vouched_until: float = 0.0  # a password was right from here: its checks go first until then


class _Table:
    """Records by key, bounded, least recently used evicted first."""

    def __init__(self, policy: Policy, max_entries: int, forget_after: float) -> None:
        self.policy = policy
        self._max_entries = max_entries
        self._forget_after = forget_after
        self._records: dict[Hashable, _Record] = {}

    def __len__(self) -> int:
        return len(self._records)

    def peek(self, key: Hashable, now: float) -> _Record:
        record = self._records.get(key)
        if record is None or now >= record.not_before + self._forget_after:
            return _Record()
        return record

    def touch(self, key: Hashable, now: float) -> _Record:
        """The live record of ``key``, now the most recently used one."""
        record = self.peek(key, now)
        self._records.pop(key, None)
        while len(self._records) >= self._max_entries:
            del self._records[next(iter(self._records))]  # dicts keep insertion order
        self._records[key] = record
        return record

    def charge(self, record: _Record, start: float) -> bool:
        """Count one more failure; True when it is the one that starts the delays."""
        record.failures += 1
        record.not_before = start + delay_after(self.policy, record.failures)
        return record.failures == self.policy.free

    def forget(self, key: Hashable) -> None:
        self._records.pop(key, None)


class Throttle:
    def __init__(
        self,
        pair: Policy,
        address: Policy,
        *,
        hold: float | None = None,
        max_entries: int = MAX_ENTRIES,
        forget_after: float = FORGET_AFTER,
        clock: Callable[[], float] = time.monotonic,
        spread: Callable[[], float] = random.random,
    ) -> None:
        self._pairs = _Table(pair, max_entries, forget_after)
        self._addresses = _Table(address, max_entries, forget_after)
        self._hold = HOLD if hold is None else hold
        self._forget_after = forget_after
        self._clock = clock
        self._spread = spread  # in [0, 1)

    def attempt(self, address: str, name: str) -> Verdict:
        """May ``address`` check a password for ``name`` now? Charges a failure when it may."""
        now = self._clock()
        where = address_key(address)
        pair = self._pairs.touch((where, name), now)
        host = self._addresses.touch(where, now)
        start = max(now, pair.not_before, host.not_before)
        if start - now > self._hold:
            held = self._hold * (1 + HOLD_SPREAD * self._spread())
            return Verdict(held, True, max(1, math.ceil(start - now - held)))
        if self._pairs.charge(pair, start):
            log.warning("%d failed logins from %s as %s: further attempts are delayed",
                        pair.failures, where, escaped(name, 64))
        if self._addresses.charge(host, start):
            log.warning("%d failed logins from %s: further attempts are delayed", host.failures, where)
        return Verdict(start - now, False)

    def succeeded(self, address: str, name: str) -> None:
        """The password was right: that pair starts afresh; the address gets its charge back and
        its checks go ahead of strangers' for a while."""
        now = self._clock()
        where = address_key(address)
        self._pairs.forget((where, name))
        host = self._addresses.touch(where, now)
        host.failures = max(0, host.failures - 1)
        host.not_before = max(host.not_before, now)  # the record lives as long as the vouching
        host.vouched_until = now + self._forget_after

    def priority(self, address: str) -> int:
        """The lower, the sooner checks from ``address`` run: -1 where a password was right
        lately and few failed since (the team, even while strangers flood the queue), else the
        failures on record."""
        now = self._clock()
        host = self._addresses.peek(address_key(address), now)
        if host.vouched_until > now and host.failures < self._addresses.policy.free:
            return -1
        return host.failures

    def size(self) -> int:
        return len(self._pairs) + len(self._addresses)


def guess_times(
    pair: Policy, address: Policy, *, hold: float = HOLD, seconds: float, rotate_names: bool = False
) -> list[float]:
    """When an attacker who retries as soon as allowed gets a password checked, over ``seconds``,
    from one address, guessing one user's password (or a new user name each time); checks taken
    as instantaneous, refusals held the shortest time (the fastest attacker)."""
    now = 0.0
    throttle = Throttle(pair, address, hold=hold, clock=lambda: now, spread=lambda: 0.0)
    times: list[float] = []
    while now < seconds:
        verdict = throttle.attempt("192.0.2.1", f"name{len(times)}" if rotate_names else "victim")
        now += verdict.wait + verdict.retry_after
        if not verdict.refused and now < seconds:
            times.append(now)
    return times
