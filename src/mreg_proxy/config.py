"""One frozen Settings object, built once at the edge from flags and environment.

Nothing else in the package reads ``os.environ``: the proxy and the CLIs receive a Settings.
Flags win over environment variables, which win over the defaults.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from yarl import URL


class ConfigError(ValueError):
    """A setting is unusable; the message is one line meant for the operator."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def default_bcrypt_workers() -> int:
    """As many as the CPUs the process may use, at least two: the throttle keeps an attacker's
    address to about one check at a time, so a second thread is what spares the team's logins
    from waiting behind it (0.25 s instead of 1.1 s on two cores, docs/security.md)."""
    return max(2, len(os.sched_getaffinity(0)))


@dataclass(frozen=True, slots=True)
class Settings:
    listen_host: str = "0.0.0.0"
    listen_port: int = 5000
    upstream: URL = URL("http://127.0.0.1:5001")
    users_file: Path = Path("/auth/users.yml")
    tls_cert: Path = Path("/auth/tls.crt")
    tls_key: Path = Path("/auth/tls.key")
    realm: str = "mreg"
    log_level: str = "INFO"
    auth_cache_ttl: float = 60.0
    bcrypt_cost: int = 12
    tls_poll_interval: float = 1.0
    # how stale this replica's view of the shared write pause may be (writepause.py)
    pause_poll_interval: float = 2.0
    # replicas share the registry storage (S3): each referrers-index write is read back after a
    # wait and merged again when another replica wrote over it (oci/referrers.py). Off for one
    # proxy, where the repository lock orders every write and the wait would only cost time.
    shared_storage: bool = False
    # who may read /metrics: "admin" (an authenticated admin), "open" (anyone who can reach the
    # port, for a scraper inside the pod's network) or "off". Admins only by default: the
    # counters tell an outsider how busy the registry is and how often passwords fail.
    metrics: str = "admin"
    # "auto": uvloop when it is installed (the "fast" extra), asyncio's own loop otherwise
    event_loop: str = "auto"
    # connections open at once; at the cap a new one takes the place of an idle connection of the
    # address holding the most, and is closed at accept only when none is idle (lowered to what
    # the process's file limit holds)
    max_connections: int = 1000
    # seconds a connection may go without a request in progress (idle keep-alive, a silent new
    # connection, headers that never finish), and a transfer may wait on its client without
    # progress (an upload whose body stops coming, a download the client stops reading); a
    # transfer that moves, however slowly, and waits on the registry are never cut
    idle_timeout: float = 60.0
    # password checks (bcrypt) run in their own threads; at most bcrypt_queue wait, beyond that
    # a login is answered 503 with Retry-After at once (docs/security.md)
    bcrypt_workers: int = default_bcrypt_workers()
    bcrypt_queue: int = 32
    # failed logins: free per (address, user) and per address, then a doubling delay (1 s, 2 s,
    # 4 s, ...) up to login_max_delay seconds; an attempt that would wait more than 2 s gets 429
    login_free_failures: int = 5
    login_address_free_failures: int = 20
    login_max_delay: float = 300.0
    # front proxies whose X-Forwarded-For names the client (addresses or CIDR networks); none by
    # default: the client is the direct peer, and a forged header changes nothing
    trusted_proxies: tuple[Network, ...] = ()
    # security events as JSON lines (audit.py); "-" is standard output; None: audit.log beside
    # the users file (/auth/audit.log), on the auth volume
    audit_log: str | None = None
    # the log is rotated (one old file kept) before it grows past this: never fills the volume
    audit_max_bytes: int = 10 << 20
    # the registry's storage.filesystem.rootdirectory as this process sees it (read-only is
    # enough): manifest and blob reads are answered from its files (oci/reads.py), retention reads
    # push times (tag links' modification times) there and a collection the untagged manifests it
    # forgets. None: every read is forwarded to the registry (S3 storage, or a registry volume not
    # mounted here), push times are unknown
    registry_root: Path | None = None
    # retention rules and immutable tags (policy/rules.py), beside the users file by default
    policy_file: Path = Path("/auth/policy.yml")
    # a folder shared with the registry container, where the collector loop of its start command
    # waits for requests (oci/collect.py); None: no garbage collection on demand
    gc_dir: Path | None = None
    # run retention (then a collection) every this many seconds; None: never (the default)
    retention_schedule: float | None = None
    # who runs a CLI, for the audit log (MREG_ACTOR, else the login name); None when unknown
    actor: str | None = None
    # the web page (web/): login at /, pages under /ui/; off leaves only the API and health
    ui: bool = True

    @property
    def audit_target(self) -> str:
        return self.audit_log or str(self.users_file.with_name("audit.log"))

    @property
    def token_usage_file(self) -> Path:
        """When each CI token was last used: written by the proxy (throttled), beside the users."""
        return self.users_file.with_name("token-usage.json")

    @property
    def pull_times_file(self) -> Path:
        """When each image was last pulled, per repository and digest (policy/pulls.py)."""
        return self.users_file.with_name("pull-times.json")

    @property
    def ui_key_file(self) -> Path:
        """The key that signs the web page's session cookies: on the auth volume, beside the
        users, so that every replica accepts the sessions of the others."""
        return self.users_file.with_name("ui-session.key")


# (flag, environment variable, Settings field, help)
_OPTIONS: tuple[tuple[str, str, str, str], ...] = (
    ("--listen", "MREG_LISTEN", "listen", "address to listen on, HOST:PORT (default 0.0.0.0:5000)"),
    ("--upstream", "MREG_UPSTREAM", "upstream", "registry base URL (default http://127.0.0.1:5001)"),
    ("--users-file", "MREG_USERS_FILE", "users_file", "YAML user store (default /auth/users.yml)"),
    ("--tls-cert", "MREG_TLS_CERT", "tls_cert", "PEM certificate (chain) (default /auth/tls.crt)"),
    ("--tls-key", "MREG_TLS_KEY", "tls_key", "PEM private key (default /auth/tls.key)"),
    ("--realm", "MREG_REALM", "realm", 'Basic auth realm (default "mreg")'),
    ("--log-level", "MREG_LOG_LEVEL", "log_level", "DEBUG, INFO, WARNING or ERROR (default INFO)"),
    ("--auth-cache-ttl", "MREG_AUTH_CACHE_TTL", "auth_cache_ttl",
     "seconds a verified password is remembered, 0 disables (default 60)"),
    ("--bcrypt-cost", "MREG_BCRYPT_COST", "bcrypt_cost", "bcrypt cost for new hashes, 4-16 (default 12)"),
    ("--pause-poll-interval", "MREG_PAUSE_POLL_INTERVAL", "pause_poll_interval",
     "seconds between looks at the shared write pause, 0.1-60 (default 2)"),
    ("--shared-storage", "MREG_SHARED_STORAGE", "shared_storage",
     "true when several replicas share the registry storage (S3) (default false)"),
    ("--metrics", "MREG_METRICS", "metrics",
     "who may read /metrics: admin (Basic auth, an admin user), open (no auth) or off (default admin)"),
    ("--event-loop", "MREG_EVENT_LOOP", "event_loop",
     "auto (uvloop if installed) or asyncio (default auto)"),
    ("--max-connections", "MREG_MAX_CONNECTIONS", "max_connections",
     "client connections open at once; at the cap an idle one makes room, else new ones are "
     "closed at accept (default 1000)"),
    ("--idle-timeout", "MREG_IDLE_TIMEOUT", "idle_timeout",
     "seconds a connection may wait without a request in progress, or a transfer on a client that "
     "makes no progress (default 60)"),
    ("--bcrypt-workers", "MREG_BCRYPT_WORKERS", "bcrypt_workers",
     "threads checking passwords (default: the CPUs, at least 2)"),
    ("--bcrypt-queue", "MREG_BCRYPT_QUEUE", "bcrypt_queue",
     "password checks that may wait; more get 503 (default 32)"),
    ("--login-free-failures", "MREG_LOGIN_FREE_FAILURES", "login_free_failures",
     "failed logins per address and user before delays start (default 5)"),
    ("--login-address-free-failures", "MREG_LOGIN_ADDRESS_FREE_FAILURES", "login_address_free_failures",
     "failed logins per address, any user, before delays start (default 20)"),
    ("--login-max-delay", "MREG_LOGIN_MAX_DELAY", "login_max_delay",
     "cap of the doubling delay after failed logins, seconds (default 300)"),
    ("--trusted-proxies", "MREG_TRUSTED_PROXIES", "trusted_proxies",
     "comma-separated addresses/CIDRs of front proxies whose X-Forwarded-For is believed (default none)"),
    ("--audit-log", "MREG_AUDIT_LOG", "audit_log",
     "security events as JSON lines, - for stdout (default audit.log beside the users file)"),
    ("--registry-root", "MREG_REGISTRY_ROOT", "registry_root",
     "the registry's filesystem rootdirectory, mounted here (read-only): manifest and blob reads "
     "are answered from it, retention reads push times there (default: unset, every read is forwarded)"),
    ("--policy-file", "MREG_POLICY_FILE", "policy_file", "retention rules and immutable tags (default /auth/policy.yml)"),
    ("--gc-dir", "MREG_GC_DIR", "gc_dir",
     "folder shared with the registry container's collector loop (default: none, no GC on demand)"),
    ("--retention-schedule", "MREG_RETENTION_SCHEDULE", "retention_schedule",
     "run retention then garbage collection every DURATION, e.g. 24h (default: off)"),
    ("--audit-max-bytes", "MREG_AUDIT_MAX_BYTES", "audit_max_bytes",
     "size at which the audit log is rotated, one old file kept (default 10485760)"),
    ("--ui", "MREG_UI", "ui", "the web page at /: on or off (default on)"),
)
# where a CLI learns who runs it, first found wins (sudo keeps the operator's name in SUDO_USER)
_ACTOR_VARIABLES = ("MREG_ACTOR", "SUDO_USER", "USER", "LOGNAME")

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
METRICS_MODES = ("admin", "open", "off")
EVENT_LOOPS = ("auto", "asyncio")
BOOLEANS = ("true", "false")
SWITCHES = ("on", "off")


def parse_listen(value: str, name: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``[v6]:PORT`` -> (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"{name} {value!r}: expected HOST:PORT, e.g. 0.0.0.0:5000")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"{name} {value!r}: port must be 1-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", port


def parse_upstream(value: str, name: str) -> URL:
    try:
        url = URL(value)
    except ValueError as exc:
        raise ConfigError(f"{name} {value!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"{name} {value!r}: expected http://HOST:PORT")
    if url.path not in ("", "/") or url.query_string:
        raise ConfigError(f"{name} {value!r}: give the registry's base URL, without a path")
    return url.with_path("")


def parse_networks(value: str, name: str) -> tuple[Network, ...]:
    """``10.0.0.1, 192.168.0.0/16, fd00::/8`` -> networks; empty -> none."""
    networks = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not an address or a CIDR network") from None
    return tuple(networks)


def parse_schedule(value: str, name: str) -> float | None:
    """``off`` (or empty) -> None; ``12h``, ``1d``, ``30m`` -> seconds (at least 10 minutes)."""
    text = value.strip().lower()
    if text in ("", "off"):
        return None
    units = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ConfigError(f"{name} {value!r}: expected off or a duration like 12h, 1d")
    seconds = int(text[:-1]) * units[text[-1]]
    if not 600 <= seconds <= 366 * 86400:
        raise ConfigError(f"{name} {value!r}: between 10m and 366d")
    return float(seconds)


def _number(name: str, value: str, kind: type, low: float, high: float) -> float:
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name} {value!r}: not a number") from None
    if not low <= number <= high:
        raise ConfigError(f"{name} {value!r}: must be between {low} and {high}")
    return number


def _choice(name: str, value: str, raw: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} {raw!r}: expected one of {', '.join(choices)}")
    return value


def _field_value(field: str, env_name: str, raw: str) -> dict[str, object]:
    if field == "listen":
        host, port = parse_listen(raw, env_name)
        return {"listen_host": host, "listen_port": port}
    if field == "upstream":
        return {"upstream": parse_upstream(raw, env_name)}
    if field == "gc_dir":
        return {field: Path(raw) if raw else None}
    if field == "retention_schedule":
        return {field: parse_schedule(raw, env_name)}
    if field in ("users_file", "tls_cert", "tls_key", "policy_file"):
        if not raw:
            raise ConfigError(f"{env_name}: empty path")
        return {field: Path(raw)}
    if field == "log_level":
        return {field: _choice(env_name, raw.upper(), raw, _LOG_LEVELS)}
    if field == "auth_cache_ttl":
        return {field: _number(env_name, raw, float, 0, 86400)}
    if field == "shared_storage":
        return {field: _choice(env_name, raw.lower(), raw, BOOLEANS) == "true"}
    if field == "ui":
        return {field: _choice(env_name, raw.lower(), raw, SWITCHES) == "on"}
    if field == "pause_poll_interval":
        return {field: _number(env_name, raw, float, 0.1, 60)}
    if field == "max_connections":
        return {field: _number(env_name, raw, int, 1, 1_000_000)}
    if field == "idle_timeout":
        return {field: _number(env_name, raw, float, 1, 3600)}
    if field == "bcrypt_cost":
        return {field: _number(env_name, raw, int, 4, 16)}
    if field == "metrics":
        return {field: _choice(env_name, raw.lower(), raw, METRICS_MODES)}
    if field == "event_loop":
        return {field: _choice(env_name, raw.lower(), raw, EVENT_LOOPS)}
    if field in ("bcrypt_workers", "bcrypt_queue", "login_free_failures", "login_address_free_failures"):
        return {field: _number(env_name, raw, int, 1, 10_000)}
    if field == "login_max_delay":
        return {field: _number(env_name, raw, float, 1, 86400)}
    if field == "trusted_proxies":
        return {field: parse_networks(raw, env_name)}
    if field == "audit_log":
        if not raw:
            raise ConfigError(f"{env_name}: empty path (use - for standard output)")
        return {field: raw}
    if field == "registry_root":
        if not raw:
            return {}  # set but empty: unset, as in a manifest that blanks it
        root = Path(raw)
        if not root.is_absolute():
            raise ConfigError(f"{env_name} {raw!r}: give an absolute path")
        if not root.is_dir():
            raise ConfigError(f"{env_name} {raw!r}: no such directory (mount the registry's volume there)")
        return {field: root}
    if field == "audit_max_bytes":
        return {field: _number(env_name, raw, int, 4096, 1 << 40)}
    if field == "realm":
        if not raw or '"' in raw or "\\" in raw or not raw.isprintable():
            raise ConfigError(f"{env_name} {raw!r}: printable, without quotes or backslashes")
        return {"realm": raw}
    raise AssertionError(field)


def build_parser(prog: str = "mreg-proxy") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="mreg-proxy: the Basic-auth reverse proxy of mreg, in front of registry:2. "
        "Every flag can also be given as the environment variable shown; flags win.",
    )
    for flag, env_name, _field, help_text in _OPTIONS:
        parser.add_argument(flag, metavar="VALUE", help=f"{help_text} [{env_name}]")
    return parser


def load_settings(argv: Sequence[str] | None, env: Mapping[str, str]) -> Settings:
    """Flags (``argv``), then ``env``, then defaults. Raises ConfigError on a bad value."""
    args = build_parser().parse_args(list(argv) if argv is not None else [])
    return settings_from(vars(args), env)


def settings_from(flags: Mapping[str, str | None], env: Mapping[str, str]) -> Settings:
    values: dict[str, object] = {}
    for flag, env_name, field, _help in _OPTIONS:
        raw = flags.get(flag.lstrip("-").replace("-", "_"))
        name = flag if raw is not None else env_name
        if raw is None:
            raw = env.get(env_name)
        if raw is not None:
            values.update(_field_value(field, name, raw))
    values["actor"] = next((env[v] for v in _ACTOR_VARIABLES if env.get(v)), None)
    return Settings(**values)  # type: ignore[arg-type]


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format=LOG_FORMAT)
    # LOG_FORMAT shows none of the caller's file and line, thread or process: the logging HOWTO's
    # "Optimization" settings skip collecting them for every record (the access log writes one
    # per request; about 2 µs each)
    logging._srcfile = None  # type: ignore[attr-defined]  # the HOWTO's documented switch
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
