"""The web page's figures, in the same run as the API's: a repository page of 500 tags (cold:
a proxy just started, nothing cached; warm: manifests and configs cached by digest, every tag
still resolved on the registry), and that the page does not slow the API (HEAD through a proxy
with the web page on vs one with it off, alternating; and while a browser reloads the page).
"""

from __future__ import annotations

import datetime
import http.client
import json
import re
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlencode

from mreg_proxy.auth.users import User

from .services import BenchError, Service, start_proxy, stop
from .workloads import MANIFEST_TYPE, Endpoint, HeadResult, _connect, head_load, push_monolithic, seed_blob, sha256_digest

REPO = "bench/ui"
PAGE_LIMIT = 100_000


@dataclass(frozen=True)
class UiPlan:
    tags: int
    cold_reps: int
    warm_reps: int
    head_seconds: float
    head_reps: int


UI_FULL = UiPlan(500, cold_reps=3, warm_reps=20, head_seconds=5, head_reps=3)
UI_QUICK = UiPlan(100, cold_reps=1, warm_reps=3, head_seconds=1, head_reps=1)


@dataclass
class UiRow:
    label: str
    unit: str
    value: float
    compared: float | None = None  # the same measure with the web page off


def seed_tags(direct: Endpoint, count: int) -> None:
    """``count`` tags, each its own image (own config with its own creation time, one shared
    layer), pushed straight to the registry."""
    layer = seed_blob(direct, REPO, 9000, 4096)
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    conn = _connect(direct.url)
    try:
        for number in range(count):
            created = (start + datetime.timedelta(minutes=number)).strftime("%Y-%m-%dT%H:%M:%SZ")
            config = json.dumps({"architecture": "amd64", "os": "linux", "created": created,
                                 "config": {"Labels": {"n": str(number)}},
                                 "rootfs": {"type": "layers", "diff_ids": []}}).encode()
            push_monolithic(direct, REPO, config)
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256_digest(config), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 4096}],
            }).encode()
            conn.request("PUT", f"/v2/{REPO}/manifests/1.{number}", body=manifest, headers={"Content-Type": MANIFEST_TYPE})
            response = conn.getresponse()
            response.read()
            if response.status != 201:
                raise BenchError(f"seeding {REPO}:1.{number}: {response.status}")
    finally:
        conn.close()


def _cookies(response: http.client.HTTPResponse) -> dict[str, str]:
    found = {}
    for header in response.headers.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        found[name] = rest.split(";", 1)[0]
    return found


def log_in(url: str, user: str, password: str) -> str:
    """The Cookie header of a logged-in browser."""
    conn = _connect(url)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        html = response.read().decode()
        pre = _cookies(response)
        csrf = re.search(r'name="csrf" value="([^"]+)"', html)
        if csrf is None:
            raise BenchError("the login page has no CSRF token")
        body = urlencode({"csrf": csrf[1], "username": user, "password": password})
        conn.request("POST", "/ui/login", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"mreg_login={pre['mreg_login']}"})
        response = conn.getresponse()
        response.read()
        session = _cookies(response).get("mreg_session")
        if response.status != 303 or not session:
            raise BenchError(f"web login answered {response.status}")
        return f"mreg_session={session}"
    finally:
        conn.close()


def page_seconds(url: str, path: str, cookie: str, tags: int) -> float:
    """One page load on a new connection (as a browser's reload after idle), checked."""
    conn = _connect(url)
    try:
        began = time.perf_counter()
        conn.request("GET", path, headers={"Cookie": cookie})
        response = conn.getresponse()
        body = response.read()
        seconds = time.perf_counter() - began
    finally:
        conn.close()
    if response.status != 200 or f"{tags} tags".encode() not in body:
        raise BenchError(f"the repository page answered {response.status} without its {tags} tags")
    if len(body) >= PAGE_LIMIT:
        raise BenchError(f"the repository page is {len(body)} bytes")
    return seconds


def run_ui(plan: UiPlan, direct: Endpoint, workdir: Path, users: Mapping[str, User], login: tuple[str, str]) -> list[UiRow]:
    print(f"web page: seeding {plan.tags} tags ...", file=sys.stderr)
    seed_tags(direct, plan.tags)
    newest, by_name = f"/ui/r/{REPO}", f"/ui/r/{REPO}?sort=name"
    cold: list[float] = []
    warm: list[float] = []
    warm_name: list[float] = []
    for rep in range(plan.cold_reps):
        folder = workdir / f"ui-{rep}"
        folder.mkdir()
        service = start_proxy(direct.url, folder, users)
        try:
            cookie = log_in(service.url, *login)
            cold.append(page_seconds(service.url, newest, cookie, plan.tags))
            if rep == plan.cold_reps - 1:
                warm = [page_seconds(service.url, newest, cookie, plan.tags) for _ in range(plan.warm_reps)]
                warm_name = [page_seconds(service.url, by_name, cookie, plan.tags) for _ in range(plan.warm_reps)]
        finally:
            stop(service.process)
    rows = [
        UiRow(f"repository page, {plan.tags} tags, newest first, cold", "ms", statistics.median(cold) * 1000),
        UiRow(f"repository page, {plan.tags} tags, newest first, warm", "ms", statistics.median(warm) * 1000),
        UiRow(f"repository page, {plan.tags} tags, by name, warm", "ms", statistics.median(warm_name) * 1000),
    ]
    return rows + api_rows(plan, direct, workdir, users, login)


def api_rows(plan: UiPlan, direct: Endpoint, workdir: Path, users: Mapping[str, User], login: tuple[str, str]) -> list[UiRow]:
    """HEAD manifest through a proxy with the web page on and one with it off (alternating), then
    through the first while a browser reloads the 500-tag page without pause."""
    print("web page: the API with the page on and off ...", file=sys.stderr)
    services: dict[str, Service] = {}
    try:
        for name, env in (("on", {}), ("off", {"MREG_UI": "off"})):
            folder = workdir / f"api-ui-{name}"
            folder.mkdir()
            services[name] = start_proxy(direct.url, folder, users, env)
        endpoints = {name: Endpoint(name, s.url, login) for name, s in services.items()}
        url = f"/v2/{REPO}/manifests/1.0"
        rates: dict[str, list[HeadResult]] = {"on": [], "off": []}
        for rep in range(plan.head_reps):
            for name in ("on", "off") if rep % 2 == 0 else ("off", "on"):
                rates[name].append(head_load(endpoints[name], endpoints[name].url + url, 32, plan.head_seconds))
        cookie = log_in(services["on"].url, *login)
        page_seconds(services["on"].url, f"/ui/r/{REPO}", cookie, plan.tags)  # warm
        stop_event = threading.Event()
        loads: list[float] = []

        def browse() -> None:
            while not stop_event.is_set():
                loads.append(page_seconds(services["on"].url, f"/ui/r/{REPO}", cookie, plan.tags))

        browser = threading.Thread(target=browse, daemon=True)
        browser.start()
        try:
            busy = [head_load(endpoints["on"], endpoints["on"].url + url, 32, plan.head_seconds) for _ in range(plan.head_reps)]
        finally:
            stop_event.set()
            browser.join(30)
    finally:
        for service in services.values():
            stop(service.process)

    def median(results: list[HeadResult], field: str) -> float:
        return statistics.median(getattr(r, field) for r in results)

    return [
        UiRow("HEAD manifest, 32 conns, web page on (vs off)", "req/s", median(rates["on"], "rate"), median(rates["off"], "rate")),
        UiRow("HEAD manifest, 32 conns, p99, web page on (vs off)", "ms", median(rates["on"], "p99_ms"), median(rates["off"], "p99_ms")),
        UiRow(f"HEAD manifest, 32 conns, while a browser reloads the {plan.tags}-tag page", "req/s", median(busy, "rate")),
        UiRow(f"HEAD manifest, 32 conns, p99, while a browser reloads the {plan.tags}-tag page", "ms", median(busy, "p99_ms")),
        UiRow(f"repository page, {plan.tags} tags, warm, during that HEAD load", "ms", statistics.median(loads) * 1000 if loads else 0.0),
    ]


def ui_markdown(rows: list[UiRow]) -> str:
    lines = ["| web page | value | web page off |", "|---|---:|---:|"]
    for row in rows:
        other = "-" if row.compared is None else f"{row.compared:.1f}"
        lines.append(f"| {row.label} ({row.unit}) | {row.value:.1f} | {other} |")
    return "\n".join(lines)
