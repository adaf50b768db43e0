import asyncio
import base64
import logging
import threading
from pathlib import Path

import bcrypt
import pytest

from helpers import TEST_COST, make_user, write_users
from mreg_proxy.auth.passwords import Authenticator, Bcrypt, hash_cost, padding_costs, parse_basic
from mreg_proxy.auth.users import User, UserStore, read_users_file
from mreg_proxy.files import exclusive_lock
from secretmount import write_secret


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
    assert auth._costliest_hash(auth._store.current()) == cheap.encode()
    assert await auth.authenticate("nobody", "pw") is None  # the right password of another user


# -- a wrong password costs the same for every name ------------------------------------------------


class RecordingBcrypt(Bcrypt):
    """The real bcrypt work, with a record of each piece of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def check(self, secret: bytes, stored: bytes, pad_to: int) -> bool:
        self.calls.append(("check", hash_cost(stored)))
        return super().check(secret, stored, pad_to)

    def pad(self, secret: bytes, cost: int) -> None:
        self.calls.append(("pad", cost))
        super().pad(secret, cost)

    def make(self, secret: bytes, cost: int) -> str:
        self.calls.append(("make", cost))
        return super().make(secret, cost)


def _user_at(name: str, password: str, cost: int, role: str = "reader") -> User:
    return User(name, role, bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode())


@pytest.mark.parametrize(
    "own,costliest,costs,work",
    [
        (10, 12, [10, 11], 2**12),  # 2**10 checked + 2**10 + 2**11 padded
        (12, 12, [], 2**12),
        (4, 7, [4, 5, 6], 2**7),
        (13, 12, [], 2**13),  # cannot happen (the costliest is the maximum): no padding
    ],
)
def test_padding_makes_up_the_difference(own: int, costliest: int, costs: list[int], work: int) -> None:
    assert list(padding_costs(own, costliest)) == costs
    assert 2**own + sum(2**cost for cost in costs) == work


@pytest.fixture
def mixed_path(tmp_path: Path) -> Path:
    """carol's hash is cheaper than dave's, the costliest of the store."""
    path = tmp_path / "users.yml"
    write_users(path, _user_at("carol", "carol-pw", 4), _user_at("dave", "dave-pw", 6))
    return path


def _recording(path: Path, ttl: float = 60, upgrade_cost: int | None = None) -> tuple[Authenticator, RecordingBcrypt]:
    hasher = RecordingBcrypt()
    auth = Authenticator(UserStore(path), ttl=ttl, dummy_cost=TEST_COST, clock=Clock(), hasher=hasher,
                         upgrade_cost=upgrade_cost)
    return auth, hasher


async def test_wrong_password_of_a_cheap_hash_pays_up_to_the_costliest(mixed_path: Path) -> None:
    auth, hasher = _recording(mixed_path)
    assert await auth.authenticate("carol", "wrong") is None
    assert hasher.calls == [("check", 4), ("pad", 4), ("pad", 5)]


async def test_unknown_name_is_checked_at_the_costliest_cost_without_padding(mixed_path: Path) -> None:
    auth, hasher = _recording(mixed_path)
    assert await auth.authenticate("nobody", "wrong") is None
    assert hasher.calls == [("check", 6)]


async def test_wrong_password_of_the_costliest_hash_is_not_padded(mixed_path: Path) -> None:
    auth, hasher = _recording(mixed_path)
    assert await auth.authenticate("dave", "wrong") is None
    assert hasher.calls == [("check", 6)]


async def test_right_password_of_a_cheap_hash_is_not_padded(mixed_path: Path) -> None:
    auth, hasher = _recording(mixed_path)
    assert await auth.authenticate("carol", "carol-pw") is not None
    assert hasher.calls == [("check", 4)]


async def test_empty_store_pads_nothing(tmp_path: Path) -> None:
    auth, hasher = _recording(tmp_path / "missing.yml")
    assert await auth.authenticate("nobody", "pw") is None
    assert hasher.calls == [("check", TEST_COST)]


def test_bcrypt_check_answers_right_and_wrong() -> None:
    stored = bcrypt.hashpw(b"pw", bcrypt.gensalt(4))
    assert Bcrypt().check(b"pw", stored, 6) is True
    assert Bcrypt().check(b"other", stored, 6) is False


# -- a cheap hash is re-hashed at the configured cost on a right password --------------------------


async def test_right_password_of_a_cheap_hash_is_rehashed(mixed_path: Path) -> None:
    auth, hasher = _recording(mixed_path, upgrade_cost=5)
    dave_before = read_users_file(mixed_path)["dave"]
    assert await auth.authenticate("carol", "carol-pw") is not None
    await auth.rehashes_done()
    users = read_users_file(mixed_path)
    assert hash_cost(users["carol"].password_hash) == 5
    assert bcrypt.checkpw(b"carol-pw", users["carol"].password_hash.encode())
    assert users["dave"] == dave_before and auth.rehashed == 1
    assert ("make", 5) in hasher.calls


async def test_hash_at_or_above_the_configured_cost_stays(mixed_path: Path) -> None:
    auth, hasher = _recording(mixed_path, upgrade_cost=4)
    before = mixed_path.read_bytes()
    assert await auth.authenticate("carol", "carol-pw") is not None
    assert await auth.authenticate("dave", "dave-pw") is not None
    await auth.rehashes_done()
    assert mixed_path.read_bytes() == before and not any(call[0] == "make" for call in hasher.calls)


async def test_wrong_password_never_rehashes(mixed_path: Path) -> None:
    auth, _hasher = _recording(mixed_path, upgrade_cost=5)
    before = mixed_path.read_bytes()
    assert await auth.authenticate("carol", "wrong") is None
    await auth.rehashes_done()
    assert mixed_path.read_bytes() == before


async def test_rehash_keeps_the_credentials_cached(mixed_path: Path) -> None:
    auth, _hasher = _recording(mixed_path, upgrade_cost=5)
    assert await auth.authenticate("carol", "carol-pw") is not None
    await auth.rehashes_done()
    assert await auth.authenticate("carol", "carol-pw") is not None  # the store now holds the new hash
    assert (auth.bcrypt_checks, auth.cache_hits) == (1, 1)


async def test_rehash_keeps_an_edit_made_since_the_proxy_read_the_file(mixed_path: Path) -> None:
    auth, _hasher = _recording(mixed_path, upgrade_cost=5)
    seen = await auth._store.fresh()
    users = read_users_file(mixed_path)
    write_users(mixed_path, *users.values(), make_user("erin", "erin-pw"))  # a CLI edit meanwhile
    assert await auth.authenticate("carol", "carol-pw", users=seen) is not None
    await auth.rehashes_done()
    after = read_users_file(mixed_path)
    assert set(after) == {"carol", "dave", "erin"} and hash_cost(after["carol"].password_hash) == 5


async def test_rehash_never_undoes_a_password_change(mixed_path: Path) -> None:
    auth, _hasher = _recording(mixed_path, upgrade_cost=5)
    seen = await auth._store.fresh()
    changed = _user_at("carol", "new-pw", 4)
    write_users(mixed_path, changed, read_users_file(mixed_path)["dave"])
    assert await auth.authenticate("carol", "carol-pw", users=seen) is not None  # the copy it held
    await auth.rehashes_done()
    assert read_users_file(mixed_path)["carol"] == changed and auth.rehashed == 0


async def test_rehash_waits_for_the_users_file_lock(mixed_path: Path) -> None:
    """A CLI holding the lock writes its edit first; the re-hash reads that edit, then adds to it."""
    auth, _hasher = _recording(mixed_path, upgrade_cost=5)
    users = read_users_file(mixed_path)
    locked, release = threading.Event(), threading.Event()

    def cli_edit() -> None:
        with exclusive_lock(mixed_path):
            locked.set()
            release.wait(30)
            write_users(mixed_path, *users.values(), make_user("erin", "erin-pw"))

    cli = threading.Thread(target=cli_edit)
    cli.start()
    try:
        assert locked.wait(30)
        assert await auth.authenticate("carol", "carol-pw") is not None
        await asyncio.sleep(0.3)  # long enough for a re-hash that ignored the lock to write
    finally:
        release.set()
        cli.join(30)
    await auth.rehashes_done()
    after = read_users_file(mixed_path)
    assert "erin" in after and hash_cost(after["carol"].password_hash) == 5


async def test_read_only_secret_mount_logs_once_and_logins_keep_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two replicas read the users file from a Secret: the proxy never replaces the kubelet's
    symlink, says so once, and stops paying for re-hashes it cannot keep."""
    from mreg_proxy.auth.users import dump_users

    write_secret(tmp_path, {"users.yml": dump_users({"carol": _user_at("carol", "carol-pw", 4)}).encode()})
    path = tmp_path / "users.yml"
    before = path.read_bytes()
    hasher = RecordingBcrypt()
    auth = Authenticator(UserStore(path), ttl=0, dummy_cost=TEST_COST, clock=Clock(), hasher=hasher, upgrade_cost=5)
    with caplog.at_level(logging.WARNING, logger="mreg.auth"):
        for _ in range(3):
            assert await auth.authenticate("carol", "carol-pw") is not None
            await auth.rehashes_done()
    assert path.is_symlink() and path.read_bytes() == before
    assert [call for call in hasher.calls if call[0] == "make"] == [("make", 5)]
    assert sum("cannot store re-hashed passwords" in r.getMessage() for r in caplog.records) == 1


async def test_unwritable_folder_logs_once_and_logins_keep_working(
    mixed_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (mixed_path.parent / f".{mixed_path.name}.lock").mkdir()  # the lock cannot be opened
    before = mixed_path.read_bytes()
    auth, hasher = _recording(mixed_path, ttl=0, upgrade_cost=5)
    with caplog.at_level(logging.WARNING, logger="mreg.auth"):
        assert await auth.authenticate("carol", "carol-pw") is not None
        await auth.rehashes_done()
        assert await auth.authenticate("carol", "carol-pw") is not None
        await auth.rehashes_done()
    assert mixed_path.read_bytes() == before and [call for call in hasher.calls if call[0] == "make"] == [("make", 5)]
    assert sum("cannot store re-hashed passwords" in r.getMessage() for r in caplog.records) == 1
