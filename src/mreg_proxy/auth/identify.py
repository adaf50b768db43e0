"""Who is asking: the request's credentials become a Principal (user, CI token or anonymous).

``authenticate`` is the whole of authentication for a request, ``Access.refuse`` the whole of
answering a decision that is not ALLOW; both write the audit events that belong to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from typing import Callable, Mapping

from aiohttp import web

from .. import errors
from ..keys import ACCESS, PRINCIPAL, SETTINGS, USER
from ..spec.routes import Route
from ..transport.addresses import client_address
from .audit import AuditLog
from .decide import Decision, Kind, Principal
from .passwords import Authenticator, LoginRefused, parse_basic
from .throttle import Throttle
from .tokencheck import TokenUsage, check_token
from .users import Token, User, UserStore


def sends_no_credentials(header: str | None) -> bool:
    """No Authorization header, or Basic with an empty user and password: what podman and skopeo
    send, once challenged, when they have no credentials for the registry."""
    if header is None:
        return True
    scheme, _, token = header.strip().partition(" ")
    return scheme.lower() == "basic" and token.strip() in ("", "Og==")  # base64(":")


class Access:
    def __init__(
        self, store: UserStore, authenticator: Authenticator, throttle: Throttle, usage: TokenUsage, audit: AuditLog
    ) -> None:
        self.store = store
        self.authenticator = authenticator
        self.throttle = throttle
        self.usage = usage
        self.audit = audit
        self._flushes: set[asyncio.Task[None]] = set()

    async def identify(self, header: str | None, client: str, connected: Callable[[], bool]) -> Principal | None:
        """The principal behind the Authorization ``header``; None when the credentials sent do
        not log in. Raises LoginRefused when they could not be checked now (throttled, busy)."""
        snapshot = await self.store.fresh_store()
        if sends_no_credentials(header):
            return Principal.anonymous(snapshot.anonymous)
        credentials = parse_basic(header)
        if credentials is None:
            self.audit.record("login_failed", user=None, address=client, reason="malformed Authorization")
            return None
        name, secret = credentials
        token = snapshot.tokens.get(name)
        if token is not None:
            principal, problem = await self._token(token, secret, client, connected, snapshot.users)
            if principal is not None:
                return principal
        else:
            user = await self.authenticator.authenticate(name, secret, client, connected, snapshot.users)
            if user is not None:
                return Principal.of_user(user)
            problem = "wrong user name or password"
        self.audit.record("login_failed", user=name, address=client, reason=problem)
        return None

    async def _token(
        self, token: Token, secret: str, client: str, connected: Callable[[], bool], users: Mapping[str, User]
    ) -> tuple[Principal | None, str]:
        """A token's secret costs one keyed hash, so it is checked first: a good token is never
        slowed down. A failure then goes the way of a wrong password for a name nobody has (the
        throttle shared with passwords, held or refused with 429 once it has piled up, and a
        bcrypt check against the costliest hash, its result thrown away), so that the time of a
        failure does not tell a token's name from a name that does not exist."""
        now = datetime.datetime.now(datetime.timezone.utc)
        problem = check_token(token, secret, now)
        if problem is None:
            self._note_use(token.name, now)
            return Principal.of_token(token), ""
        # no user has a token's name (the users file refuses it): this never logs anyone in
        await self.authenticator.authenticate(token.name, secret, client, connected, users)
        return None, problem

    def _note_use(self, name: str, now: datetime.datetime) -> None:
        self.usage.note(name, now)
        if self.usage.claim():
            task = asyncio.create_task(asyncio.to_thread(self.usage.flush))
            self._flushes.add(task)  # keep a reference until it is done
            task.add_done_callback(self._flushes.discard)

    def refuse(self, request: web.Request, principal: Principal, route: Route, decision: Decision, realm: str) -> web.Response:
        """The answer to a request ``decision`` does not allow."""
        if decision is Decision.UNSUPPORTED:
            return errors.unsupported(request.method)
        if decision is Decision.CHALLENGE:
            return errors.unauthorized(realm)
        level, _grant = principal.access(route.name) if route.name else (principal.base, None)
        action = route.action.value if route.action else request.method
        self.audit.record(
            "denied", user=principal.name or None, kind=principal.kind.value, address=request.remote,
            method=request.method, repository=route.name, reference=route.reference, action=action,
            access=str(level),
        )
        if decision is Decision.HIDE:
            return errors.unknown_repository(route)
        return errors.denied(describe(principal), action, route.name, str(level))

    async def close(self) -> None:
        """Wait for writes in flight and write what is still pending."""
        for task in list(self._flushes):
            with contextlib.suppress(Exception):
                await task
        await asyncio.to_thread(self.usage.flush)


async def authenticate(request: web.Request) -> Principal | None:
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


async def admin_refusal(request: web.Request, what: str) -> web.Response | None:
    """None when an admin made the request (then ``request[PRINCIPAL]`` is that admin), else the
    answer: 401 without a login, 403 for everyone else (``what``: what they may not do)."""
    principal = await authenticate(request)
    if principal is None or principal.kind is Kind.ANONYMOUS:
        return errors.unauthorized(request.app[SETTINGS].realm)
    if not principal.is_admin:
        return errors.error_response(403, "DENIED", f"{principal.name!r} may not {what}")
    return None


def describe(principal: Principal) -> str:
    """How a principal is named in messages and in the audit log."""
    if principal.kind is Kind.ANONYMOUS:
        return "anonymous"
    return f"{principal.kind.value} {principal.name!r}"
