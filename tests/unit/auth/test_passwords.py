import asyncio
import base64
from pathlib import Path

import bcrypt
import pytest

from helpers import TEST_COST, make_user, write_users
from mreg_proxy.auth.passwords import Authenticator, parse_basic
from mreg_proxy.auth.users import User, UserStore


def _hdr(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "header,expected",
    [
        (_hdr(b"bob:pw"), ("bob", "pw")),
        (_hdr(b"bob:p:w:"), ("bob", "p:w:")),  # split on the first colon only
        (_hdr(b"bob:"), ("bob", "")),
        ("basic " + base64.b64encode(b"bob:pw").decode(), ("bob", "pw")),
        (_hdr("j\u00f6rg:p\u00e4ss".encode()), ("j\u00f6rg", "p\u00e4ss")),
        (None, None),
        ("", None),
        ("Bearer abc", None),
        ("Basic", None),
        ("Basic !!!notbase64", None),
        (_hdr(b"no-colon"), None),
        (_hdr(b":pw"), None),
        (_hdr(b"bob:\xff\xfe"), None),  # not UTF-8
    ],
)
def test_parse_basic(header: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_basic(header) == expected


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def users_path(tmp_path: Path) -> Path:
    path = tmp_path / "users.yml"
    write_users(path, make_user("bob", "s3cret"), make_user("amy", "pw", "admin"))
    return path


def _auth(path: Path, ttl: float = 60, clock: Clock | None = None) -> Authenticator:
    return Authenticator(UserStore(path), ttl=ttl, dummy_cost=TEST_COST, clock=clock or Clock())


async def test_right_password(users_path: Path) -> None:
    user = await _auth(users_path).authenticate("bob", "s3cret")
    assert user is not None and (user.name, user.role) == ("bob", "reader")


@pytest.mark.parametrize("name,password", [("bob", "wrong"), ("nobody", "s3cret"), ("bob", ""), ("BOB", "s3cret")])
async def test_wrong_credentials(users_path: Path, name: str, password: str) -> None:
    assert await _auth(users_path).authenticate(name, password) is None


async def test_password_over_72_bytes_is_refused(users_path: Path) -> None:
    long = "x" * 73
    path = users_path.parent / "long.yml"
    # bcrypt would only see the first 72 bytes; the store never accepts the longer one
    write_users(path, make_user("bob", "x" * 72))
    assert await _auth(path).authenticate("bob", long) is None


async def test_unknown_user_runs_bcrypt_too(users_path: Path) -> None:
    auth = _auth(users_path)
    await auth.authenticate("nobody", "pw")
    assert auth.bcrypt_checks == 1


async def test_cache_spares_bcrypt(users_path: Path) -> None:
    auth = _auth(users_path)
    for _ in range(5):
        assert await auth.authenticate("bob", "s3cret")
    assert (auth.bcrypt_checks, auth.cache_hits) == (1, 4)


async def test_concurrent_checks_share_one_bcrypt(users_path: Path) -> None:
    auth = _auth(users_path)
    results = await asyncio.gather(*(auth.authenticate("bob", "s3cret") for _ in range(8)))
    assert all(results) and auth.bcrypt_checks == 1


async def test_wrong_password_is_never_cached(users_path: Path) -> None:
    auth = _auth(users_path)
    await auth.authenticate("bob", "s3cret")
    assert await auth.authenticate("bob", "other") is None


async def test_cache_expires(users_path: Path) -> None:
    clock = Clock()
    auth = _auth(users_path, ttl=10, clock=clock)
    await auth.authenticate("bob", "s3cret")
    clock.now += 11
    await auth.authenticate("bob", "s3cret")
    assert auth.bcrypt_checks == 2


async def test_ttl_zero_disables_cache(users_path: Path) -> None:
    auth = _auth(users_path, ttl=0)
    await auth.authenticate("bob", "s3cret")
    await auth.authenticate("bob", "s3cret")
    assert auth.bcrypt_checks == 2


async def test_cache_forgets_changed_password(users_path: Path) -> None:
    auth = _auth(users_path)
    assert await auth.authenticate("bob", "s3cret")
    write_users(users_path, make_user("bob", "new"), make_user("amy", "pw", "admin"))
    assert await auth.authenticate("bob", "s3cret") is None
    assert await auth.authenticate("bob", "new")


async def test_cache_forgets_removed_user(users_path: Path) -> None:
    auth = _auth(users_path)
    assert await auth.authenticate("bob", "s3cret")
    write_users(users_path, make_user("amy", "pw", "admin"))
    assert await auth.authenticate("bob", "s3cret") is None


async def test_role_change_applies_to_cached_credentials(users_path: Path) -> None:
    auth = _auth(users_path)
    bob = await auth.authenticate("bob", "s3cret")
    assert bob is not None
    write_users(users_path, make_user("amy", "pw", "admin"))
    write_users(users_path, type(bob)("bob", "admin", bob.password_hash))
    promoted = await auth.authenticate("bob", "s3cret")
    assert promoted is not None and promoted.role == "admin" and auth.bcrypt_checks == 1


async def test_cache_is_bounded(users_path: Path) -> None:
    auth = Authenticator(UserStore(users_path), ttl=60, dummy_cost=TEST_COST, max_entries=2, clock=Clock())
    for password in ("a", "b", "c"):
        await auth.authenticate("bob", password)  # wrong: not cached
    await auth.authenticate("bob", "s3cret")
    await auth.authenticate("amy", "pw")
    path = users_path
    write_users(path, make_user("bob", "s3cret"), make_user("amy", "pw", "admin"), make_user("cy", "x"))
    # new hashes for everyone: all entries stale; the bound still holds after more inserts
    for name, pw in (("bob", "s3cret"), ("amy", "pw"), ("cy", "x")):
        assert await auth.authenticate(name, pw)
    assert len(auth._cache) == 2


def test_dummy_hash_has_requested_cost(users_path: Path) -> None:
    auth = _auth(users_path)
    assert auth._dummy_hash.startswith(b"$2b$04$")
    assert bcrypt.checkpw(b"x", auth._dummy_hash) is False


async def test_unknown_user_is_checked_against_a_stored_hash(tmp_path: Path) -> None:
    """Hashes made at another cost than the dummy's (htpasswd -B, an old setting) must not let
    the time of a failure tell whether the name exists."""
    path = tmp_path / "users.yml"
    cheap = bcrypt.hashpw(b"pw", bcrypt.gensalt(5)).decode()
    write_users(path, User("bob", "reader", cheap))
    auth = Authenticator(UserStore(path), ttl=60, dummy_cost=12, clock=Clock())
    assert auth._hash_to_check(None, auth._store.current()) == cheap.encode()
    assert await auth.authenticate("nobody", "pw") is None  # the right password of another user
