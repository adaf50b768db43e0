"""Who is asking: the request's credentials become a Principal (user, CI token or anonymous).

Kept out of app.py so that the request path stays readable: ``identify`` is the whole of
authentication, ``refuse`` the whole of answering a decision that is not ALLOW; both write the
audit events that belong to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from typing import Callable

from aiohttp import web

from .. import errors
from .audit import AuditLog
from .passwords import Authenticator, LoginRefused, parse_basic
from .decide import Decision, Kind, Principal
from ..spec.routes import Route
from .throttle import Throttle
from .tokencheck import TokenUsage, check_token
from .users import Token, UserStore


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
            principal, problem = await self._token(token, secret, client)
            if principal is not None:
                return principal
        else:
            user = await self.authenticator.authenticate(name, secret, client, connected, snapshot.users)
            if user is not None:
                return Principal.of_user(user)
            problem = "wrong user name or password"
        self.audit.record("login_failed", user=name, address=client, reason=problem)
        return None

    async def _token(self, token: Token, secret: str, client: str) -> tuple[Principal | None, str]:
        """A token's secret costs one keyed hash, so it is checked first; only a failure is
        charged to the throttle shared with passwords (held, or refused with 429 once it has
        piled up): a good token is never slowed down, a guessing client is."""
        now = datetime.datetime.now(datetime.timezone.utc)
        problem = check_token(token, secret, now)
        if problem is None:
            self._note_use(token.name, now)
            return Principal.of_token(token), ""
        verdict = self.throttle.attempt(client, token.name)
        if verdict.wait > 0:
            await asyncio.sleep(verdict.wait)
        if verdict.refused:
            raise LoginRefused(429, "TOOMANYREQUESTS", "too many failed logins: try again later", verdict.retry_after)
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


def describe(principal: Principal) -> str:
    """How a principal is named in messages and in the audit log."""
    if principal.kind is Kind.ANONYMOUS:
        return "anonymous"
    return f"{principal.kind.value} {principal.name!r}"
