"""manage-user import: an htpasswd file and an Apache group file, as the httpd-based setup kept
them, become the YAML store; bcrypt hashes (``$2y$``, cost 13) are taken over unchanged."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import bcrypt
import pytest

from cli_helpers import AuthFiles, Cli, Proxy, Result, assert_refused
from helpers import TEST_COST, basic

from mreg_proxy.auth.users import read_users_file

PROG = "manage-user"
SEED_COST = 13  # what the httpd-based setup's htpasswd -B -C 13 wrote


def y_hash(password: str, cost: int = TEST_COST) -> str:
    """A ``$2y$`` hash as Apache's htpasswd writes it (the same algorithm as ``$2b$``)."""
    return "$2y$" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()[4:]


def run(cli: Cli, *args: str, stdin: bytes = b"") -> Result:
    return cli.run("manage_user", "import", *args, stdin=stdin)


@pytest.fixture
def seed(tmp_path: Path) -> tuple[Path, Path]:
    """A seed-style pair: htpasswd with three users, a group file naming one admin."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(
        f"alice:{y_hash('alice-pw')}\n"
        f"bob:{y_hash('bob-pw')}\n"
        "\n# a comment\n"
        f"carol:{y_hash('carol-pw')}\n"
    )
    group = tmp_path / "group"
    group.write_text("admin: alice\n")
    return htpasswd, group


def test_import_keeps_the_hashes_and_makes_the_group_members_admins(
    cli: Cli, auth_files: AuthFiles, seed: tuple[Path, Path]
) -> None:
    htpasswd, group = seed
    result = run(cli, str(htpasswd), "--group-file", str(group))
    assert result.code == 0, result
    users = read_users_file(auth_files.users)
    assert {name: user.role for name, user in users.items()} == {"alice": "admin", "bob": "reader", "carol": "reader"}
    lines = dict(line.split(":", 1) for line in htpasswd.read_text().splitlines() if ":" in line)
    assert all(users[name].password_hash == lines[name] for name in users)
    assert "added alice (admin)" in result.out
    assert f"imported 3 of 3 users from {htpasswd}" in result.out


def test_import_reads_the_htpasswd_file_from_stdin(cli: Cli, auth_files: AuthFiles, seed: tuple[Path, Path]) -> None:
    htpasswd, group = seed
    result = run(cli, "-", "--group-file", str(group), stdin=htpasswd.read_bytes())
    assert result.code == 0, result
    assert read_users_file(auth_files.users)["alice"].role == "admin"


def test_import_twice_changes_nothing_and_keeps_users_already_there(
    cli: Cli, auth_files: AuthFiles, seed: tuple[Path, Path]
) -> None:
    htpasswd, group = seed
    assert cli.run("manage_user", "add", "bob", stdin=b"new-bob\n").code == 0
    assert run(cli, str(htpasswd), "--group-file", str(group)).code == 0
    before = auth_files.users.read_bytes()
    again = run(cli, str(htpasswd), "--group-file", str(group))
    assert again.code == 0
    assert "kept bob (reader): already in" in again.out
    assert "imported 0 of 3" in again.out
    assert auth_files.users.read_bytes() == before
    assert bcrypt.checkpw(b"new-bob", read_users_file(auth_files.users)["bob"].password_hash.encode())


def test_other_hash_kinds_are_left_out_with_what_to_do(cli: Cli, auth_files: AuthFiles, tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{y_hash('pw')}\nmd5:$apr1$abcdefgh$0123456789abcdefghijkl\nsha:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    result = run(cli, str(htpasswd))
    assert result.code == 0, result
    assert set(read_users_file(auth_files.users)) == {"alice"}
    assert "left out md5: the hash is MD5 ($apr1$)" in result.err
    assert "manage-user add md5" in result.err
    assert "left out sha: the hash is SHA-1 ({SHA})" in result.err
    assert "imported 1 of 3" in result.out


@pytest.mark.parametrize(
    "content, why",
    [
        ("alice\n", "line 1: expected NAME:HASH"),
        (f"a b:{'$2y$04$' + 'a' * 53}\n", "line 1: user name contains whitespace"),
        (f"bob:{'$2y$04$' + 'a' * 53}\nbob:{'$2y$04$' + 'b' * 53}\n", "line 2: 'bob' is listed twice"),
    ],
    ids=["no-colon", "bad-name", "twice"],
)
def test_a_bad_htpasswd_file_is_refused_whole(
    cli: Cli, auth_files: AuthFiles, tmp_path: Path, content: str, why: str
) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(content)
    result = run(cli, str(htpasswd))
    assert_refused(result, PROG)
    assert why in result.err
    assert not auth_files.users.exists()


def test_admin_group_is_chosen_by_name_when_the_file_has_several(
    cli: Cli, auth_files: AuthFiles, seed: tuple[Path, Path]
) -> None:
    htpasswd, group = seed
    group.write_text("devs: bob carol\nowners: carol\n")
    refused = run(cli, str(htpasswd), "--group-file", str(group))
    assert_refused(refused, PROG)
    assert "no group 'admin' (groups: devs, owners); name it with --admin-group" in refused.err
    assert run(cli, str(htpasswd), "--group-file", str(group), "--admin-group", "owners").code == 0
    assert {n: u.role for n, u in read_users_file(auth_files.users).items()} == {
        "alice": "reader", "bob": "reader", "carol": "admin"
    }


def test_an_admin_missing_from_the_htpasswd_file_is_named(cli: Cli, seed: tuple[Path, Path]) -> None:
    htpasswd, group = seed
    group.write_text("admin: alice dave\n")
    result = run(cli, str(htpasswd), "--group-file", str(group))
    assert result.code == 0
    assert f"admin dave of the group file is not in {htpasswd}" in result.err


def test_import_without_stdin_says_to_pipe_it(cli: Cli, auth_files: AuthFiles) -> None:
    result = cli.run("manage_user", "import", "-", stdin=None)
    assert_refused(result, PROG)
    assert "podman exec -i" in result.err


def test_a_huge_file_is_refused(cli: Cli, tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_bytes(b"#" * (2 << 20))
    assert_refused(run(cli, str(htpasswd)), PROG)


async def test_the_proxy_accepts_an_imported_cost_13_y_hash(cli: Cli, proxy: Proxy, tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{y_hash('seed pass:word', SEED_COST)}\n")
    group = tmp_path / "group"
    group.write_text("admin: alice\n")
    assert run(cli, str(htpasswd), "--group-file", str(group)).code == 0
    async with aiohttp.ClientSession() as session:
        for password, expected in (("seed pass:word", 200), ("wrong", 401)):
            async with session.get(proxy.url("http"), headers=basic("alice", password)) as response:
                assert response.status == expected
