"""The web page's sessions: a signed cookie, its key on the auth volume, and CSRF tokens.

A session is a cookie the server signs (HMAC-SHA256) and keeps nothing about: any replica with
the same key file accepts it, and a restart logs nobody out. It names the user, a fingerprint of
the user's password hash, when it expires and a random nonce. Each request rebuilds the
principal from the users file as it is now, so removing a user, changing their password or role
takes effect at the next click, as it does for the API.

CSRF tokens are derived from the session's nonce with the same key (no server state); the login
form, before any session, is bound the same way to a nonce in a short-lived pre-login cookie.
Pure but for the key file: no aiohttp.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError

KEY_BYTES = 32
SESSION_SECONDS = 8 * 3600  # one working day, then a new login
MAX_COOKIE = 1024  # a cookie value longer than this is not ours: refused before any parsing


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``; created (random, mode 0600) when missing. Two replicas starting at
    once both end with the same key: the file is linked into place only if it does not exist
    yet, so the first one wins and the other reads it."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot create the web page's session key {path}: {exc.strerror or exc} "
                          "(make the folder writable or put one there: head -c 32 /dev/urandom)") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(secrets.token_bytes(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{path} holds {len(key)} bytes, not the {KEY_BYTES} of a session key: "
                          "remove it and a new one is made (everybody logs in again)")
    return key


def fingerprint(password_hash: str) -> str:
    """Changes whenever the password does: a new password ends the sessions of the old one."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    fingerprint: str
    expires: int  # seconds since the epoch
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, purpose: str, data: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}|{data}".encode(), hashlib.sha256).digest())

    def new_session(self, user: str, password_hash: str, now: float) -> Session:
        return Session(user, fingerprint(password_hash), int(now) + SESSION_SECONDS, secrets.token_urlsafe(16))

    def encode(self, session: Session) -> str:
        body = _b64(json.dumps([session.user, session.fingerprint, session.expires, session.nonce]).encode())
        return f"{body}.{self._mac('session', body)}"

    def decode(self, value: str | None, now: float) -> Session | None:
        """The session a cookie holds; None when it is absent, forged, malformed or expired."""
        if not value or len(value) > MAX_COOKIE:
            return None
        body, _, mac = value.partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac("session", body).encode()):
            return None
        try:
            user, print_, expires, nonce = json.loads(_unb64(body))
        except (ValueError, TypeError):
            return None
        if not all(isinstance(v, str) for v in (user, print_, nonce)) or not isinstance(expires, int):
            return None
        if expires <= now:
            return None
        return Session(user, print_, expires, nonce)

    def csrf(self, nonce: str) -> str:
        """The token every form of the session (or of a pre-login ``nonce``) carries."""
        return self._mac("csrf", nonce)

    def csrf_ok(self, nonce: str, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf(nonce).encode())
