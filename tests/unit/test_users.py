import logging
import os
from pathlib import Path

import pytest

from helpers import make_user, write_users
from mreg_proxy.users import UserStore, UsersFileError, dump_users, parse_users, read_users_file

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
        (f"users:\n  bob: {{role: reader, password_hash: '{HASH}', pasword: x}}\n", "unknown keys"),
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
