"""Logging in and out of the web page, who is viewing it, and the forms a stranger can send.

A login goes through exactly what an API request with Basic credentials goes through
(``Access.identify``: the same users file, throttle, password-check pool, dummy hash for unknown
users and ``login_failed`` audit events); only users may log in, CI tokens may not (docs/ui.md).
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from aiohttp import web

from ..auth.decide import Kind, Principal
from ..auth.passwords import LoginRefused
from ..keys import ACCESS, PRINCIPAL, SETTINGS, USER, USERS
from ..transport.addresses import client_address
from ..transport.admission import admit
from .render import WebState, problem, render, see_other
from .sessions import SESSION_SECONDS, Session, fingerprint

COOKIE = "mreg_session"
LOGIN_COOKIE = "mreg_login"  # the pre-login nonce the login form's CSRF token is bound to
LOGIN_COOKIE_SECONDS = 3600
FORM_BYTES = 4096  # a form body: a few short fields
FORM_FIELDS = 8
FORM_SECONDS = 10.0  # to send those bytes once the headers are in
MAX_USER = 128
_NONCE = re.compile(r"[A-Za-z0-9_-]{32}")  # what token_urlsafe(24) makes
MAX_PASSWORD = 1024  # bcrypt looks at 72 bytes; the checker refuses longer ones itself


@dataclass(frozen=True, slots=True)
class Viewer:
    principal: Principal
    session: Session
    csrf: str

    @property
    def name(self) -> str:
        return self.principal.name


class FormRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_form(request: web.Request) -> dict[str, str]:
    """The fields of a small urlencoded form; FormRefused for anything else (the body is read
    only once it is announced small enough, within FORM_SECONDS)."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise FormRefused(415, "expected a form (application/x-www-form-urlencoded)")
    length = request.content_length
    if length is None:
        raise FormRefused(411, "a form must announce its length")
    if length > FORM_BYTES:
        raise FormRefused(413, f"a form of at most {FORM_BYTES} bytes")
    await admit(request)
    try:
        body = await asyncio.wait_for(request.content.readexactly(length), FORM_SECONDS)
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=FORM_FIELDS)
    except (asyncio.IncompleteReadError, asyncio.TimeoutError):
        raise FormRefused(400, "the form did not arrive whole") from None
    except ValueError:  # not UTF-8, or too many fields
        raise FormRefused(400, "the form could not be read") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise FormRefused(400, "a field was sent twice")
    return fields


def cookie_options(request: web.Request, max_age: int) -> dict[str, object]:
    return {"max_age": max_age, "path": "/", "httponly": True, "samesite": "Strict", "secure": request.secure}


async def current_viewer(request: web.Request, state: WebState) -> Viewer | None:
    """The logged-in user, as the users file has them now; None without a valid session (also
    when the user was removed or their password changed since the login)."""
    session = state.signer.decode(request.cookies.get(COOKIE), time.time())
    if session is None:
        return None
    user = (await request.app[USERS].fresh_store()).users.get(session.user)
    if user is None or fingerprint(user.password_hash) != session.fingerprint:
        return None
    principal = Principal.of_user(user)
    request[PRINCIPAL] = principal
    request[USER] = principal.name
    return Viewer(principal, session, state.signer.csrf(session.nonce))


def login_page(request: web.Request, state: WebState, status: int = 200, message: str = "", user: str = "") -> web.Response:
    """The login form, with a fresh pre-login nonce whose CSRF token the form carries."""
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if _NONCE.fullmatch(nonce) is None:
        nonce = secrets.token_urlsafe(24)
    response = render(request, state, "login.html", status, viewer=None, csrf=state.signer.csrf(nonce),
                      message=message, user=user[:MAX_USER])
    response.set_cookie(LOGIN_COOKIE, nonce, **cookie_options(request, LOGIN_COOKIE_SECONDS))
    return response


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def handle_login(request: web.Request, state: WebState) -> web.Response:
    try:
        form = await read_form(request)
    except FormRefused as refusal:
        return problem(request, state, refusal.status, "Form refused", str(refusal))
    if not state.signer.csrf_ok(request.cookies.get(LOGIN_COOKIE, ""), form.get("csrf")):
        return login_page(request, state, 403, "The login form had expired; please try again.")
    user, password = form.get("username", ""), form.get("password", "")
    if not user or not password or len(user) > MAX_USER or len(password) > MAX_PASSWORD or ":" in user:
        return login_page(request, state, 401, "Wrong user name or password.", user)
    settings = request.app[SETTINGS]
    client = client_address(request.remote, request.headers.getall("X-Forwarded-For", []), settings.trusted_proxies)
    request[USER] = f"!{user}"  # a failed attempt, shown as such in the access log
    try:
        principal = await request.app[ACCESS].identify(
            _basic(user, password), client, lambda: request.transport is not None and not request.transport.is_closing()
        )
    except LoginRefused as refusal:
        response = login_page(request, state, refusal.status, f"{refusal} (in {refusal.retry_after} s).", user)
        response.headers["Retry-After"] = str(refusal.retry_after)
        return response
    if principal is None:
        return login_page(request, state, 401, "Wrong user name or password.", user)
    if principal.kind is not Kind.USER:
        return login_page(request, state, 403, "CI tokens cannot log in to the web page; log in as a user.")
    # a right password of a cheap hash starts a re-hash that rewrites the hash the session is bound
    # to: wait for it (one bcrypt, in the check pool) so the session carries the hash that stays
    await request.app[ACCESS].authenticator.rehashes_done()
    stored = (await request.app[USERS].fresh_store()).users.get(principal.name)
    if stored is None:  # removed between the check and now
        return login_page(request, state, 401, "Wrong user name or password.", user)
    request[USER] = principal.name
    request.app[ACCESS].audit.record("ui_login", user=principal.name, kind=principal.kind.value, address=client)
    session = state.signer.new_session(stored.name, stored.password_hash, time.time())
    response = see_other("/")
    response.set_cookie(COOKIE, state.signer.encode(session), **cookie_options(request, SESSION_SECONDS))
    response.del_cookie(LOGIN_COOKIE, path="/")
    return response


async def handle_logout(request: web.Request, state: WebState) -> web.Response:
    viewer = await current_viewer(request, state)
    if viewer is None:
        return see_other("/")
    try:
        form = await read_form(request)
    except FormRefused as refusal:
        return problem(request, state, refusal.status, "Form refused", str(refusal))
    if not state.signer.csrf_ok(viewer.session.nonce, form.get("csrf")):
        return problem(request, state, 403, "Form refused", "This form is not from this session.")
    response = see_other("/")
    response.del_cookie(COOKIE, path="/")
    return response
