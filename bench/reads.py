"""``python -m bench --reads``: pulls side by side, one run, on one registry.

Columns: the registry direct; mreg answering from the registry's files (MREG_REGISTRY_ROOT, as
the pod runs it); mreg forwarding every read (the setting unset, as on S3); nginx in front of the
same registry with distribution's recipe (auth_basic with a bcrypt htpasswd file, proxy_pass),
when nginx is installed. Plain HTTP, then TLS (mreg and nginx; a self-signed EC certificate).

Rows: HEAD of a manifest by tag with 1 and 32 keep-alive connections, the CPU each server process spent per HEAD (user + system time over
the requests answered), pulls of one blob and of 8 in parallel (curl), and mreg's RSS peak
during the pulls. Each figure is the median over repetitions whose order rotates.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import bcrypt

from mreg_proxy.auth.users import User
from mreg_proxy.cli.gen_tls import self_signed

from .services import HOST, RssSampler, Service, free_port, registry_root, start_proxy, stop, wait_http
from .workloads import MiB, Endpoint, check_head, head_load, pull, seed_blob, seed_manifest, verify_pull

REPO = "bench/reads"
USER, PASSWORD = "bench", "bench-Secret-1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

NGINX_CONFIG = """\
{user}
worker_processes auto;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  upstream docker-registry {{ server {registry}; }}
  map $upstream_http_docker_distribution_api_version $docker_distribution_api_version {{
    '' 'registry/2.0';
  }}
  server {{
    listen {host}:{plain_port};
    listen {host}:{tls_port} ssl;
    ssl_certificate {work}/tls.crt;
    ssl_certificate_key {work}/tls.key;
    client_max_body_size 0;
    chunked_transfer_encoding on;
    location /v2/ {{
      auth_basic "Registry realm";
      auth_basic_user_file {work}/htpasswd;
      add_header 'Docker-Distribution-Api-Version' $docker_distribution_api_version always;
      proxy_pass http://docker-registry;
      proxy_set_header Host $http_host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_read_timeout 900;
    }}
  }}
}}
"""


@dataclass(frozen=True)
class ReadsPlan:
    single_size: int
    parallel_streams: int
    parallel_size: int
    head_seconds: float
    reps: int


READS_FULL = ReadsPlan(1024 * MiB, 8, 128 * MiB, head_seconds=5, reps=3)
READS_QUICK = ReadsPlan(64 * MiB, 8, 8 * MiB, head_seconds=1, reps=1)


@dataclass
class Side:
    """One column: where to send requests, and the processes whose CPU and memory count."""

    name: str
    endpoint: Endpoint
    pids: Callable[[], list[int]]
    tls: bool = False
    results: dict[str, list[float]] = field(default_factory=dict)

    def add(self, measure: str, value: float) -> None:
        self.results.setdefault(measure, []).append(value)


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """``pid`` and its child processes (nginx's workers)."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError):
                pass
    return found


def start_nginx(work: Path, registry: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """nginx as distribution's documentation sets it up, on two free ports (plain, TLS)."""
    plain_port, tls_port = free_port(), free_port()
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    (work / "htpasswd").write_text(f"{USER}:{hashed}\n")
    user = "user root;" if os.geteuid() == 0 else ""
    config = NGINX_CONFIG.format(user=user, work=work, registry=registry.removeprefix("http://"), host=HOST,
                                 plain_port=plain_port, tls_port=tls_port)
    (work / "nginx.conf").write_text(config)
    nginx = shutil.which("nginx")
    assert nginx is not None
    process = subprocess.Popen([nginx, "-p", str(work), "-c", str(work / "nginx.conf"), "-g", "daemon off;"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://{HOST}:{plain_port}/v2/", process)
    except BaseException:
        stop(process)
        raise
    return process, plain_port, tls_port


def run_reads(plan: ReadsPlan, registry_service: Service, workdir: Path) -> list[Side]:
    """Every column against the registry of ``registry_service`` (its storage under ``workdir``)."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    users = {USER: User(USER, "admin", hashed)}
    cert, key = self_signed(HOST, days=1)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        homes = {name: workdir / name for name in ("storage", "forwarded", "tls", "nginx")}
        for home in homes.values():
            home.mkdir()
        for home in (homes["tls"], homes["nginx"]):
            (home / "tls.crt").write_bytes(cert)
            (home / "tls.key").write_bytes(key)
        root = {"MREG_REGISTRY_ROOT": str(registry_root(workdir))}
        storage = start_proxy(registry_service.url, homes["storage"], users, root)
        processes.append(storage.process)
        forwarded = start_proxy(registry_service.url, homes["forwarded"], users)
        processes.append(forwarded.process)
        tls = start_proxy(registry_service.url, homes["tls"], users, root)
        processes.append(tls.process)
        credentials = (USER, PASSWORD)
        sides = [
            Side("registry direct", Endpoint("direct", registry_service.url), lambda: [registry_service.process.pid]),
            Side("mreg (storage)", Endpoint("mreg", storage.url, credentials), lambda: [storage.process.pid]),
            Side("mreg (forwarded)", Endpoint("mreg-forwarded", forwarded.url, credentials), lambda: [forwarded.process.pid]),
            Side("mreg TLS (storage)", Endpoint("mreg-tls", tls.url.replace("http://", "https://"), credentials),
                 lambda: [tls.process.pid], tls=True),
        ]
        if shutil.which("nginx"):
            nginx, plain_port, tls_port = start_nginx(homes["nginx"], registry_service.url)
            processes.append(nginx)
            sides.append(Side("nginx", Endpoint("nginx", f"http://{HOST}:{plain_port}", credentials),
                              lambda: children(nginx.pid)))
            sides.append(Side("nginx TLS", Endpoint("nginx-tls", f"https://{HOST}:{tls_port}", credentials),
                              lambda: children(nginx.pid), tls=True))
        else:
            print("nginx not installed: its columns are left out (Debian package nginx-light)", file=sys.stderr)
        measure(plan, sides, registry_service, storage)
        return sides
    finally:
        for process in processes:
            stop(process)


def measure(plan: ReadsPlan, sides: list[Side], registry_service: Service, storage: Service) -> None:
    direct = sides[0].endpoint
    print("seeding the registry for the read rows ...", file=sys.stderr)
    single = [(seed_blob(direct, REPO, 100, plan.single_size), plan.single_size)]
    parallel = [(seed_blob(direct, REPO, 101 + i, plan.parallel_size), plan.parallel_size)
                for i in range(plan.parallel_streams)]
    digest, size = seed_manifest(direct, REPO, "bench", *parallel[0])
    url = f"/v2/{REPO}/manifests/bench"
    for side in sides:
        check_head(side.endpoint, side.endpoint.url + url, digest, size)  # and bcrypt once, as a login
        verify_pull(side.endpoint, REPO, single[0][0])
    for rep in range(plan.reps):
        order = sides[rep % len(sides):] + sides[:rep % len(sides)]
        for side in order:
            for connections in (1, 32):
                before = cpu_seconds(side.pids())
                result = head_load(side.endpoint, side.endpoint.url + url, connections, plan.head_seconds,
                                   required=side.name.startswith("mreg") or side.name == "registry direct")
                spent = cpu_seconds(side.pids()) - before
                side.add(f"head{connections}", result.rate)
                if result.rate:
                    side.add(f"cpu{connections}", spent / (result.rate * plan.head_seconds) * 1e6)
        for side in order:
            for label, blobs in (("pull1", single), ("pull8", parallel)):
                if side.name != "mreg (storage)":
                    side.add(label, pull(side.endpoint, REPO, blobs))
                    continue
                with RssSampler(storage.process.pid) as rss:
                    side.add(label, pull(side.endpoint, REPO, blobs))
                side.add(f"rss_{label}", rss.peak / 1024)


ROWS = (
    ("head1", "HEAD manifest by tag, 1 conn (req/s)", "{:.0f}"),
    ("head32", "HEAD manifest by tag, 32 conns (req/s)", "{:.0f}"),
    ("cpu1", "CPU per HEAD, 1 conn (µs, that server's processes)", "{:.0f}"),
    ("cpu32", "CPU per HEAD, 32 conns (µs, that server's processes)", "{:.0f}"),
    ("pull1", "pull {single} MiB, 1 stream (MB/s)", "{:.0f}"),
    ("pull8", "pull {streams} x {parallel} MiB (MB/s)", "{:.0f}"),
    ("rss_pull1", "mreg RSS peak, 1 stream (MiB)", "{:.0f}"),
    ("rss_pull8", "mreg RSS peak, {streams} streams (MiB)", "{:.0f}"),
)


def reads_markdown(plan: ReadsPlan, sides: list[Side]) -> str:
    plain = [s for s in sides if not s.tls]
    tls = [s for s in sides if s.tls]
    names = [s.name for s in plain] + [s.name for s in tls]
    lines = ["| measure | " + " | ".join(names) + " | mreg (storage) / direct |",
             "|---|" + "---:|" * (len(names) + 1)]
    sizes = {"single": plan.single_size // MiB, "streams": plan.parallel_streams, "parallel": plan.parallel_size // MiB}
    for key, label, form in ROWS:
        cells = []
        for side in plain + tls:
            values = side.results.get(key)
            cells.append(form.format(statistics.median(values)) if values else "-")
        direct, storage = plain[0].results.get(key), plain[1].results.get(key)
        ratio = f"{statistics.median(storage) / statistics.median(direct):.2f}x" if direct and storage else "-"
        lines.append(f"| {label.format(**sizes)} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def reads_figures(sides: list[Side]) -> dict[str, dict[str, float]]:
    return {side.name: {k: statistics.median(v) for k, v in side.results.items()} for side in sides}
