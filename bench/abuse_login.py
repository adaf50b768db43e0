"""Abuse, login side: password guessing floods against mreg, and what the team still gets.

A flood is a separate process (so that it does not share the measuring process's GIL) running a
selector loop over N keep-alive connections, each sending ``GET /v2/`` with a wrong password as
soon as the previous answer is in. Its connections come from their own loopback addresses
(127.0.0.2 and up: Linux routes all of 127/8 to lo), the team's from 127.0.0.1, as an attacker on
the internet and the team would. Meanwhile the measuring process times a legitimate user's new
login (a cache miss: a password the proxy has not seen) and HEADs with cached credentials.
"""

from __future__ import annotations

import base64
import http.client
import logging
import multiprocessing
import os
import selectors
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import bcrypt

from mreg_proxy.config import Settings
from mreg_proxy.auth.throttle import HOLD, Policy, guess_times
from mreg_proxy.auth.users import User

from .services import BenchError, start_proxy, start_registry, stop
from .workloads import Endpoint, head_load, seed_blob, seed_manifest

COST = 12  # the default of manage-user: what a real deployment pays per check
USER, PASSWORD = "bench", "bench-Secret-1"
TEAM = [(f"dev{i}", f"dev{i}-Secret") for i in range(16)]  # one fresh login each
REPO = "bench/abuse"
LEGIT_SOURCE = "127.0.0.1"


@dataclass
class FloodResult:
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)

    def rate(self, status: int) -> float:
        return self.statuses.get(status, 0) / self.seconds


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _flood(host: str, port: int, sources: list[str], connections: int, rotate_names: bool,
           seconds: float, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """The attacker (runs in its own process): wrong passwords as fast as the proxy answers."""
    counter = 0

    def request() -> bytes:
        nonlocal counter
        counter += 1
        name = f"guess{counter % 100_000}" if rotate_names else USER
        return (f"GET /v2/ HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: {_basic(name, f'wrong-{counter}')}\r\n\r\n").encode()

    selector = selectors.DefaultSelector()
    buffers: dict[socket.socket, bytes] = {}
    statuses: dict[int, int] = {}

    def connect(index: int) -> None:
        sock = socket.socket()
        sock.bind((sources[index % len(sources)], 0))
        sock.connect((host, port))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
        buffers[sock] = b""
        sock.send(request())

    for index in range(connections):
        connect(index)
    started = time.perf_counter()
    deadline = started + seconds
    while (now := time.perf_counter()) < deadline:
        for key, _events in selector.select(timeout=deadline - now):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except ConnectionError:
                data = b""
            buffered = buffers[sock] + data
            head_end = buffered.find(b"\r\n\r\n")
            closed = not data
            if head_end >= 0:
                head = buffered[:head_end].decode("latin-1").lower()
                length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n")
                               if line.startswith("content-length:")), 0)
                if len(buffered) >= head_end + 4 + length:
                    status = int(head.split(" ", 2)[1])
                    statuses[status] = statuses.get(status, 0) + 1
                    buffered = buffered[head_end + 4 + length:]
                    if "connection: close" in head:
                        closed = True
                    elif not closed:
                        sock.send(request())
            buffers[sock] = buffered
            if closed:
                selector.unregister(sock)
                del buffers[sock]
                sock.close()
                connect(key.data)
    for sock in list(buffers):
        sock.close()
    results.put(FloodResult(time.perf_counter() - started, statuses))


class Flood:
    """``with Flood(...) as flood:`` runs the attacker for ``seconds``; ``flood.result`` after."""

    def __init__(self, host: str, port: int, sources: list[str], connections: int, seconds: float,
                 rotate_names: bool = False) -> None:
        self._results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        self._process = multiprocessing.Process(
            target=_flood, args=(host, port, sources, connections, rotate_names, seconds, self._results), daemon=True)
        self._seconds = seconds
        self.result: FloodResult | None = None

    def __enter__(self) -> Flood:
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.result = self._results.get(timeout=self._seconds + 60)
        finally:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()  # the process this object started, by its handle
                self._process.join()


def login_seconds(host: str, port: int, user: str, password: str, expect: int = 200) -> float:
    """One new login (``GET /v2/`` with a password the proxy has not verified yet), from the team's address."""
    conn = http.client.HTTPConnection(host, port, timeout=120, source_address=(LEGIT_SOURCE, 0))
    started = time.perf_counter()
    try:
        conn.request("GET", "/v2/", headers={"Authorization": _basic(user, password)})
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    elapsed = time.perf_counter() - started
    if response.status != expect:
        raise BenchError(f"login of {user} answered {response.status} (not {expect}) after {elapsed:.2f}s")
    return elapsed


# Who answers how fast: a users file with hashes of two costs (manage-user import keeps a seed's
# costs), wrong passwords for each and for a name that does not exist, the throttle out of the way.
COSTS = {"costly": 12, "cheap": 10}
UNKNOWN = "nobody"


@dataclass
class CostRow:
    label: str
    median_ms: float
    ratio: float  # against a wrong password for the unknown name


def login_times_by_cost(registry_url: str, workdir: os.PathLike[str], quick: bool) -> list[CostRow]:
    """Medians of wrong (and right) passwords per hash cost, interleaved so that drift in the
    machine's load hits every name alike. MREG_BCRYPT_COST=10 and no credential cache, so that
    right passwords pay their own hash each time and are never re-hashed."""
    from pathlib import Path

    work = Path(workdir) / "costs"
    work.mkdir()
    users = {name: User(name, "reader", bcrypt.hashpw(f"{name}-pw".encode(), bcrypt.gensalt(cost)).decode())
             for name, cost in COSTS.items()}
    proxy = start_proxy(registry_url, work, users, {
        "MREG_BCRYPT_COST": "10", "MREG_AUTH_CACHE_TTL": "0", "MREG_LOGIN_FREE_FAILURES": "10000",
        "MREG_LOGIN_ADDRESS_FREE_FAILURES": "10000"})
    try:
        host, port = proxy.url.removeprefix("http://").rsplit(":", 1)
        rounds = 7 if quick else 15
        wrong: dict[str, list[float]] = {name: [] for name in [*COSTS, UNKNOWN]}
        right: dict[str, list[float]] = {name: [] for name in COSTS}
        print("wrong and right passwords by hash cost ...", file=sys.stderr)
        for attempt in range(rounds):
            for name in wrong:
                wrong[name].append(login_seconds(host, int(port), name, f"wrong-{attempt}", expect=401))
            for name in right:
                right[name].append(login_seconds(host, int(port), name, f"{name}-pw"))
    finally:
        stop(proxy.process)
    unknown = statistics.median(wrong[UNKNOWN])
    rows = [CostRow(f"wrong password, cost-{COSTS[n]} user" if n in COSTS else "wrong password, unknown name",
                    statistics.median(times) * 1000, statistics.median(times) / unknown)
            for n, times in wrong.items()]
    rows += [CostRow(f"right password, cost-{COSTS[n]} user", statistics.median(times) * 1000,
                     statistics.median(times) / unknown) for n, times in right.items()]
    return rows


def cost_markdown(rows: list[CostRow]) -> str:
    lines = ["| login (throttle out of the way, no credential cache) | median (ms) | / unknown name |",
             "|---|---:|---:|"]
    lines += [f"| {row.label} | {row.median_ms:.0f} | {row.ratio:.2f} |" for row in rows]
    return "\n".join(lines)


@dataclass
class Phase:
    label: str
    logins_s: list[float]
    head_p50_ms: float
    head_p99_ms: float
    flood: FloodResult | None


def _measure(label: str, host: str, port: int, team: list[tuple[str, str]], head_url: str,
             proxy: Endpoint, flood: Callable[[], Flood] | None, head_seconds: float) -> Phase:
    print(f"{label} ...", file=sys.stderr)
    if flood is None:
        head = head_load(proxy, head_url, 1, head_seconds)
        return Phase(label, [login_seconds(host, port, *member) for member in team], head.p50_ms, head.p99_ms, None)
    with flood() as running:
        time.sleep(2)  # the flood's first wave (free attempts, a full queue) is under way
        logins = [login_seconds(host, port, *member) for member in team]
        head = head_load(proxy, head_url, 1, head_seconds)
    return Phase(label, logins, head.p50_ms, head.p99_ms, running.result)


def run(registry_binary: str, workdir: os.PathLike[str], quick: bool
        ) -> tuple[list[Phase], dict[str, float], list[CostRow]]:
    from pathlib import Path

    work = Path(workdir)
    registry = start_registry(registry_binary, work)
    proxy_service = None
    try:
        users = {USER: User(USER, "admin", bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(COST)).decode())}
        for name, password in TEAM:
            users[name] = User(name, "reader", bcrypt.hashpw(password.encode(), bcrypt.gensalt(COST)).decode())
        proxy_service = start_proxy(registry.url, work, users)
        host, port = proxy_service.url.removeprefix("http://").rsplit(":", 1)
        direct = Endpoint("direct", registry.url)
        proxy = Endpoint("mreg", proxy_service.url, (USER, PASSWORD))
        layer = seed_blob(direct, REPO, 0, 1 << 20)
        seed_manifest(direct, REPO, "v1", layer, 1 << 20)
        head_url = f"{proxy.url}/v2/{REPO}/manifests/v1"
        login_seconds(host, int(port), USER, PASSWORD)  # the HEADs below run on cached credentials
        flood_seconds = 8 if quick else 20
        head_seconds = 3 if quick else 5
        per_phase = 3 if quick else 4
        team = iter(TEAM)

        def members() -> list[tuple[str, str]]:
            return [next(team) for _ in range(per_phase)]

        phases = [_measure("idle", host, int(port), members(), head_url, proxy, None, head_seconds)]
        many = [f"127.0.1.{i}" for i in range(1, 201)]  # a botnet: one connection per address
        for connections, sources, whence in ((50, ["127.0.0.2"], "one address"),
                                             (200, ["127.0.0.3"], "one address"),
                                             (200, many, "200 addresses")):
            phases.append(_measure(
                f"{connections} connections ({whence}) guessing {USER}'s password", host, int(port), members(),
                head_url, proxy, lambda c=connections, s=sources: Flood(host, int(port), s, c, flood_seconds),
                head_seconds))
        print("guessing rotating names from one address ...", file=sys.stderr)
        with Flood(host, int(port), ["127.0.0.4"], 50, flood_seconds, rotate_names=True) as rotating:
            pass
        assert rotating.result is not None
        rates = {"per_address_guesses_per_s": rotating.result.rate(401), "per_address_seconds": rotating.result.seconds}
        stop(proxy_service.process)  # the next proxy has the machine to itself
        proxy_service = None
        return phases, rates, login_times_by_cost(registry.url, work, quick)
    finally:
        if proxy_service is not None:
            stop(proxy_service.process)
        stop(registry.process)


def schedule_figures() -> dict[str, float]:
    """What the throttle allows an attacker who retries the moment it may, with the defaults."""
    defaults = Settings()
    pair = Policy(defaults.login_free_failures, defaults.login_max_delay)
    address = Policy(defaults.login_address_free_failures, defaults.login_max_delay)
    auth_log = logging.getLogger("mreg.auth")
    auth_log.disabled = True  # the simulated attacker's "delayed" lines are not news
    try:
        day = guess_times(pair, address, hold=HOLD, seconds=86400)
        rotating = guess_times(pair, address, hold=HOLD, seconds=86400, rotate_names=True)
    finally:
        auth_log.disabled = False
    first_minute = [t for t in day if t < 60]
    later = [t for t in day if t >= 60]
    gaps = [b - a for a, b in zip(later, later[1:])]
    return {
        "address_first_minute": len([t for t in rotating if t < 60]),
        "address_per_day": len(rotating),
        "first_minute": len(first_minute),
        "min_gap_after_first_minute_s": min(gaps),
        "per_day": len(day),
        "first_20s": len([t for t in day if t < 20]),
    }


def markdown(phases: list[Phase], rates: dict[str, float], schedule: dict[str, float]) -> str:
    lines = [
        "| while ... | new login, median / max (s) | cached HEAD p50 / p99 (ms) | flood answers/s: 401 / 429 / 503 | "
        f"guesses checked against {USER} |",
        "|---|---:|---:|---:|---:|",
    ]
    for phase in phases:
        flood = phase.flood
        if flood is None:
            answers, guesses = "-", "-"
        else:
            answers = f"{flood.rate(401):.1f} / {flood.rate(429):.1f} / {flood.rate(503):.1f}"
            guesses = f"{flood.statuses.get(401, 0)} in {flood.seconds:.0f} s"
        lines.append(
            f"| {phase.label} | {statistics.median(phase.logins_s):.2f} / {max(phase.logins_s):.2f} | "
            f"{phase.head_p50_ms:.2f} / {phase.head_p99_ms:.2f} | {answers} | {guesses} |"
        )
    lines += [
        "",
        f"- guesses per address (50 connections, a new user name each time): "
        f"{rates['per_address_guesses_per_s']:.2f}/s over {rates['per_address_seconds']:.0f} s",
        f"- the throttle's schedule for one user from one address (defaults, an attacker retrying the "
        f"moment it may): {schedule['first_20s']} guesses in the first 20 s, {schedule['first_minute']} in the "
        f"first minute, then at least {schedule['min_gap_after_first_minute_s']:.0f} s apart; "
        f"{schedule['per_day']} a day",
        f"- the same for one address guessing a new user name each time: {schedule['address_first_minute']} "
        f"in the first minute, {schedule['address_per_day']} a day",
    ]
    return "\n".join(lines)
