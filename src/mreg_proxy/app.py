"""The composition root: create_app(settings) builds and wires the parts, serve() runs them,
main() is the mreg-proxy command. Requests are answered in oci/ (the API), auth/ (who asks, may
they) and transport/ (connections and bytes); the keys they find each other by are in keys.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
from typing import AsyncIterator, Callable, Sequence

from aiohttp import web

from .auth.audit import AuditLog
from .auth.checkpool import CheckPool
from .auth.identify import Access
from .auth.passwords import Authenticator
from .auth.throttle import Policy, Throttle
from .auth.tokencheck import TokenUsage
from .auth.users import UserStore
from .config import ConfigError, Settings, configure_logging, load_settings
from .keys import (
    ACCESS, AUTHENTICATOR, MAINTENANCE, METRICS, POLICY, PULL_TIMES, READINESS, SESSION, SETTINGS, STORAGE_READS,
    TAG_LOCKS, TLS, UPLOADS, USERS, WRITE_PAUSE,
)
from .oci.admin import handle_gc, handle_metrics, handle_retention, handle_write_pause
from .oci.collect import Maintenance
from .oci.retention_runs import Registry
from .oci.schedule import scheduled_retention
from .oci.dispatch import handle_not_found, handle_v2
from .oci.reads import StorageReads
from .oci.tagdelete import RepositoryLocks
from .oci.upload_state import UploadMemory
from .oci.writepause import WritePause
from .policy.pulls import PullTimes
from .policy.rules import PolicyStore
from .transport import guard, metrics
from .transport.accesslog import RUNNER_OPTIONS
from .transport.admission import body_gate, no_early_continue
from .transport.connection import LINGER_SECONDS, MAX_HEADERS, MAX_LINE_BYTES
from .transport.forwarder import make_session
from .transport.memory import cap_arenas, trimmer
from .transport.readiness import Readiness, handle_healthz, handle_readyz, registry_problem
from .transport.site import SwitchingSite
from .transport.tls import TlsState
from .web.routes import install as install_web_page

log = logging.getLogger("mreg")

UPLOAD_BUFFER = 64 * 1024


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    async with make_session() as session:
        app[SESSION] = session
        yield


async def _stop_password_checks(app: web.Application) -> None:
    app[AUTHENTICATOR].close()


async def _tls_watcher(app: web.Application) -> AsyncIterator[None]:
    tls = app[TLS]
    interval = app[SETTINGS].tls_poll_interval

    async def watch() -> None:
        while True:
            await asyncio.sleep(interval)
            tls.refresh()

    task = asyncio.create_task(watch())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _maintenance(app: web.Application) -> AsyncIterator[None]:
    """Retention runs and collections need the session to the registry; the schedule, if any,
    runs as long as the app."""
    settings = app[SETTINGS]
    registry = Registry(app[SESSION], settings.upstream, settings.registry_root, app[PULL_TIMES])
    app[MAINTENANCE] = Maintenance(
        registry, app[WRITE_PAUSE], app[TAG_LOCKS], app[ACCESS].audit, settings.gc_dir,
    )
    task = None
    if settings.retention_schedule is not None:
        task = asyncio.create_task(scheduled_retention(app[MAINTENANCE], app[POLICY], settings.retention_schedule))
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _token_usage(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[ACCESS].close()  # last uses not yet written
    await app[PULL_TIMES].close()


def create_app(settings: Settings) -> web.Application:
    # auto_decompress off: request bodies go upstream exactly as the client encoded them.
    # read_bufsize: how much of an upload is buffered ahead of the registry (twice this, plus
    # one read of the event loop's). Every upload in flight holds it: with 1 MiB, 200 parallel
    # 16 MiB uploads took the proxy to 850 MiB; aiohttp's default of 64 KiB keeps them under
    # 256 MiB (docs/security.md) at no measurable cost in throughput.
    # keepalive_timeout: aiohttp closes a connection that has no request in progress this long
    # after it opened or after its last response: idle keep-alive, and slow or unfinished headers.
    # lingering_time: a connection whose request body nobody will use (a refused upload,
    # admission.py) closes this long after its answer; what arrives meanwhile is dropped unread.
    app = web.Application(
        handler_args={
            "max_line_size": MAX_LINE_BYTES, "max_field_size": MAX_LINE_BYTES,
            "max_headers": MAX_HEADERS, "keepalive_timeout": settings.idle_timeout,
            "lingering_time": LINGER_SECONDS, "auto_decompress": False, "read_bufsize": UPLOAD_BUFFER,
        },
        middlewares=[metrics.middleware, guard.middleware, body_gate],
    )
    app.on_response_prepare.append(guard.server_name)
    app[SETTINGS] = settings
    store = UserStore(settings.users_file)
    store.refresh()
    app[USERS] = store
    throttle = Throttle(  # one for passwords and CI tokens alike
        Policy(settings.login_free_failures, settings.login_max_delay),
        Policy(settings.login_address_free_failures, settings.login_max_delay),
    )
    app[AUTHENTICATOR] = Authenticator(
        store, ttl=settings.auth_cache_ttl, dummy_cost=settings.bcrypt_cost, upgrade_cost=settings.bcrypt_cost,
        pool=CheckPool(settings.bcrypt_workers, settings.bcrypt_queue), throttle=throttle,
    )
    app[ACCESS] = Access(
        store, app[AUTHENTICATOR], throttle, TokenUsage(settings.token_usage_file),
        AuditLog(settings.audit_target, settings.audit_max_bytes),
    )
    # before the server waits for its handlers: queued and held password checks end at once
    app.on_shutdown.append(_stop_password_checks)
    app[READINESS] = Readiness(lambda: registry_problem(app[SESSION], settings.upstream))
    app[METRICS] = metrics.Metrics(app[AUTHENTICATOR])
    tls = TlsState(settings.tls_cert, settings.tls_key)
    tls.refresh()
    app[TLS] = tls
    app[TAG_LOCKS] = RepositoryLocks()
    app[UPLOADS] = UploadMemory()
    app[WRITE_PAUSE] = WritePause(settings.upstream, settings.pause_poll_interval)
    app[POLICY] = PolicyStore(settings.policy_file)
    app[PULL_TIMES] = PullTimes(settings.pull_times_file)
    root = settings.registry_root
    app[STORAGE_READS] = None if root is None else StorageReads(root, settings.upstream)
    app.cleanup_ctx.append(_upstream_session)
    app.cleanup_ctx.append(_maintenance)
    app.cleanup_ctx.append(_tls_watcher)
    app.cleanup_ctx.append(trimmer)
    app.cleanup_ctx.append(_token_usage)
    routes = app.router
    routes.add_get("/healthz", handle_healthz, expect_handler=no_early_continue)
    routes.add_get("/readyz", handle_readyz, expect_handler=no_early_continue)
    routes.add_get("/metrics", handle_metrics, expect_handler=no_early_continue)
    routes.add_route("*", "/mreg/write-pause", handle_write_pause, expect_handler=no_early_continue)
    routes.add_route("*", "/mreg/retention", handle_retention, expect_handler=no_early_continue)
    routes.add_route("*", "/mreg/gc", handle_gc, expect_handler=no_early_continue)
    routes.add_route("*", r"/v2{tail:(/.*)?}", handle_v2, expect_handler=no_early_continue)
    if settings.ui:
        install_web_page(app, settings)  # "/" and /ui/..., before the catch-all
    routes.add_route("*", r"/{tail:.*}", handle_not_found, expect_handler=no_early_continue)
    return app


def startup_notes(settings: Settings, *, users: int, tls_on: bool) -> list[str]:
    """What a newcomer reading the first log lines must know: nobody can log in yet, or the
    password crosses the network in clear."""
    notes = []
    if not users:
        notes.append(
            f"no users yet in {settings.users_file}: every request is refused until you add one "
            "(manage-user add NAME, then manage-user toggle NAME for an admin)"
        )
    if not tls_on:
        notes.append(
            f"serving plain HTTP: no usable TLS pair at {settings.tls_cert} and {settings.tls_key} "
            "(install one with manage-tls cert and manage-tls key; HTTPS starts without a restart)"
        )
    return notes


def connection_cap(wanted: int) -> int:
    """``wanted``, or fewer when the process's file limit cannot hold that many: each client
    connection takes a descriptor, and one more for its registry connection while it is proxied."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    fits = max(1, (soft - 64) // 2)  # 64 for the listener, files, splice pipes and logging
    if fits < wanted:
        log.warning("file limit %d holds %d connections, not %d: the cap is %d", soft, fits, wanted, fits)
    return min(wanted, fits)


class ListenError(OSError):
    """The listening socket could not be opened; the message is one line for the operator."""


async def serve(settings: Settings, started: asyncio.Event | None = None) -> None:
    """Run until cancelled."""
    app = create_app(settings)
    runner = web.AppRunner(app, **RUNNER_OPTIONS)
    await runner.setup()
    try:
        site = SwitchingSite(
            runner, settings.listen_host, settings.listen_port, app[TLS],
            max_connections=connection_cap(settings.max_connections),
            idle_timeout=settings.idle_timeout,
        )
        try:
            await site.start()
        except OSError as exc:  # typically: the port is taken
            raise ListenError(
                f"cannot listen on {settings.listen_host}:{settings.listen_port}: {exc.strerror or exc}"
            ) from exc
        log.info(
            "mreg-proxy listening on %s, registry at %s, event loop %s",
            site.name, settings.upstream, type(asyncio.get_running_loop()).__module__,
        )
        # a refused pair fails closed (no plain HTTP): its own error line says why
        tls_on = app[TLS].context is not None or app[TLS].refused is not None
        for note in startup_notes(settings, users=len(app[USERS].current()), tls_on=tls_on):
            log.info("%s", note)
        if started is not None:
            started.set()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def _run_until_signalled(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT; as PID 1 in a container, SIGTERM is ignored unless handled."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serve(settings)
    log.info("mreg-proxy stopped")


def loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when wanted and installed; None means asyncio's default.

    uvloop is optional: it takes about a third off the proxy's CPU per small request (see the
    README's Performance section), but the proxy must run where it cannot be installed.
    """
    if settings.event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        sys.exit(f"mreg-proxy: error: {exc}")
    configure_logging(settings.log_level)
    cap_arenas()
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings)) as runner:
            runner.run(_run_until_signalled(settings))
    except ListenError as exc:
        sys.exit(f"mreg-proxy: error: {exc}")
    except KeyboardInterrupt:
        pass
