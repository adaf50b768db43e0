from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mreg_proxy.config import ConfigError
from mreg_proxy.web.sessions import KEY_BYTES, SESSION_SECONDS, Signer, load_or_create_key

NOW = 1_800_000_000.0


def test_a_session_round_trips_until_it_expires() -> None:
    signer = Signer(b"k" * 32)
    session = signer.new_session("amy", "$2b$hash", NOW)
    value = signer.encode(session)
    assert signer.decode(value, NOW + 10) == session
    assert signer.decode(value, NOW + SESSION_SECONDS) is None


@pytest.mark.parametrize("mangle", [
    lambda v: v[:-2] + ("A" if v[-2] != "A" else "B") + v[-1],  # the signature
    lambda v: "x" + v,  # the body
    lambda v: v.partition(".")[0],  # no signature
    lambda v: v + "A" * 1100,  # over the size budget
    lambda v: "",
])
def test_a_mangled_cookie_is_no_session(mangle) -> None:  # type: ignore[no-untyped-def]
    signer = Signer(b"k" * 32)
    assert signer.decode(mangle(signer.encode(signer.new_session("amy", "h", NOW))), NOW) is None


def test_another_key_does_not_accept_the_session() -> None:
    value = Signer(b"k" * 32).encode(Signer(b"k" * 32).new_session("amy", "h", NOW))
    assert Signer(b"j" * 32).decode(value, NOW) is None


def test_a_new_password_gives_another_fingerprint() -> None:
    signer = Signer(b"k" * 32)
    assert signer.new_session("amy", "old", NOW).fingerprint != signer.new_session("amy", "new", NOW).fingerprint


def test_csrf_tokens_belong_to_their_nonce() -> None:
    signer = Signer(b"k" * 32)
    assert signer.csrf_ok("n1", signer.csrf("n1"))
    assert not signer.csrf_ok("n2", signer.csrf("n1"))
    assert not signer.csrf_ok("n1", None)


def test_the_key_is_created_once_private(tmp_path: Path) -> None:
    path = tmp_path / "ui-session.key"
    key = load_or_create_key(path)
    assert len(key) == KEY_BYTES and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["ui-session.key"]  # no temporary file left


def test_replicas_starting_together_share_one_key(tmp_path: Path) -> None:
    path = tmp_path / "ui-session.key"
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(load_or_create_key(path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(keys) == 8 and len(set(keys)) == 1


def test_a_damaged_key_file_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "ui-session.key"
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="remove it"):
        load_or_create_key(path)


def test_an_unwritable_folder_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="head -c 32 /dev/urandom"):
        load_or_create_key(tmp_path / "missing-folder" / "ui-session.key")
