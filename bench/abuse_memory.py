"""Memory under abuse: the proxy's RSS while strangers (and one busy admin) do what costs it most.

Each workload runs against a fresh look at the proxy's RSS: its peak while the workload runs
(sampled every 20 ms) and its RSS ``settle`` seconds after the workload ended. Targets (issue 9):
peak under 256 MiB for every workload, and back within 20% of the idle RSS afterwards.

- oversized headers: anonymous requests, each trying to send 128 headers of 60 KiB (7.7 MB)
- wrong-password bodies: uploads of 16 MiB announced with a wrong password, body sent at once
- idle connections: 10,000 connections from one address (127.0.0.2) opened and left silent,
  past the proxy's connection cap; meanwhile one request from 127.0.0.1 (answered or refused)
- uploads: 200 admins' 16 MiB blob uploads in parallel (POST, then PUT with the body)

Load comes from this process (asyncio sockets, an aiohttp client) on loopback only; every loop is
bounded in count and every wait in time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable
from urllib.parse import urljoin, urlsplit

import aiohttp
import bcrypt

from mreg_proxy.auth.users import User

from .services import RssSampler, Service, memory_kib, start_proxy, start_registry, stop

MiB = 1 << 20
ADMIN = ("bench", "bench-Secret-1")
REPO = "bench/abuse"
ATTACK_TIMEOUT = 120.0  # no workload may run longer than this; each finishes well before
IO_TIMEOUT = 30.0
WARM_SETTLE = 10.0  # after the warm-up: two of the proxy's 5 s memory trims


@dataclass(frozen=True)
class AbusePlan:
    header_clients: int
    body_clients: int
    idle_connections: int
    uploads: int
    upload_size: int
    settle: float  # seconds after a workload before the "after" RSS is read
    connection_cap: int  # the proxy's MREG_MAX_CONNECTIONS: the idle connections go past it


ABUSE_FULL = AbusePlan(300, 1000, 10_000, 200, 16 * MiB, settle=60.0, connection_cap=1000)
ABUSE_QUICK = AbusePlan(50, 100, 500, 20, 4 * MiB, settle=3.0, connection_cap=200)
STRANGER = "127.0.0.2"  # any 127.x.y.z is an address of its own on Linux
TEAM = "127.0.0.1"


@dataclass
class AbuseRow:
    workload: str
    peak_mib: float
    after_mib: float
    registry_peak_mib: float  # the registry's own RSS, to size its container's limit
    note: str


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _open(
    host: str, port: int, source: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    local = (source, 0) if source else None
    try:
        return await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=local), IO_TIMEOUT)
    except (OSError, asyncio.TimeoutError):
        return None


async def _status_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """The status of the answer, 0 when the connection ended without one."""
    try:
        line = await asyncio.wait_for(reader.readline(), IO_TIMEOUT)
        return int(line.split()[1]) if line.startswith(b"HTTP/") else 0
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        return 0
    finally:
        writer.close()


async def oversized_headers(host: str, port: int, clients: int) -> str:
    """Each client sends 128 headers of 60 KiB (what the proxy's old 64 KiB field limit took)."""
    field = b"X-Pad-%d: " + b"a" * (60 * 1024) + b"\r\n"

    async def one() -> int:
        opened = await _open(host, port)
        if opened is None:
            return -1
        reader, writer = opened
        try:
            writer.write(b"GET /v2/ HTTP/1.1\r\nHost: bench\r\n")
            for i in range(128):
                writer.write(field % i)
                await asyncio.wait_for(writer.drain(), IO_TIMEOUT)
            writer.write(b"\r\n")
            await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass  # cut off by the proxy: expected
        return await _status_then_close(reader, writer)

    statuses = await asyncio.gather(*(one() for _ in range(clients)))
    return _tally(statuses)


async def wrong_password_bodies(host: str, port: int, clients: int, repo: str) -> str:
    """Uploads announced as 16 MiB with a wrong password, the body sent without waiting."""
    chunk = os.urandom(MiB)
    head = (
        f"PUT /v2/{repo}/blobs/uploads/x?digest=sha256:{'0' * 64} HTTP/1.1\r\nHost: bench\r\n"
        f"Authorization: {_basic('bench', 'wrong-password')}\r\nContent-Length: {16 * MiB}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    async def one() -> int:
        opened = await _open(host, port)
        if opened is None:
            return -1
        reader, writer = opened

        async def send() -> None:
            try:
                writer.write(head)
                for _ in range(16):
                    writer.write(chunk)
                    await asyncio.wait_for(writer.drain(), IO_TIMEOUT)
            except (OSError, asyncio.TimeoutError):
                pass

        sender = asyncio.create_task(send())
        status = await _status_then_close(reader, writer)
        sender.cancel()
        return status

    statuses = await asyncio.gather(*(one() for _ in range(clients)))
    return _tally(statuses)


async def idle_connections(host: str, port: int, count: int, hold: float, user: tuple[str, str]) -> str:
    """``count`` connections from one stranger's address opened and left silent for ``hold``
    seconds; once they are open (past the connection cap), one request from the team's address."""
    opened = []
    for _ in range(count):  # one by one: a burst of SYNs would overflow the listen backlog
        connection = await _open(host, port, STRANGER)
        if connection is not None:
            opened.append(connection)
    team = await _open(host, port, TEAM)
    status = 0
    if team is not None:
        team[1].write(f"GET /v2/ HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
                      f"Authorization: {_basic(*user)}\r\n\r\n".encode())
        status = await _status_then_close(*team)
    await asyncio.sleep(hold)
    still_open = sum(1 for reader, _writer in opened if not reader.at_eof())
    for _reader, writer in opened:
        writer.close()
    answer = f"answered {status}" if status else "refused"
    return f"{len(opened)} opened, {still_open} still open after {hold:.0f} s; a request from another address: {answer}"


async def parallel_uploads(base: str, user: tuple[str, str], repo: str, count: int, size: int) -> str:
    """``count`` admins each upload a distinct blob of ``size`` bytes, all at once."""
    block = os.urandom(MiB)
    auth = {"Authorization": _basic(*user)}

    def chunks(seed: int) -> list[bytes]:
        stamped = []
        for offset in range(0, size, MiB):
            piece = bytearray(block[: min(MiB, size - offset)])
            piece[:16] = offset.to_bytes(8, "big") + seed.to_bytes(8, "big")
            stamped.append(bytes(piece))
        return stamped

    async def body(seed: int) -> AsyncIterator[bytes]:
        for piece in chunks(seed):
            yield piece

    def digest(seed: int) -> str:
        hashed = hashlib.sha256()
        for piece in chunks(seed):
            hashed.update(piece)
        return "sha256:" + hashed.hexdigest()

    seed_base = int(time.time() * 1000) % (1 << 40)
    digests = [digest(seed_base + i) for i in range(count)]
    connector = aiohttp.TCPConnector(limit=count)
    timeout = aiohttp.ClientTimeout(total=ATTACK_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> int:
            async with session.post(f"{base}/v2/{repo}/blobs/uploads/", headers=auth) as started:
                if started.status != 202:
                    return started.status
                location = urljoin(f"{base}/v2/{repo}/blobs/uploads/", started.headers["Location"])
            sep = "&" if urlsplit(location).query else "?"
            async with session.put(
                f"{location}{sep}digest={digests[i]}", data=body(seed_base + i),
                headers={**auth, "Content-Type": "application/octet-stream", "Content-Length": str(size)},
            ) as finished:
                return finished.status

        statuses = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    return _tally([s if isinstance(s, int) else -1 for s in statuses])


async def warm_up(base: str, user: tuple[str, str], repo: str) -> None:
    """What a team does first (log in, a wrong password, a small push), so that "idle" is the
    proxy as it rests between requests, not as it was before its first one."""
    auth = {"Authorization": _basic(*user)}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=IO_TIMEOUT)) as session:
        for _ in range(5):
            async with session.get(f"{base}/v2/", headers=auth) as response:
                await response.read()
        async with session.get(f"{base}/v2/", headers={"Authorization": _basic(user[0], "wrong")}) as response:
            await response.read()
    await parallel_uploads(base, user, repo, 2, MiB)


def _tally(statuses: list[int]) -> str:
    counts: dict[int, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    names = {0: "closed without answer", -1: "could not connect"}
    return ", ".join(f"{n} x {names.get(s, s)}" for s, n in sorted(counts.items()))


def _raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def run_abuse(
    plan: AbusePlan, base: str, pid: int, registry_pid: int, admin: tuple[str, str], repo: str,
    idle_hold: float,
) -> tuple[float, list[AbuseRow]]:
    """(idle RSS in MiB, one row per workload)."""
    _raise_file_limit(plan.idle_connections + 256)
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    asyncio.run(warm_up(base, admin, repo))
    time.sleep(WARM_SETTLE)
    idle = memory_kib(pid, "VmRSS") / 1024
    workloads: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        (f"{plan.header_clients} clients x 7.7 MB of headers",
         lambda: oversized_headers(host, port, plan.header_clients)),
        (f"{plan.body_clients} wrong-password 16 MiB uploads",
         lambda: wrong_password_bodies(host, port, plan.body_clients, repo)),
        (f"{plan.idle_connections} idle connections",
         lambda: idle_connections(host, port, plan.idle_connections, idle_hold, admin)),
        (f"{plan.uploads} parallel {plan.upload_size // MiB} MiB admin uploads",
         lambda: parallel_uploads(base, admin, repo, plan.uploads, plan.upload_size)),
    ]
    rows = []
    for label, workload in workloads:
        print(f"abuse: {label} ...", file=sys.stderr)
        with RssSampler(pid) as rss, RssSampler(registry_pid) as registry_rss:
            note = asyncio.run(asyncio.wait_for(workload(), ATTACK_TIMEOUT))
        time.sleep(plan.settle)
        after = memory_kib(pid, "VmRSS") / 1024
        rows.append(AbuseRow(label, rss.peak / 1024, after, registry_rss.peak / 1024, note))
    return idle, rows


def abuse_markdown(idle: float, rows: list[AbuseRow], settle: float) -> str:
    lines = [
        f"| workload (proxy idle RSS {idle:.0f} MiB, after a warm-up) | proxy peak RSS (MiB) | proxy RSS {settle:.0f} s after (MiB) "
        "| registry peak RSS (MiB) | answers |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.workload} | {row.peak_mib:.0f} | {row.after_mib:.0f} | {row.registry_peak_mib:.0f} | {row.note} |"
        )
    return "\n".join(lines)


def run(registry_binary: str, workdir: Path, quick: bool) -> tuple[float, list[AbuseRow], float]:
    """The memory workloads against a fresh registry and proxy: (idle RSS, rows, settle seconds)."""
    plan = ABUSE_QUICK if quick else ABUSE_FULL
    registry = start_registry(registry_binary, workdir)
    proxy: Service | None = None
    try:
        hashed = bcrypt.hashpw(ADMIN[1].encode(), bcrypt.gensalt(10)).decode()
        proxy = start_proxy(
            registry.url, workdir, {ADMIN[0]: User(ADMIN[0], "admin", hashed)},
            {"MREG_MAX_CONNECTIONS": str(plan.connection_cap)},
        )
        # idle connections are held past the proxy's idle timeout (60 s), to see them closed
        idle_hold = 2.0 if quick else 70.0
        idle, rows = run_abuse(plan, proxy.url, proxy.process.pid, registry.process.pid, ADMIN, REPO, idle_hold)
        return idle, rows, plan.settle
    finally:
        if proxy is not None:
            stop(proxy.process)
        stop(registry.process)
