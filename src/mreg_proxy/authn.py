"""Authentication: HTTP Basic parsing, bcrypt verification, the verified-credential cache."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import time
from typing import Callable, Mapping

import bcrypt

from .users import User, UserStore

BCRYPT_MAX_BYTES = 72


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``Basic base64(user:password)`` -> (user, password); None for anything malformed.

    Splits on the first ``:`` only, so passwords may contain colons.
    """
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = text.partition(":")
    if not sep or not user:
        return None
    return user, password


class Authenticator:
    """``await authenticate(user, password) -> User | None``.

    bcrypt runs in a worker thread. Unknown users are checked against a hash of the store (or a
    dummy of the configured cost when it is empty), so they take as long as known ones. A verified
    (user, password) is remembered for ``ttl`` seconds under a keyed hash (the password itself is
    never stored); the memory is tied to the user's current password hash, so a changed or removed
    entry is re-checked at once. Concurrent checks of the same credentials share one bcrypt call:
    a push opens several connections at once.
    """

    def __init__(
        self,
        store: UserStore,
        *,
        ttl: float,
        dummy_cost: int,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._key = os.urandom(32)
        self._dummy_hash = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(dummy_cost))
        self._cache: dict[bytes, tuple[str, float]] = {}  # digest -> (password_hash, expiry)
        self._inflight: dict[tuple[bytes, bytes], asyncio.Future[bool]] = {}
        self.bcrypt_checks = 0
        self.cache_hits = 0

    async def authenticate(self, name: str, password: str) -> User | None:
        users = self._store.current()
        user = users.get(name)
        digest = hmac.new(self._key, f"{name}\0{password}".encode(), hashlib.sha256).digest()
        if user is not None and self._ttl > 0:
            cached = self._cache.get(digest)
            if cached is not None and cached[0] == user.password_hash and cached[1] > self._clock():
                self.cache_hits += 1
                return user
        secret = password.encode("utf-8")
        if len(secret) > BCRYPT_MAX_BYTES:
            return None  # bcrypt cannot represent it; no stored hash can match
        stored = self._hash_to_check(user, users)
        ok = await self._verify(digest, secret, stored)
        if not ok or user is None:
            return None
        if self._ttl > 0:
            self._remember(digest, user.password_hash)
        return user

    def _hash_to_check(self, user: User | None, users: Mapping[str, User]) -> bytes:
        """The user's hash; for an unknown name, a hash from the store itself (the result is
        thrown away), so that it costs what a known name costs whatever cost the store's hashes
        were made with; the dummy only when the store is empty."""
        if user is not None:
            return user.password_hash.encode()
        for other in users.values():
            return other.password_hash.encode()
        return self._dummy_hash

    async def _verify(self, digest: bytes, secret: bytes, stored: bytes) -> bool:
        key = (digest, stored)
        future = self._inflight.get(key)
        if future is None:
            self.bcrypt_checks += 1
            future = asyncio.ensure_future(asyncio.to_thread(bcrypt.checkpw, secret, stored))
            self._inflight[key] = future
            future.add_done_callback(lambda _f: self._inflight.pop(key, None))
        # shield: a client that hangs up must not cancel a check other requests are waiting on
        return await asyncio.shield(future)

    def _remember(self, digest: bytes, password_hash: str) -> None:
        now = self._clock()
        if len(self._cache) >= self._max_entries:
            for stale in [k for k, (_h, expiry) in self._cache.items() if expiry <= now]:
                del self._cache[stale]
            while len(self._cache) >= self._max_entries:
                del self._cache[next(iter(self._cache))]  # oldest first: dicts keep insertion order
        self._cache[digest] = (password_hash, now + self._ttl)
