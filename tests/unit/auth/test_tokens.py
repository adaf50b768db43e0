"""Token secrets, their stored hash, durations; the users file's grants, tokens and anonymous."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from helpers import make_user
from mreg_proxy.auth.grants import Grant, Level
from mreg_proxy.oci.mount import without_mount
from mreg_proxy.auth.tokens import hash_secret, is_secret_hash, new_secret, parse_duration, secret_matches
from mreg_proxy.auth.users import Store, Token, UsersFileError, dump_store, parse_store

NOW = datetime.datetime(2026, 12, 2, 15, 0, tzinfo=datetime.timezone.utc)


def test_a_secret_has_at_least_128_random_bits_and_is_stored_only_as_a_keyed_hash() -> None:
    secret = new_secret()
    assert secret.startswith("mreg_") and len(secret) >= len("mreg_") + 22
    assert new_secret() != secret
    stored = hash_secret(secret)
    assert is_secret_hash(stored) and secret not in stored
    assert hash_secret(secret) != stored  # a random key per token
    assert secret_matches(secret, stored)
    assert not secret_matches(secret + "x", stored) and not secret_matches("", stored)


@pytest.mark.parametrize("text,seconds", [("12h", 43200), ("90d", 90 * 86400), ("4w", 28 * 86400), ("30m", 1800)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "0d", "1y", "d", "-1d", "1.5d", "1 d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def full_store() -> Store:
    bob = dataclasses.replace(make_user("bob", "pw", "none"), grants=(Grant("team/*", Level.PUSH),))
    token = Token("ci", hash_secret("s"), (Grant("team/app", Level.PUSH),), NOW, NOW + datetime.timedelta(days=90))
    return Store({"bob": bob, "amy": make_user("amy", "pw")}, {"ci": token}, (Grant("public/**", Level.PULL),))


def test_the_whole_store_roundtrips() -> None:
    store = full_store()
    assert parse_store(dump_store(store)) == store


def test_a_file_without_grants_or_tokens_is_written_as_before() -> None:
    text = dump_store(Store({"amy": make_user("amy", "pw")}))
    assert set(text.split("\n")[0:1]) == {"users:"} and "grants" not in text and "tokens" not in text


@pytest.mark.parametrize(
    "edit,fragment",
    [
        (lambda t: t.replace("team/*: push", "team/*: write"), "access level must be"),
        (lambda t: t.replace("team/*: push", "Team/*: push"), "pattern 'Team/*'"),
        (lambda t: t.replace("public/**: pull", "public/**: push"), "anonymous access is pull or none"),
        (lambda t: t.replace("secret_hash: ", "secret_hash: x"), "not an hmac-sha256"),
        (lambda t: t.replace("  ci:\n", "  amy:\n"), "a user has that name"),
        (lambda t: t.replace("created: ", "created: x"), "token 'ci'"),
        (lambda t: t + "extra: 1\n", "with the key 'users'"),
    ],
)
def test_invalid_grants_and_tokens_reject_the_file(edit: object, fragment: str) -> None:
    text = edit(dump_store(full_store()))  # type: ignore[operator]
    with pytest.raises(UsersFileError) as info:
        parse_store(text)
    assert fragment in str(info.value)


def test_unquoted_timestamps_written_by_hand_are_read() -> None:
    text = dump_store(full_store()).replace("'2026-12-02T15:00:00Z'", "2026-12-02T15:00:00Z")
    assert parse_store(text).tokens["ci"].created == NOW


@pytest.mark.parametrize(
    "query,kept",
    [
        ("mount=sha256%3Aab&from=a%2Fb", ""),
        ("mount=sha256:ab&x=1&from=a&y=a%2Bb", "?x=1&y=a%2Bb"),
        ("_state=a%3D&mount=d", "?_state=a%3D"),
        ("", ""),
    ],
)
def test_a_refused_mount_keeps_every_other_parameter_byte_for_byte(query: str, kept: str) -> None:
    assert without_mount("/v2/a/blobs/uploads/", query) == "/v2/a/blobs/uploads/" + kept
