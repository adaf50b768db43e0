import asyncio
import logging
import os
import threading
from pathlib import Path

import pytest

from helpers import make_user, write_users
from mreg_proxy.auth import users as users_module
from mreg_proxy.auth.users import MAX_FILE_BYTES, UserStore, UsersFileError, dump_users, parse_users, read_users_file

HASH = make_user("x", "pw").password_hash


def test_roundtrip() -> None:
    users = {"bob": make_user("bob", "pw"), "amy": make_user("amy", "pw", "admin")}
    assert parse_users(dump_users(users)) == users


@pytest.mark.parametrize("text", ["", "users:\n", "users: {}\n"])
def test_empty_documents_mean_no_users(text: str) -> None:
    assert parse_users(text) == {}


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("users: [\n", "not valid YAML"),
        ("- a\n", "with the key 'users'"),
        ("people: {}\n", "with the key 'users'"),
        ("users: [bob]\n", "must map"),
        ("users:\n  bob: reader\n", "entry must be a mapping"),
        (f"users:\n  bob: {{role: root, password_hash: '{HASH}'}}\n", "role must be"),
        ("users:\n  bob: {role: reader, password_hash: 'plain'}\n", "not a bcrypt hash"),
        ("users:\n  bob: {role: reader, password_hash: '$1$md5$x'}\n", "not a bcrypt hash"),
        (f"users:\n  bob: {{role: reader, password_hash: '{HASH}', pasword: x}}\n", "unknown key"),
        (f"users:\n  'a:b': {{role: reader, password_hash: '{HASH}'}}\n", "':'"),
        (f"users:\n  'a b': {{role: reader, password_hash: '{HASH}'}}\n", "whitespace"),
        (f"users:\n  {'x' * 65}: {{role: reader, password_hash: '{HASH}'}}\n", "longer than 64"),
        (f"users:\n  12: {{role: reader, password_hash: '{HASH}'}}\n", "not a string"),
    ],
)
def test_invalid_documents_are_rejected_whole(text: str, fragment: str) -> None:
    with pytest.raises(UsersFileError) as info:
        parse_users(text)
    assert fragment in str(info.value)


def test_missing_file_is_an_empty_store(tmp_path: Path) -> None:
    assert read_users_file(tmp_path / "absent.yml") == {}


def test_written_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "users.yml"
    write_users(path, make_user("bob", "pw"))
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_store_follows_edits(tmp_path: Path) -> None:
    path = tmp_path / "users.yml"
    store = UserStore(path)
    assert store.current() == {}
    write_users(path, make_user("bob", "pw"))
    assert set(store.current()) == {"bob"}
    write_users(path, make_user("bob", "pw"), make_user("amy", "pw", "admin"))
    assert set(store.current()) == {"bob", "amy"}
    path.unlink()
    assert store.current() == {}


def test_store_keeps_last_good_copy_on_broken_edit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "users.yml"
    write_users(path, make_user("bob", "pw"))
    store = UserStore(path)
    good = store.current()
    path.write_text("users:\n  bob: {role: wizard}\n")
    with caplog.at_level(logging.ERROR, "mreg.users"):
        assert store.current() is good
        assert store.current() is good
    assert [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()] != []
    assert len([r for r in caplog.records if "rejected" in r.getMessage()]) == 1  # logged once, not per request
    write_users(path, make_user("amy", "pw"))
    assert set(store.current()) == {"amy"}


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_aliases_are_refused() -> None:
    """A few hundred bytes of nested aliases would otherwise expand to gigabytes."""
    with pytest.raises(UsersFileError, match="aliases"):
        parse_users(BILLION_LAUGHS)


def test_a_single_alias_is_refused_too() -> None:
    entry = f"{{role: reader, password_hash: '{HASH}'}}"
    with pytest.raises(UsersFileError, match="line 3"):
        parse_users(f"users:\n  bob: &e {entry}\n  amy: *e\n")


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(UsersFileError, match="nested"):
        parse_users("users: " + "[" * 100_000 + "]" * 100_000 + "\n")


def test_oversized_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "users.yml"
    path.write_text("#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(UsersFileError, match="larger than"):
        read_users_file(path)


@pytest.mark.parametrize(
    "text",
    [
        f"users:\n  {'x' * 5000}: {{role: reader, password_hash: '{HASH}'}}\n",
        f"users:\n  bob: {{role: {'r' * 5000}, password_hash: '{HASH}'}}\n",
        f"users:\n  bob: {{role: reader, password_hash: '{HASH}', {'k' * 5000}: 1}}\n",
        f"users:\n  \"a\\nb{'y' * 5000}\": {{role: reader, password_hash: '{HASH}'}}\n",
        "users:\n  bob: {role: [" + "1," * 5000 + "], password_hash: x}\n",
    ],
)
def test_errors_quote_only_a_short_escaped_prefix(text: str) -> None:
    with pytest.raises(UsersFileError) as info:
        parse_users(text)
    message = str(info.value)
    assert len(message) < 200 and "\n" not in message


async def test_fresh_reloads_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "users.yml"
    write_users(path, make_user("bob", "pw"))
    store = UserStore(path)
    loop_thread = threading.get_ident()
    readers: list[int] = []
    real = users_module.parse_store

    def spy(text: str) -> object:
        readers.append(threading.get_ident())
        return real(text)

    monkeypatch.setattr(users_module, "parse_store", spy)
    assert set(await store.fresh()) == {"bob"}
    write_users(path, make_user("bob", "pw"), make_user("amy", "pw"))
    together = await asyncio.gather(*(store.fresh() for _ in range(5)))
    assert all(set(users) == {"bob", "amy"} for users in together)
    assert len(readers) == 2 and loop_thread not in readers  # one read per change, in a thread


async def test_fresh_keeps_the_last_good_copy(tmp_path: Path) -> None:
    path = tmp_path / "users.yml"
    write_users(path, make_user("bob", "pw"))
    store = UserStore(path)
    good = await store.fresh()
    path.write_text(BILLION_LAUGHS)
    assert await store.fresh() is good
    path.unlink()
    assert await store.fresh() == {}


def test_a_fifo_in_place_of_the_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    path = tmp_path / "users.yml"
    os.mkfifo(path)
    with pytest.raises(UsersFileError, match="not a regular file"):
        read_users_file(path)
