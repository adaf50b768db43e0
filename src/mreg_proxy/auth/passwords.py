"""Authentication: HTTP Basic parsing, bcrypt verification, the verified-credential cache."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import logging
import os
import time
from typing import Callable, Mapping

import bcrypt

from .checkpool import CheckPool, PoolFull
from .throttle import Throttle
from .users import User, UserStore, UsersFileError, replace_password_hash

log = logging.getLogger("mreg.auth")

BCRYPT_MAX_BYTES = 72
GONE_POLL = 0.2  # seconds between looks at a waiting client's connection
DEFAULT_QUEUE = 32  # password checks waiting at most (Settings.bcrypt_queue)
REHASH_PRIORITY = 1 << 30  # behind every login in the pool's queue, and the first one displaced


def hash_cost(password_hash: str | bytes) -> int:
    """The cost of a bcrypt hash ``$2b$12$...`` (validated by the users file loader)."""
    return int(password_hash[4:6])


def padding_costs(own: int, costliest: int) -> range:
    """The bcrypt costs to pay after a failed check of a cost-``own`` hash so that it takes as
    long as one of cost ``costliest``: a cost-k round is 2**k units of work, and
    2**own + (2**own + ... + 2**(costliest-1)) == 2**costliest. One more full check at the top
    cost instead would overshoot by 2**own (25 % for cost 10 against 12)."""
    return range(own, costliest)


class Bcrypt:
    """The bcrypt work of password checks, run in the CheckPool's threads."""

    def check(self, secret: bytes, stored: bytes, pad_to: int) -> bool:
        """Whether ``secret`` matches ``stored``. A match returns at once; a mismatch first pays
        the difference up to a cost-``pad_to`` check, so that a wrong password takes as long for
        a user with a cheap hash as for the costliest one and for an unknown name."""
        if bcrypt.checkpw(secret, stored):
            return True
        for cost in padding_costs(hash_cost(stored), pad_to):
            self.pad(secret, cost)
        return False

    def pad(self, secret: bytes, cost: int) -> None:
        """One round of cost ``cost``, its result thrown away (a check is a hash with the
        stored salt: the same work)."""
        bcrypt.hashpw(secret, bcrypt.gensalt(cost))

    def make(self, secret: bytes, cost: int) -> str:
        return bcrypt.hashpw(secret, bcrypt.gensalt(cost)).decode()


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


class LoginRefused(Exception):
    """The password was not checked: the client must come back later (429 or 503, Retry-After)."""

    def __init__(self, status: int, code: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class _Check:
    """One bcrypt check, shared by every request presenting the same credentials meanwhile."""

    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Future[bool]) -> None:
        self.task = task
        self.waiters = 0


class Authenticator:
    """``await authenticate(user, password, client) -> User | None``.

    bcrypt runs in a CheckPool (own threads, bounded queue), never on the event loop. Unknown
    users are checked against the costliest hash of the store (or a dummy of the configured cost
    when it is empty), and a wrong password for a user whose hash is cheaper is padded up to that
    cost (Bcrypt.check), so a failure takes as long whoever the name is; a right password is
    answered as soon as its own hash matches. A right password whose hash is cheaper than
    ``upgrade_cost`` is re-hashed at that cost in the background and written back to the users
    file (replace_password_hash); where the file cannot be written, this is logged once and not
    tried again. A verified
    (user, password) is remembered for ``ttl`` seconds under a keyed hash (the password itself is
    never stored); the memory is tied to the user's current password hash, so a changed or removed
    entry is re-checked at once. Remembered credentials are never throttled. Other checks go
    through the Throttle (when one is given), keyed by the client's address. Concurrent checks of
    the same credentials share one bcrypt call (a push opens several connections at once); a check
    nobody waits for any more is dropped before it runs.
    """

    def __init__(
        self,
        store: UserStore,
        *,
        ttl: float,
        dummy_cost: int,
        max_entries: int = 4096,
        pool: CheckPool | None = None,
        throttle: Throttle | None = None,
        clock: Callable[[], float] = time.monotonic,
        upgrade_cost: int | None = None,
        hasher: Bcrypt | None = None,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._key = os.urandom(32)
        self._dummy_hash = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(dummy_cost))
        self._cache: dict[bytes, tuple[str, float]] = {}  # digest -> (password_hash, expiry)
        self._inflight: dict[tuple[bytes, bytes], _Check] = {}
        self._pool = pool if pool is not None else CheckPool(workers=1, max_queued=DEFAULT_QUEUE)
        self._throttle = throttle
        self._costliest: tuple[Mapping[str, User], bytes] | None = None
        self._closing: asyncio.Event | None = None
        self._hasher = hasher if hasher is not None else Bcrypt()
        self._upgrade_cost = upgrade_cost
        self._rehashing: dict[str, asyncio.Task[None]] = {}  # user name -> its re-hash
        self._cannot_write: str | None = None  # why re-hashed passwords cannot be stored
        self.bcrypt_checks = 0
        self.cache_hits = 0
        self.throttled = 0  # refused with 429
        self.busy = 0  # refused with 503
        self.rehashed = 0  # password hashes upgraded to upgrade_cost

    async def authenticate(
        self,
        name: str,
        password: str,
        client: str = "unknown",
        connected: Callable[[], bool] = lambda: True,
        users: Mapping[str, User] | None = None,
    ) -> User | None:
        """``client`` is the address the throttle counts; ``connected`` tells whether the client
        still waits (aiohttp 3 does not cancel a handler whose client hung up). ``users`` is the
        store's copy the caller already holds (read from the store when not given)."""
        if users is None:
            users = await self._store.fresh()
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
        costliest = self._costliest_hash(users)
        stored = user.password_hash.encode() if user is not None else costliest
        ok = await self._verify(digest, secret, stored, hash_cost(costliest), client, name, connected)
        if not ok or user is None:
            return None
        if self._throttle is not None:
            self._throttle.succeeded(client, name)
        if self._ttl > 0:
            self._remember(digest, user.password_hash)
        self._upgrade(user, secret, digest)
        return user

    def close(self) -> None:
        """Stop: checks still queued or held are refused (503) at once."""
        self._pool.close()
        if self._closing is not None:
            self._closing.set()
        for task in self._rehashing.values():
            task.cancel()  # a write already under way finishes in its thread: it is atomic

    async def rehashes_done(self) -> None:
        """Wait for the re-hashes under way (for callers that read the users file next)."""
        await asyncio.gather(*self._rehashing.values(), return_exceptions=True)

    def _upgrade(self, user: User, secret: bytes, digest: bytes) -> None:
        """Start re-hashing ``user``'s password when its hash is cheaper than ``upgrade_cost``.
        The login does not wait for it."""
        if self._upgrade_cost is None or hash_cost(user.password_hash) >= self._upgrade_cost:
            return
        if self._cannot_write is not None or user.name in self._rehashing:
            return
        task = asyncio.ensure_future(self._rehash(user, secret, digest, self._upgrade_cost))
        self._rehashing[user.name] = task
        task.add_done_callback(lambda _t: self._rehashing.pop(user.name, None))

    async def _rehash(self, user: User, secret: bytes, digest: bytes, cost: int) -> None:
        try:
            # in the pool, behind every login: a full queue displaces it, the next login retries
            future = self._pool.submit(REHASH_PRIORITY, functools.partial(self._hasher.make, secret, cost))
            new_hash: str = await asyncio.wrap_future(future)
        except PoolFull:
            return
        path = self._store.path
        try:
            written = await asyncio.to_thread(replace_password_hash, path, user.name, user.password_hash, new_hash)
        except OSError as exc:
            self._cannot_write = exc.strerror or str(exc)
            log.warning("cannot store re-hashed passwords in %s (%s): hashes cheaper than cost %d stay as "
                        "they are until a restart (logged once)", path, self._cannot_write, cost)
            return
        except UsersFileError:
            return  # broken meanwhile: the store reports it, and the next login tries again
        if not written:
            return  # the entry changed since it was read: that edit wins
        self.rehashed += 1
        log.info("re-hashed the password of %s at cost %d (was %d)", user.name, cost, hash_cost(user.password_hash))
        cached = self._cache.get(digest)
        if cached is not None and cached[0] == user.password_hash:
            self._cache[digest] = (new_hash, cached[1])  # the same password: stays verified

    def _costliest_hash(self, users: Mapping[str, User]) -> bytes:
        """The costliest hash of the store, the dummy when it is empty: what an unknown name is
        checked against (the result is thrown away) and what a failure is padded up to."""
        if self._costliest is None or self._costliest[0] is not users:
            costliest = max(users.values(), key=lambda u: hash_cost(u.password_hash), default=None)
            self._costliest = (users, costliest.password_hash.encode() if costliest else self._dummy_hash)
        return self._costliest[1]

    async def _verify(
        self, digest: bytes, secret: bytes, stored: bytes, pad_to: int, client: str, name: str,
        connected: Callable[[], bool],
    ) -> bool:
        key = (digest, stored)
        check = self._inflight.get(key)
        if check is None:
            check = _Check(asyncio.ensure_future(self._check(secret, stored, pad_to, client, name)))
            self._inflight[key] = check
            check.task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        check.waiters += 1
        try:
            # not cancelled by one client hanging up: others may be waiting on the same check ...
            while not check.task.done():
                await asyncio.wait({check.task}, timeout=GONE_POLL)
                if not connected():
                    return False  # the answer goes nowhere
            return check.task.result()
        finally:
            check.waiters -= 1
            if check.waiters == 0 and not check.task.done():
                check.task.cancel()  # ... but once nobody waits, a queued check is not run

    async def _check(self, secret: bytes, stored: bytes, pad_to: int, client: str, name: str) -> bool:
        priority = 0
        if self._throttle is not None:
            priority = self._throttle.priority(client)
            verdict = self._throttle.attempt(client, name)
            if verdict.wait > 0:
                await self._hold(verdict.wait)
            if verdict.refused:
                self.throttled += 1
                raise LoginRefused(429, "TOOMANYREQUESTS", "too many failed logins: try again later",
                                   verdict.retry_after)
        try:
            future = self._pool.submit(priority, functools.partial(self._hasher.check, secret, stored, pad_to))
            ok: bool = await asyncio.wrap_future(future)
        except PoolFull:  # refused at once, displaced from the queue, or the proxy is stopping
            self.busy += 1
            raise LoginRefused(503, "UNAVAILABLE", "too many logins at once: try again shortly", 1) from None
        self.bcrypt_checks += 1
        return ok

    async def _hold(self, seconds: float) -> None:
        """Sleep ``seconds``, cut short (and refused) when the proxy stops."""
        if self._closing is None:
            self._closing = asyncio.Event()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)
        if self._closing.is_set():
            raise LoginRefused(503, "UNAVAILABLE", "the proxy is stopping", 1)

    def _remember(self, digest: bytes, password_hash: str) -> None:
        now = self._clock()
        if len(self._cache) >= self._max_entries:
            for stale in [k for k, (_h, expiry) in self._cache.items() if expiry <= now]:
                del self._cache[stale]
            while len(self._cache) >= self._max_entries:
                del self._cache[next(iter(self._cache))]  # oldest first: dicts keep insertion order
        self._cache[digest] = (password_hash, now + self._ttl)
