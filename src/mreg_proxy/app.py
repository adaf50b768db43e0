"""create_app(settings): routes, authentication and authorization, lifecycle; main() runs it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
import time
from typing import AsyncIterator, Awaitable, Callable, Sequence

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from . import errors
from .auth.identify import Access
from .transport.admission import admit, body_gate, no_early_continue
from .auth.audit import AuditLog
from .auth.passwords import Authenticator, LoginRefused, parse_basic
from .auth.checkpool import CheckPool
from .auth.decide import Decision, Kind, Principal, decide
from .oci.catalog import list_catalog
from .transport.connection import HEADER_BUDGET, LINGER_SECONDS, MAX_HEADERS, MAX_LINE_BYTES
from .config import ConfigError, Settings, configure_logging, load_settings
from .escape import escaped
from .transport.memory import cap_arenas, trimmer
from .transport.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics
from .oci.mount import allowed_source, mount_source, without_mount
from .transport.forwarder import BODY_BYTES, UPSTREAM_ERROR, forward, make_session
from .transport.readiness import Readiness
from .spec.references import manifest_refusal
from .oci.referrers import delete_manifest, list_referrers, put_manifest
from .spec.routes import Action, Endpoint, Route, classify
from .transport.site import SwitchingSite
from .oci.tagdelete import RepositoryLocks, delete_tag
from .oci.tags import list_tags
from .auth.throttle import Policy, Throttle, client_address
from .transport.tls import TlsState
from .auth.tokencheck import TokenUsage
from .oci.upload_state import UploadMemory
from .oci.uploads import continue_upload, start_upload
from .auth.users import UserStore
from .oci.writepause import CONTROL_REPOSITORY, WritePause, control, refused, reserved

log = logging.getLogger("mreg")

SETTINGS = web.AppKey("settings", Settings)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
SESSION = web.AppKey("session", aiohttp.ClientSession)
TLS = web.AppKey("tls", TlsState)
USERS = web.AppKey("users", UserStore)
METRICS = web.AppKey("metrics", Metrics)
TAG_LOCKS = web.AppKey("tag_locks", RepositoryLocks)
READINESS = web.AppKey("readiness", Readiness)
UPLOADS = web.AppKey("uploads", UploadMemory)
WRITE_PAUSE = web.AppKey("write_pause", WritePause)
ACCESS = web.AppKey("access", Access)
USER = web.RequestKey("user", str)  # who made the request, for the access log
PRINCIPAL = web.RequestKey("principal", Principal)  # who made it, for the handlers

READY_TIMEOUT = aiohttp.ClientTimeout(total=3)
UPLOAD_BUFFER = 64 * 1024


async def _authenticate(request: web.Request) -> Principal | None:
    """Who is behind the request (a user, a CI token or an anonymous client; None when the
    credentials sent do not log in), recorded for the access log and the handlers.

    Raises a 400 for two Authorization headers (which one would the client mean?), and a 429 or
    503 when the credentials could not be checked now (throttled, or too many checks waiting).
    """
    headers = request.headers.getall("Authorization", [])
    if len(headers) > 1:
        raise errors.error_exception(400, "UNSUPPORTED", "more than one Authorization header")
    header = headers[0] if headers else None
    if credentials := parse_basic(header):
        request[USER] = f"!{credentials[0]}"  # a failed attempt, shown as such in the log
    settings = request.app[SETTINGS]
    client = client_address(request.remote, request.headers.getall("X-Forwarded-For", []), settings.trusted_proxies)
    try:
        principal = await request.app[ACCESS].identify(
            header, client, lambda: request.transport is not None and not request.transport.is_closing()
        )
    except LoginRefused as refusal:
        raise errors.error_exception(refusal.status, refusal.code, str(refusal), retry_after=refusal.retry_after) from None
    if principal is not None:
        request[PRINCIPAL] = principal
        if principal.kind is not Kind.ANONYMOUS:
            request[USER] = principal.name
    return principal


RouteHandler = Callable[[web.Request, Route], Awaitable[web.StreamResponse]]


async def _forward(request: web.Request, route: Route) -> web.StreamResponse:
    return await forward(request, request.app[SESSION], request.app[SETTINGS].upstream)


def _refused(route: Route) -> web.Response | None:
    """The proxy's answer to a malformed manifest reference (registry 2.8 answers some with 500)."""
    assert route.reference is not None
    refusal = manifest_refusal(route.method, route.reference)
    return None if refusal is None else errors.error_response(refusal.status, refusal.code, refusal.message)


async def _read_manifest(request: web.Request, route: Route) -> web.StreamResponse:
    return _refused(route) or await _forward(request, route)


async def _write_manifest(request: web.Request, route: Route) -> web.StreamResponse:
    """registry 2.8 fails a delete by digest (500, a tag left dangling) while another tag link of
    the repository is being written: manifest writes of one repository take turns with each other
    and with tag deletions. Manifests are small; blob uploads are not held up. A manifest with a
    ``subject`` is added to its subject's referrers index under the same lock."""
    if refused := _refused(route):
        return refused
    app = request.app
    assert route.name is not None
    # across replicas the lock orders nothing: each push by tag is also verified (manifestguard.py)
    tag = route.reference if route.is_tag else None
    return await put_manifest(
        request, app[SESSION], app[SETTINGS].upstream, app[TAG_LOCKS](route.name), route.name, tag,
        shared=app[SETTINGS].shared_storage,
    )


async def _delete_manifest(request: web.Request, route: Route) -> web.StreamResponse:
    if refused := _refused(route):
        return refused
    app = request.app
    assert route.name is not None and route.reference is not None
    if not route.is_tag:  # by digest: the registry's own delete, then the referrers index
        return await delete_manifest(
            request, app[SESSION], app[SETTINGS].upstream, app[TAG_LOCKS](route.name), route.name, route.reference,
            shared=app[SETTINGS].shared_storage,
        )
    return await delete_tag(
        request, app[SESSION], app[SETTINGS].upstream, app[TAG_LOCKS], route.name, route.reference
    )


async def _list_tags(request: web.Request, route: Route) -> web.StreamResponse:
    assert route.name is not None
    return await list_tags(request, request.app[SESSION], request.app[SETTINGS].upstream, route.name)


async def _list_referrers(request: web.Request, route: Route) -> web.StreamResponse:
    assert route.name is not None and route.reference is not None
    return await list_referrers(request, request.app[SESSION], request.app[SETTINGS].upstream, route.name, route.reference)


async def _list_catalog(request: web.Request, route: Route) -> web.StreamResponse:
    principal = request[PRINCIPAL]
    if principal.pulls_everything:
        return await _forward(request, route)  # the registry's own paging, untouched
    return await list_catalog(request, request.app[SESSION], request.app[SETTINGS].upstream, principal.may_pull)


async def _start_upload(request: web.Request, route: Route) -> web.StreamResponse:
    """A mount from a repository the caller may not pull becomes a plain upload start (mount.py)."""
    app, principal = request.app, request[PRINCIPAL]
    raw_path = None
    source = mount_source(request.query)
    if source is not None and not allowed_source(source, principal.may_pull):
        app[ACCESS].audit.record(
            "mount_refused", user=principal.name, kind=principal.kind.value, address=request.remote,
            repository=route.name, source=source,
        )
        raw_path = without_mount(request.rel_url.raw_path, request.rel_url.raw_query_string)
    return await start_upload(request, app[SESSION], app[SETTINGS].upstream, app[UPLOADS], raw_path=raw_path)


async def _continue_upload(request: web.Request, route: Route) -> web.StreamResponse:
    app = request.app
    assert route.name is not None and route.reference is not None
    return await continue_upload(
        request, app[SESSION], app[SETTINGS].upstream, app[UPLOADS], route.name, route.reference
    )


def _audited(event: str, handler: RouteHandler) -> RouteHandler:
    """``handler``, plus one audit event when it succeeds (who, what, which digest)."""

    async def audited(request: web.Request, route: Route) -> web.StreamResponse:
        response = await handler(request, route)
        if 200 <= response.status < 300:
            principal = request[PRINCIPAL]
            digest = response.headers.get("Docker-Content-Digest")
            request.app[ACCESS].audit.record(
                event, user=principal.name, kind=principal.kind.value, address=request.remote,
                repository=route.name, **({"tag": route.reference} if route.is_tag else {}),
                digest=digest or (None if route.is_tag else route.reference),
            )
        return response

    return audited


# The requests the proxy answers itself or wraps, by (endpoint, method); everything else is
# forwarded as it is. What registry 2.8 gets wrong is mended here, one entry each.
HANDLERS: dict[tuple[Endpoint, str], RouteHandler] = {
    (Endpoint.MANIFEST, "GET"): _read_manifest,
    (Endpoint.MANIFEST, "HEAD"): _read_manifest,
    (Endpoint.MANIFEST, "PUT"): _audited("manifest_pushed", _write_manifest),
    (Endpoint.MANIFEST, "DELETE"): _audited("manifest_deleted", _delete_manifest),
    (Endpoint.BLOB, "DELETE"): _audited("blob_deleted", _forward),
    (Endpoint.CATALOG, "GET"): _list_catalog,
    (Endpoint.TAGS, "GET"): _list_tags,
    (Endpoint.REFERRERS, "GET"): _list_referrers,
    (Endpoint.REFERRERS, "HEAD"): _list_referrers,
    (Endpoint.UPLOADS, "POST"): _start_upload,
    **{(Endpoint.UPLOAD, method): _continue_upload for method in ("GET", "HEAD", "PATCH", "PUT", "DELETE")},
}


async def handle_v2(request: web.Request) -> web.StreamResponse:
    app = request.app
    principal = await _authenticate(request)
    if principal is None:
        return errors.unauthorized(app[SETTINGS].realm)
    route = classify(request.method, request.path)
    decision = decide(principal, route)
    if decision is not Decision.ALLOW:
        return app[ACCESS].refuse(request, principal, route, decision, app[SETTINGS].realm)
    if route.action is not Action.PULL:
        if route.name == CONTROL_REPOSITORY:
            return reserved(request.method)
        if remaining := await app[WRITE_PAUSE].remaining(app[SESSION]):
            return refused(remaining)  # before admit: the body is dropped, never forwarded
    await admit(request)
    return await HANDLERS.get((route.endpoint, route.method), _forward)(request, route)


async def handle_healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def handle_readyz(request: web.Request) -> web.Response:
    """Ready when TLS, if wanted, can be served and the registry answers its API root (any
    status below 500; asked at most once a second, see Readiness)."""
    if request.app[TLS].refused:
        return web.Response(status=503, text="not ready: the TLS certificate and key are unusable\n")
    problem = await request.app[READINESS].problem()
    if problem is None:
        return web.Response(text="ok\n")
    return web.Response(status=503, text=f"not ready: {problem}\n")


async def _registry_problem(app: web.Application) -> str | None:
    """None when the registry answers its API root (any status below 500), else why not."""
    url = app[SETTINGS].upstream / "v2/"
    try:
        async with app[SESSION].get(url, timeout=READY_TIMEOUT) as response:
            if response.status < 500:
                return None
            return f"registry answered {response.status}"
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return f"registry unreachable: {exc.__class__.__name__}"


async def handle_write_pause(request: web.Request) -> web.Response:
    """The shared write pause (writepause.py), for admins."""
    principal = await _authenticate(request)
    if principal is None or principal.kind is Kind.ANONYMOUS:
        return errors.unauthorized(request.app[SETTINGS].realm)
    if not principal.is_admin:
        return errors.error_response(403, "DENIED", f"{principal.name!r} may not pause writes")
    await admit(request)
    return await control(request, request.app[SESSION], request.app[WRITE_PAUSE], principal.name)


async def handle_metrics(request: web.Request) -> web.Response:
    mode = request.app[SETTINGS].metrics
    if mode == "off":
        return errors.not_found()
    if mode == "admin":
        principal = await _authenticate(request)
        if principal is None or principal.kind is Kind.ANONYMOUS:
            return errors.unauthorized(request.app[SETTINGS].realm)
        if not principal.is_admin:
            return errors.error_response(403, "DENIED", f"{principal.name!r} may not read the metrics")
    return web.Response(body=request.app[METRICS].exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE})


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts every request once it is over (the body included: proxied bodies stream inside
    the handler). A handful of dict updates per request, nothing that waits."""
    started = time.perf_counter()
    status = 500  # what aiohttp answers when a handler raises
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[METRICS].observe(
            request.method,
            status,
            time.perf_counter() - started,
            request.content.total_bytes,
            request.get(BODY_BYTES, 0),
            request.get(UPSTREAM_ERROR),
        )


async def handle_not_found(request: web.Request) -> web.Response:
    return errors.not_found()


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests no handler should see: TLS wanted but unusable (fail closed: an error, never
    registry content over plain HTTP), and request targets that are not a path."""
    refused = request.app[TLS].refused
    if refused and request.path not in ("/healthz", "/readyz"):
        return errors.unavailable(
            503, "this registry's TLS certificate or key is unusable; its administrator must "
            "install a working pair with manage-tls (the proxy's log says what is wrong)",
        )
    if sum(len(name) + len(value) + 4 for name, value in request.raw_headers) > HEADER_BUDGET:
        # a block that arrived in one piece; connection.py cuts one that arrives slowly
        response = errors.error_response(
            431, "HEADERS_TOO_LARGE", f"the request headers exceed {HEADER_BUDGET} bytes"
        )
        response.force_close()
        return response
    if not request.raw_path.startswith("/"):  # absolute-form (GET http://host/v2/) or "*"
        return errors.error_response(400, "BAD_REQUEST", "the request target must be a path")
    return await handler(request)


async def _server_name(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = errors.SERVER_NAME


class AccessLogger(AbstractAccessLogger):
    """One line per request: client, user, method, path, status, bytes, seconds.

    The query string is left out (upload state tokens are long and useless in a log); no header is
    ever logged, so neither is a password. The path is logged as sent (percent-encoded) and a
    failed user name escaped (spaces too), so that no client can write a line break, a fake line
    or an extra field into the log.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %s %d %d %.3fs",
            request.remote,
            escaped(request.get(USER, "-"), 80),
            request.method,
            request.rel_url.raw_path,
            response.status,
            request.get(BODY_BYTES, response.content_length or 0),
            time,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


RUNNER_OPTIONS = {"access_log_class": AccessLogger, "access_log": logging.getLogger("mreg.access")}


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


async def _token_usage(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[ACCESS].close()  # last uses not yet written


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
        middlewares=[metrics_middleware, guard_middleware, body_gate],
    )
    app.on_response_prepare.append(_server_name)
    app[SETTINGS] = settings
    store = UserStore(settings.users_file)
    store.refresh()
    app[USERS] = store
    throttle = Throttle(  # one for passwords and CI tokens alike
        Policy(settings.login_free_failures, settings.login_max_delay),
        Policy(settings.login_address_free_failures, settings.login_max_delay),
    )
    app[AUTHENTICATOR] = Authenticator(
        store, ttl=settings.auth_cache_ttl, dummy_cost=settings.bcrypt_cost,
        pool=CheckPool(settings.bcrypt_workers, settings.bcrypt_queue), throttle=throttle,
    )
    app[ACCESS] = Access(
        store, app[AUTHENTICATOR], throttle, TokenUsage(settings.token_usage_file),
        AuditLog(settings.audit_target, settings.audit_max_bytes),
    )
    # before the server waits for its handlers: queued and held password checks end at once
    app.on_shutdown.append(_stop_password_checks)
    app[READINESS] = Readiness(lambda: _registry_problem(app))
    app[METRICS] = Metrics(app[AUTHENTICATOR])
    tls = TlsState(settings.tls_cert, settings.tls_key)
    tls.refresh()
    app[TLS] = tls
    app[TAG_LOCKS] = RepositoryLocks()
    app[UPLOADS] = UploadMemory()
    app[WRITE_PAUSE] = WritePause(settings.upstream, settings.pause_poll_interval)
    app.cleanup_ctx.append(_upstream_session)
    app.cleanup_ctx.append(_tls_watcher)
    app.cleanup_ctx.append(trimmer)
    app.cleanup_ctx.append(_token_usage)
    routes = app.router
    routes.add_get("/healthz", handle_healthz, expect_handler=no_early_continue)
    routes.add_get("/readyz", handle_readyz, expect_handler=no_early_continue)
    routes.add_get("/metrics", handle_metrics, expect_handler=no_early_continue)
    routes.add_route("*", "/mreg/write-pause", handle_write_pause, expect_handler=no_early_continue)
    routes.add_route("*", r"/v2{tail:(/.*)?}", handle_v2, expect_handler=no_early_continue)
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
