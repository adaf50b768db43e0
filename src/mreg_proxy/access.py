"""Who is asking: the request's credentials become a Principal (user, CI token or anonymous).

Kept out of app.py so that the request path stays readable: ``identify`` is the whole of
authentication, ``refuse`` the whole of answering a decision that is not ALLOW; both write the
audit events that belong to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from aiohttp import web

from . import errors
from .audit import AuditLog
from .authn import Authenticator, parse_basic
from .authz import Decision, Kind, Principal
from .routes import Route
from .tokenauth import TokenUsage, check_token
from .users import UserStore


def sends_no_credentials(header: str | None) -> bool:
    """No Authorization header, or Basic with an empty user and password: what podman and skopeo
    send, once challenged, when they have no credentials for the registry."""
    if header is None:
        return True
    scheme, _, token = header.strip().partition(" ")
    return scheme.lower() == "basic" and token.strip() in ("", "Og==")  # base64(":")


class Access:
    def __init__(self, store: UserStore, authenticator: Authenticator, usage: TokenUsage, audit: AuditLog) -> None:
        self.store = store
        self.authenticator = authenticator
        self.usage = usage
        self.audit = audit
        self._flushes: set[asyncio.Task[None]] = set()

    async def identify(self, request: web.Request) -> Principal | None:
        """The principal behind the request; None when it sent credentials that do not log in."""
        header = request.headers.get("Authorization")
        snapshot = self.store.snapshot()
        if sends_no_credentials(header):
            return Principal.anonymous(snapshot.anonymous)
        credentials = parse_basic(header)
        if credentials is None:
            self.audit.record("login_failed", user=None, address=request.remote, reason="malformed Authorization")
            return None
        name, secret = credentials
        token = snapshot.tokens.get(name)
        if token is not None:
            now = datetime.datetime.now(datetime.timezone.utc)
            problem = check_token(token, secret, now)
            if problem is None:
                self._note_use(name, now)
                return Principal.of_token(token)
        else:
            user = await self.authenticator.authenticate(name, secret)
            if user is not None:
                return Principal.of_user(user)
            problem = "wrong user name or password"
        self.audit.record("login_failed", user=name, address=request.remote, reason=problem)
        return None

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
