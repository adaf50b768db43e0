"""Replicas read users and TLS files from a Kubernetes Secret mounted read-only: the kubelet
updates it by swapping a symlink (tests/secretmount.py), never by writing the files a reader
opens. The watchers must notice that swap as they notice an edit."""

from __future__ import annotations

from pathlib import Path

from helpers import make_user
from mreg_proxy.cli.gen_tls import self_signed
from mreg_proxy.transport.tls import TlsState
from mreg_proxy.auth.users import UserStore, dump_users
from secretmount import write_secret


def _users(*names: str) -> bytes:
    return dump_users({name: make_user(name, "pw") for name in names}).encode()


def test_user_store_follows_a_secret_update(tmp_path: Path) -> None:
    write_secret(tmp_path, {"users.yml": _users("bob")})
    store = UserStore(tmp_path / "users.yml")
    assert set(store.current()) == {"bob"}
    write_secret(tmp_path, {"users.yml": _users("bob", "amy")})
    assert set(store.current()) == {"bob", "amy"}


def test_user_store_follows_a_swap_to_an_identical_size_file(tmp_path: Path) -> None:
    """Same length, same second: only the inode behind the symlink tells the versions apart."""
    write_secret(tmp_path, {"users.yml": _users("bob")})
    store = UserStore(tmp_path / "users.yml")
    assert set(store.current()) == {"bob"}
    write_secret(tmp_path, {"users.yml": _users("amy")})
    assert set(store.current()) == {"amy"}


def test_tls_state_follows_a_secret_update(tmp_path: Path) -> None:
    first, second = self_signed("127.0.0.1", days=1), self_signed("127.0.0.1", days=1)
    write_secret(tmp_path, {"tls.crt": first[0], "tls.key": first[1]})
    tls = TlsState(tmp_path / "tls.crt", tmp_path / "tls.key")
    tls.refresh()
    before = tls.context
    assert before is not None
    write_secret(tmp_path, {"tls.crt": second[0], "tls.key": second[1]})
    tls.refresh()
    assert tls.context is not None and tls.context is not before
