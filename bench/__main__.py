"""``python -m bench [--quick] [--s3] [--json FILE] [--abuse]``: the registry direct vs through mreg, one run.

``--s3`` adds the S3 section (bench/s3bench.py): the registry on a Ceph radosgw started for the
run, direct, through one mreg replica and through two.

``--retention`` runs the retention section instead (bench/retention.py): retention runs over
10,000 tags, and the write pause of a garbage collection on a store of a few GB.
``--reads`` runs the reads section instead: HEAD and pulls side by side for the registry direct,
mreg answering from the registry's files, mreg forwarding, and nginx, plain and TLS (bench/reads.py).

``--abuse`` runs the abuse section instead: what strangers on the network can do to mreg, and
what the team still gets meanwhile (bench/abuse_*.py).

Every figure is the median over repetitions that alternate direct and proxied runs (the order
flips each repetition), so slow drifts of a shared machine hit both sides alike. A second table
compares, through mreg in the same run, a CI token with a cached password on the same HEAD.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import bcrypt

from mreg_proxy.auth.grants import Grant, Level
from mreg_proxy.auth.tokens import hash_secret, new_secret
from mreg_proxy.auth.users import Store, Token, User, write_store

from . import abuse_login, abuse_memory, retention
from .reads import READS_FULL, READS_QUICK, reads_figures, reads_markdown, run_reads
from .webui import UI_FULL, UI_QUICK, UiRow, run_ui, ui_markdown
from .s3bench import S3_FULL, S3_QUICK, run_s3, s3_markdown
from .services import BenchError, RssSampler, Service, registry_root, start_proxy, start_registry, stop, memory_kib
from .workloads import (
    MiB, Endpoint, HeadResult, check_head, head_load, make_blob, pull, push_and_sign, push_chunked,
    push_monolithic, seed_blob, seed_manifest, sha256_digest, timed_push, verify_pull,
)

USER, PASSWORD = "bench", "bench-Secret-1"
TOKEN = "bench-ci"
REPO = "bench/app"


@dataclass(frozen=True)
class Plan:
    single_size: int
    parallel_streams: int
    parallel_size: int
    push_size: int
    patch_size: int
    transfer_reps: int
    head_seconds: float
    head_reps: int
    signed_images: int  # image manifests pushed and signed per repetition


FULL = Plan(1024 * MiB, 8, 128 * MiB, 256 * MiB, 16 * MiB, transfer_reps=5, head_seconds=5, head_reps=3, signed_images=100)
QUICK = Plan(64 * MiB, 8, 8 * MiB, 32 * MiB, 16 * MiB, transfer_reps=1, head_seconds=1, head_reps=1, signed_images=10)


@dataclass
class Row:
    label: str
    unit: str
    direct: float
    proxy: float
    higher_is_better: bool = True

    @property
    def ratio(self) -> float:
        return self.proxy / self.direct if self.direct else float("nan")


def alternate(reps: int, measure: Callable[[Endpoint], float], direct: Endpoint, proxy: Endpoint) -> tuple[float, float]:
    """Median of ``reps`` measurements on each side, alternating which side goes first."""
    results: dict[str, list[float]] = {direct.name: [], proxy.name: []}
    for rep in range(reps):
        for endpoint in (direct, proxy) if rep % 2 == 0 else (proxy, direct):
            results[endpoint.name].append(measure(endpoint))
    return statistics.median(results[direct.name]), statistics.median(results[proxy.name])


def run(plan: Plan, registry_binary: str, workdir: Path) -> tuple[list[Row], dict[str, float], list[Row], list[UiRow]]:
    registry = start_registry(registry_binary, workdir)
    proxy_service: Service | None = None
    try:
        # bcrypt cost 10, as in the nginx recipe this is compared with; the cache hides it anyway
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
        users = {USER: User(USER, "admin", hashed)}
        # reads from the registry's files, as the pod runs it (mreg.yml)
        proxy_service = start_proxy(registry.url, workdir, users, {"MREG_REGISTRY_ROOT": str(registry_root(workdir))})
        secret = new_secret()
        token = Token(TOKEN, hash_secret(secret), (Grant(REPO, Level.PULL),), datetime.datetime.now(datetime.timezone.utc))
        write_store(workdir / "users.yml", Store(users, {TOKEN: token}))  # the proxy reloads it by itself
        direct = Endpoint("direct", registry.url)
        proxy = Endpoint("mreg", proxy_service.url, (USER, PASSWORD))
        rows, memory = measure_all(plan, direct, proxy, proxy_service.process.pid)
        token_rows = measure_token(plan, proxy, Endpoint("mreg-token", proxy_service.url, (TOKEN, secret)))
        ui_rows = run_ui(UI_QUICK if plan is QUICK else UI_FULL, direct, workdir, users, (USER, PASSWORD))
        return rows, memory, token_rows, ui_rows
    finally:
        if proxy_service is not None:
            stop(proxy_service.process)
        stop(registry.process)


def measure_all(plan: Plan, direct: Endpoint, proxy: Endpoint, proxy_pid: int) -> tuple[list[Row], dict[str, float]]:
    print("seeding the registry ...", file=sys.stderr)
    single = [(seed_blob(direct, REPO, 0, plan.single_size), plan.single_size)]
    parallel = [(seed_blob(direct, REPO, 1 + i, plan.parallel_size), plan.parallel_size)
                for i in range(plan.parallel_streams)]
    manifest_digest, manifest_size = seed_manifest(direct, REPO, "bench", *parallel[0])
    push_data = make_blob(plan.parallel_streams + 1, plan.push_size)
    rows: list[Row] = []
    memory: dict[str, float] = {"rss_idle_mib": memory_kib(proxy_pid, "VmRSS") / 1024}

    def mbps(seconds: float) -> float:
        return plan.push_size / seconds / 1e6

    for endpoint in (direct, proxy):
        # the first authenticated request pays bcrypt once, as a client's login does
        check_head(endpoint, f"{endpoint.url}/v2/{REPO}/manifests/bench", manifest_digest, manifest_size)
    with RssSampler(proxy_pid) as rss:
        print("pulls ...", file=sys.stderr)
        d, p = alternate(plan.transfer_reps, lambda e: pull(e, REPO, single), direct, proxy)
        rows.append(Row(f"pull {plan.single_size // MiB} MiB, 1 stream", "MB/s", d, p))
        d, p = alternate(plan.transfer_reps, lambda e: pull(e, REPO, parallel), direct, proxy)
        rows.append(Row(f"pull {plan.parallel_streams} x {plan.parallel_size // MiB} MiB in parallel", "MB/s", d, p))
        memory["rss_peak_pulls_mib"] = rss.peak / 1024
    for endpoint in (direct, proxy):
        for digest, _size in single + parallel:
            verify_pull(endpoint, REPO, digest)
    with RssSampler(proxy_pid) as rss:
        print("pushes ...", file=sys.stderr)
        d, p = alternate(plan.transfer_reps, lambda e: mbps(timed_push(push_monolithic, e, REPO, push_data)), direct, proxy)
        rows.append(Row(f"push {plan.push_size // MiB} MiB, monolithic", "MB/s", d, p))
        d, p = alternate(plan.transfer_reps,
                         lambda e: mbps(timed_push(push_chunked, e, REPO, push_data, plan.patch_size)), direct, proxy)
        rows.append(Row(f"push {plan.push_size // MiB} MiB, {plan.patch_size // MiB} MiB PATCHes", "MB/s", d, p))
        memory["rss_peak_pushes_mib"] = rss.peak / 1024

    print("manifests and referrers ...", file=sys.stderr)
    rows += sign_rows(plan, direct, proxy)

    print("HEAD ...", file=sys.stderr)
    for connections in (1, 32):
        samples: dict[str, list[HeadResult]] = {direct.name: [], proxy.name: []}

        def head(endpoint: Endpoint) -> float:
            result = head_load(endpoint, f"{endpoint.url}/v2/{REPO}/manifests/bench", connections, plan.head_seconds)
            samples[endpoint.name].append(result)
            return result.rate

        d, p = alternate(plan.head_reps, head, direct, proxy)
        rows.append(Row(f"HEAD manifest, {connections} conn{'s' if connections > 1 else ''}", "req/s", d, p))
        for field in ("p50_ms", "p99_ms"):
            d, p = (statistics.median(getattr(r, field) for r in samples[e.name]) for e in (direct, proxy))
            rows.append(Row(f"HEAD manifest, {connections} conn{'s' if connections > 1 else ''}, {field[:3]}", "ms", d, p, False))
    memory["rss_hwm_mib"] = memory_kib(proxy_pid, "VmHWM") / 1024
    return rows, memory


def measure_token(plan: Plan, password: Endpoint, token: Endpoint) -> list[Row]:
    """The same HEAD through mreg with a cached password and with a CI token (a keyed hash and a
    grant lookup per request, no cache): a token must cost no more."""
    print("HEAD, cached password vs CI token ...", file=sys.stderr)
    url = f"{password.url}/v2/{REPO}/manifests/bench"
    rows: list[Row] = []
    for connections in (1, 32):
        samples: dict[str, list[HeadResult]] = {password.name: [], token.name: []}

        def head(endpoint: Endpoint) -> float:
            result = head_load(endpoint, url, connections, plan.head_seconds)
            samples[endpoint.name].append(result)
            return result.rate

        label = f"HEAD manifest, {connections} conn{'s' if connections > 1 else ''}"
        d, p = alternate(plan.head_reps, head, password, token)
        rows.append(Row(label, "req/s", d, p))
        for field in ("p50_ms", "p99_ms"):
            d, p = (statistics.median(getattr(r, field) for r in samples[e.name]) for e in (password, token))
            rows.append(Row(f"{label}, {field[:3]}", "ms", d, p, False))
    return rows


def sign_rows(plan: Plan, direct: Endpoint, proxy: Endpoint) -> list[Row]:
    """Mean PUT time of an image manifest (by tag) and of a referrer (a signature of it, by
    digest), alternating sides.

    Through mreg a referrer costs a second registry write: its subject's referrers index (read
    while the referrer is stored) is written back under its tag.
    """
    config = b"{}"
    push_monolithic(direct, REPO, config)
    results: dict[str, list[tuple[float, float]]] = {direct.name: [], proxy.name: []}
    for rep in range(plan.transfer_reps):
        for endpoint in (direct, proxy) if rep % 2 == 0 else (proxy, direct):
            salt = f"{endpoint.name}-{rep}"
            results[endpoint.name].append(push_and_sign(endpoint, REPO, sha256_digest(config), plan.signed_images, salt))
    (d_image, d_referrer), (p_image, p_referrer) = (
        tuple(statistics.median(r[i] for r in results[e.name]) for i in (0, 1)) for e in (direct, proxy)
    )
    return [
        Row("PUT image manifest by tag", "ms", d_image, p_image, False),
        Row("PUT referrer manifest by digest", "ms", d_referrer, p_referrer, False),
    ]


def markdown(rows: list[Row], memory: dict[str, float], token_rows: list[Row]) -> str:
    lines = ["| measure | registry direct | through mreg | mreg / direct |", "|---|---:|---:|---:|"]
    lines += _row_lines(rows)
    by_label = {row.label: row for row in rows}
    image, referrer = by_label["PUT image manifest by tag"], by_label["PUT referrer manifest by digest"]
    lines.append(f"| PUT referrer / PUT image manifest | {referrer.direct / image.direct:.2f}x | "
                 f"{referrer.proxy / image.proxy:.2f}x | - |")
    lines.append(
        f"| mreg-proxy RSS (MiB): idle / peak in pulls / peak in pushes / high-water mark | - | "
        f"{memory['rss_idle_mib']:.0f} / {memory['rss_peak_pulls_mib']:.0f} / "
        f"{memory['rss_peak_pushes_mib']:.0f} / {memory['rss_hwm_mib']:.0f} | - |"
    )
    lines += ["", "| through mreg | cached password | CI token | token / password |", "|---|---:|---:|---:|"]
    lines += _row_lines(token_rows)
    return "\n".join(lines)


def _row_lines(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        if row.higher_is_better:
            ratio = f"{row.ratio:.2f}x"
        else:  # latency: the difference is what matters
            ratio = f"{row.proxy - row.direct:+.2f} ms"
        lines.append(f"| {row.label} ({row.unit}) | {row.direct:.1f} | {row.proxy:.1f} | {ratio} |")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition (well under a minute)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--registry", default="docker-registry", help="registry binary (default docker-registry)")
    parser.add_argument("--abuse", action="store_true", help="the abuse section instead (password floods, ...)")
    parser.add_argument("--retention", action="store_true",
                        help="the retention section instead (retention runs over 10,000 tags, a collection's write pause)")
    parser.add_argument("--reads", action="store_true",
                        help="the reads section instead: registry direct, mreg from storage, mreg forwarding, "
                        "nginx (if installed), plain and TLS, side by side (bench/reads.py)")
    parser.add_argument("--s3", action="store_true",
                        help="also measure on S3: a single-node Ceph cluster (Debian packages ceph-mon, ceph-osd, radosgw)")
    return parser.parse_args(argv)


def run_abuse(registry_binary: str, quick: bool) -> dict[str, object]:
    """Each abuse workload against its own registry and proxy; prints its table, returns its figures."""
    with tempfile.TemporaryDirectory(prefix="mreg-bench-abuse-") as work:
        phases, rates, costs = abuse_login.run(registry_binary, work, quick)
    schedule = abuse_login.schedule_figures()
    print("## Password guessing\n")
    print(abuse_login.markdown(phases, rates, schedule))
    print("\n## Login time by hash cost\n")
    print(abuse_login.cost_markdown(costs))
    with tempfile.TemporaryDirectory(prefix="mreg-bench-abuse-") as work:
        idle, memory_rows, settle = abuse_memory.run(registry_binary, Path(work), quick)
    print("\n## Memory\n")
    print(abuse_memory.abuse_markdown(idle, memory_rows, settle))
    return {"login": {"phases": [vars(p) | {"flood": vars(p.flood) if p.flood else None} for p in phases],
                      "rates": rates, "schedule": schedule, "by_cost": [vars(row) for row in costs]},
            "memory": {"idle_mib": idle, "rows": [vars(r) for r in memory_rows]}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in (args.registry, "curl"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} not found (Debian packages: docker-registry, curl)")
    registry_binary = shutil.which(args.registry)
    assert registry_binary is not None
    if args.retention:
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
        with tempfile.TemporaryDirectory(prefix="mreg-bench-retention-") as work:
            try:
                rows = retention.run(retention.QUICK if args.quick else retention.FULL, registry_binary, Path(work),
                                     {USER: User(USER, "admin", hashed)}, (USER, PASSWORD))
            except BenchError as exc:
                sys.exit(f"bench: FAILED: {exc}")
        print(retention.markdown(rows))
        if args.json:
            args.json.write_text(json.dumps({"retention": rows, "quick": args.quick}, indent=2) + "\n")
        return 0
    if args.abuse:
        try:
            figures = run_abuse(registry_binary, args.quick)
        except BenchError as exc:
            sys.exit(f"bench: FAILED: {exc}")
        if args.json:
            args.json.write_text(json.dumps({"abuse": figures, "quick": args.quick}, indent=2) + "\n")
        return 0
    if args.reads:
        plan = READS_QUICK if args.quick else READS_FULL
        with tempfile.TemporaryDirectory(prefix="mreg-bench-reads-") as work:
            registry = start_registry(registry_binary, Path(work))
            try:
                sides = run_reads(plan, registry, Path(work))
            except BenchError as exc:
                sys.exit(f"bench: FAILED: {exc}")
            finally:
                stop(registry.process)
        print(reads_markdown(plan, sides))
        if args.json:
            args.json.write_text(json.dumps({"reads": reads_figures(sides), "quick": args.quick}, indent=2) + "\n")
        return 0
    if args.s3:
        for tool in ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool"):
            if shutil.which(tool) is None:
                sys.exit(f"bench: {tool} not found (Debian packages: ceph-mon, ceph-osd, radosgw, ceph-common)")
    s3_rows = []
    with tempfile.TemporaryDirectory(prefix="mreg-bench-") as work:
        try:
            rows, memory, token_rows, ui_rows = run(QUICK if args.quick else FULL, registry_binary, Path(work))
            if args.s3:
                hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
                users = {USER: User(USER, "admin", hashed)}
                s3_rows = run_s3(S3_QUICK if args.quick else S3_FULL, registry_binary, Path(work), users, (USER, PASSWORD))
        except BenchError as exc:
            sys.exit(f"bench: FAILED: {exc}")
    print(markdown(rows, memory, token_rows))
    print()
    print(ui_markdown(ui_rows))
    if s3_rows:
        print()
        print(s3_markdown(s3_rows))
    if args.json:
        payload = {
            "rows": [{**vars(r), "ratio": r.ratio} for r in rows], "memory_mib": memory, "quick": args.quick,
            "s3_rows": [vars(r) for r in s3_rows], "ui_rows": [vars(r) for r in ui_rows],
            # direct = cached password, proxy = CI token, both through mreg
            "token_rows": [{**vars(r), "ratio": r.ratio} for r in token_rows],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
