"""The S3 section of the benchmark: the registry on a real S3 engine (Ceph radosgw, bench/ceph.py),
direct, through one mreg replica, and through two replicas on the same bucket.

Same discipline as the filesystem section: medians over repetitions whose order alternates.
On this machine every process (Ceph, registries, proxies, curl) shares two cores, so "two
replicas" measures how the work spreads, not a second machine's worth of capacity.
"""

from __future__ import annotations

import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mreg_proxy.auth.users import User

from .ceph import ceph_cluster
from .services import Service, start_proxy, start_registry, stop
from .workloads import MiB, Endpoint, make_blob, pull, pull_spread, push_monolithic, seed_blob, timed_push, verify_pull

REPO = "bench/s3"
SHARED_SECRET = "bench-shared-http-secret"


@dataclass(frozen=True)
class S3Plan:
    single_size: int
    parallel_streams: int
    parallel_size: int
    push_size: int
    reps: int


S3_FULL = S3Plan(256 * MiB, 8, 32 * MiB, 128 * MiB, reps=3)
S3_QUICK = S3Plan(32 * MiB, 8, 4 * MiB, 16 * MiB, reps=1)


@dataclass
class S3Row:
    label: str
    direct: float  # the registry on S3, no proxy (MB/s)
    one: float  # through one mreg replica
    two: float | None = None  # spread over two replicas on the same bucket


def run_s3(plan: S3Plan, registry_binary: str, workdir: Path, users: dict[str, User], credentials: tuple[str, str]) -> list[S3Row]:
    services: list[Service] = []
    with ceph_cluster(workdir / "ceph") as ceph:
        s3 = ceph.bucket("bench")
        try:
            registries, proxies = [], []
            for index in range(2):
                folder = workdir / f"s3-replica-{index}"
                folder.mkdir()
                registry = start_registry(registry_binary, folder, s3, SHARED_SECRET)
                services.append(registry)
                proxy = start_proxy(registry.url, folder, users)
                services.append(proxy)
                registries.append(Endpoint(f"s3-direct-{index}", registry.url))
                proxies.append(Endpoint(f"s3-mreg-{index}", proxy.url, credentials))
            return measure_s3(plan, registries, proxies)
        finally:
            for service in reversed(services):
                stop(service.process)


def _median_alternating(reps: int, measures: list[Callable[[], float]]) -> list[float]:
    results: list[list[float]] = [[] for _ in measures]
    for rep in range(reps):
        order = list(range(len(measures)))
        for index in order if rep % 2 == 0 else reversed(order):
            results[index].append(measures[index]())
    return [statistics.median(r) for r in results]


def _parallel_pushes(endpoints: list[Endpoint], blobs: list[bytes]) -> float:
    """Push ``blobs`` at once, dealt out over ``endpoints``; aggregate MB/s."""
    with ThreadPoolExecutor(len(blobs)) as pool:
        started = timed_push(lambda: list(pool.map(
            lambda item: push_monolithic(endpoints[item[0] % len(endpoints)], REPO, item[1]), enumerate(blobs)
        )))
    return sum(len(b) for b in blobs) / started / 1e6


def measure_s3(plan: S3Plan, registries: list[Endpoint], proxies: list[Endpoint]) -> list[S3Row]:
    direct, one, both = registries[0], proxies[0], proxies
    print("S3: seeding ...", file=sys.stderr)
    single = [(seed_blob(direct, REPO, 100, plan.single_size), plan.single_size)]
    parallel = [(seed_blob(direct, REPO, 101 + i, plan.parallel_size), plan.parallel_size)
                for i in range(plan.parallel_streams)]
    for endpoint in (direct, *both):  # every replica serves what another stored, byte for byte
        verify_pull(endpoint, REPO, parallel[0][0])
    rows: list[S3Row] = []
    print("S3: pulls ...", file=sys.stderr)
    d, o = _median_alternating(plan.reps, [lambda: pull(direct, REPO, single), lambda: pull(one, REPO, single)])
    rows.append(S3Row(f"pull {plan.single_size // MiB} MiB, 1 stream", d, o))
    d, o, t = _median_alternating(plan.reps, [
        lambda: pull_spread(registries, REPO, parallel),  # two registries: what the engine allows
        lambda: pull(one, REPO, parallel),
        lambda: pull_spread(both, REPO, parallel),
    ])
    rows.append(S3Row(f"pull {plan.parallel_streams} x {plan.parallel_size // MiB} MiB in parallel", d, o, t))
    print("S3: pushes ...", file=sys.stderr)
    data = make_blob(200, plan.push_size)

    def mbps(seconds: float) -> float:
        return plan.push_size / seconds / 1e6

    # each push its own bytes: the registry would otherwise find the blob already there
    counter = iter(range(10_000))

    def fresh(count: int) -> list[bytes]:
        return [data[:-8] + next(counter).to_bytes(8, "big") for _ in range(count)]

    d, o = _median_alternating(plan.reps, [
        lambda: mbps(timed_push(push_monolithic, direct, REPO, fresh(1)[0])),
        lambda: mbps(timed_push(push_monolithic, one, REPO, fresh(1)[0])),
    ])
    rows.append(S3Row(f"push {plan.push_size // MiB} MiB, monolithic", d, o))
    d, o, t = _median_alternating(plan.reps, [
        lambda: _parallel_pushes(registries, fresh(2)),
        lambda: _parallel_pushes([one], fresh(2)),
        lambda: _parallel_pushes(both, fresh(2)),
    ])
    rows.append(S3Row(f"2 pushes of {plan.push_size // MiB} MiB in parallel", d, o, t))
    return rows


def s3_markdown(rows: list[S3Row]) -> str:
    lines = [
        "| measure (MB/s) | registry on S3 direct | through 1 mreg replica | 1 replica / direct | through 2 replicas | 2 replicas / 1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        two = f"{row.two:.1f} | {row.two / row.one:.2f}x" if row.two is not None else "- | -"
        lines.append(f"| {row.label} | {row.direct:.1f} | {row.one:.1f} | {row.one / row.direct:.2f}x | {two} |")
    lines.append("")
    lines.append("Direct, for the rows with two replicas: two registries on the bucket, no proxy.")
    return "\n".join(lines)
