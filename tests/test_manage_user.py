"""manage-user: every command and alias, every refusal, the file it writes, and the live proxy."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys

import aiohttp
import bcrypt
import pytest

from cli_helpers import CLI_TIMEOUT, AuthFiles, Cli, Proxy, Result, assert_refused, run_on_terminal
from helpers import basic

from mreg_proxy.auth.users import read_users_file

PROG = "manage-user"


def run(cli: Cli, *args: str, stdin: bytes = b"") -> Result:
    return cli.run("manage_user", *args, stdin=stdin)


def add(cli: Cli, name: str, password: str = "secret") -> None:
    result = run(cli, "add", name, stdin=f"{password}\n".encode())
    assert result.code == 0, result


def password_ok(auth_files: AuthFiles, name: str, password: str) -> bool:
    user = read_users_file(auth_files.users)[name]
    return bcrypt.checkpw(password.encode(), user.password_hash.encode())


# --- ls ---------------------------------------------------------------------------------------


def test_ls_without_users_says_so(cli: Cli) -> None:
    result = run(cli, "ls")
    assert result.code == 0
    assert result.out.startswith("no users in ")


@pytest.mark.parametrize("alias", ["ls", "list", "l"])
def test_ls_lists_users_sorted_with_roles(cli: Cli, alias: str) -> None:
    add(cli, "zoe")
    add(cli, "bob")
    run(cli, "toggle", "bob")
    result = run(cli, alias)
    assert result.code == 0
    assert [line.split() for line in result.out.splitlines()] == [["bob", "admin"], ["zoe", "reader"]]


# --- add --------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["add", "a", "new", "n"])
def test_add_creates_a_reader_with_the_password_from_stdin(
    cli: Cli, auth_files: AuthFiles, alias: str
) -> None:
    result = run(cli, alias, "bob", stdin=b"s3cret:with colon\n")
    assert result.code == 0, result
    assert read_users_file(auth_files.users)["bob"].role == "reader"
    assert password_ok(auth_files, "bob", "s3cret:with colon")


def test_add_reads_only_the_first_line_of_stdin(cli: Cli, auth_files: AuthFiles) -> None:
    assert run(cli, "add", "bob", stdin=b"first\nsecond\n").code == 0
    assert password_ok(auth_files, "bob", "first")


def test_add_existing_user_sets_a_new_password_and_keeps_the_role(
    cli: Cli, auth_files: AuthFiles
) -> None:
    add(cli, "bob", "old")
    run(cli, "toggle", "bob")
    result = run(cli, "add", "bob", stdin=b"new\n")
    assert result.code == 0
    assert "new password" in result.out
    assert read_users_file(auth_files.users)["bob"].role == "admin"
    assert password_ok(auth_files, "bob", "new")


def test_add_random_prints_a_strong_password_once(cli: Cli, auth_files: AuthFiles) -> None:
    result = run(cli, "add", "bob", "--random")
    assert result.code == 0, result
    [password] = [line.split(": ", 1)[1] for line in result.out.splitlines() if line.startswith("password: ")]
    assert len(password) >= 32
    assert password_ok(auth_files, "bob", password)


def test_add_uses_the_configured_bcrypt_cost(cli: Cli, auth_files: AuthFiles) -> None:
    add(cli, "bob")
    assert read_users_file(auth_files.users)["bob"].password_hash.startswith("$2b$04$")


def test_add_accepts_a_64_character_name(cli: Cli, auth_files: AuthFiles) -> None:
    add(cli, "x" * 64)
    assert "x" * 64 in read_users_file(auth_files.users)


def test_add_accepts_a_72_byte_password(cli: Cli, auth_files: AuthFiles) -> None:
    add(cli, "bob", "p" * 72)
    assert password_ok(auth_files, "bob", "p" * 72)


def test_written_file_has_mode_0600(cli: Cli, auth_files: AuthFiles) -> None:
    add(cli, "bob")
    run(cli, "toggle", "bob")
    assert stat.S_IMODE(auth_files.users.stat().st_mode) == 0o600


def test_twenty_concurrent_adds_keep_twenty_users(cli: Cli, auth_files: AuthFiles) -> None:
    names = [f"user{i:02d}" for i in range(20)]
    processes = [
        subprocess.Popen(
            cli.command("manage_user", "add", name),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=cli.env,
        )
        for name in names
    ]
    try:
        for process in processes:
            _out, err = process.communicate(b"pw\n", timeout=CLI_TIMEOUT)
            assert process.returncode == 0, err
    finally:
        for process in processes:
            process.kill()  # a no-op for those that finished
            process.wait()
    assert sorted(read_users_file(auth_files.users)) == names


# --- add on a terminal ------------------------------------------------------------------------


def test_add_without_stdin_says_to_use_exec_it_or_a_pipe(cli: Cli, auth_files: AuthFiles) -> None:
    """`podman exec` without -i gives /dev/null: not "the password is empty", but what to type."""
    result = cli.run("manage_user", "add", "bob", stdin=None)
    assert_refused(result, PROG)
    assert "podman exec -it ... manage-user add bob" in result.err
    assert "| podman exec -i ... manage-user add bob" in result.err
    assert not auth_files.users.exists()


def test_add_on_a_terminal_asks_twice_without_echo(cli: Cli, auth_files: AuthFiles) -> None:
    code, output = run_on_terminal(cli, "manage_user", ["add", "bob"], [b"typed pw\n", b"typed pw\n"])
    assert code == 0, output
    assert "typed pw" not in output
    assert "New password for bob: " in output and "Repeat it: " in output
    assert password_ok(auth_files, "bob", "typed pw")


def test_add_on_a_terminal_refuses_two_different_passwords(cli: Cli, auth_files: AuthFiles) -> None:
    code, output = run_on_terminal(cli, "manage_user", ["add", "bob"], [b"one\n", b"two\n"])
    assert code == 1
    assert "the two passwords differ" in output
    assert not auth_files.users.exists()


# --- toggle and rm ----------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["toggle", "t"])
def test_toggle_switches_reader_and_admin_and_says_which(
    cli: Cli, auth_files: AuthFiles, alias: str
) -> None:
    add(cli, "bob")
    first = run(cli, alias, "bob")
    assert first.code == 0 and "now admin" in first.out
    assert read_users_file(auth_files.users)["bob"].role == "admin"
    second = run(cli, alias, "bob")
    assert second.code == 0 and "now reader" in second.out
    assert read_users_file(auth_files.users)["bob"].role == "reader"


def test_toggle_keeps_the_password(cli: Cli, auth_files: AuthFiles) -> None:
    add(cli, "bob", "kept")
    run(cli, "toggle", "bob")
    assert password_ok(auth_files, "bob", "kept")


@pytest.mark.parametrize("alias", ["rm", "d", "del", "r"])
def test_rm_removes_only_that_user(cli: Cli, auth_files: AuthFiles, alias: str) -> None:
    add(cli, "bob")
    add(cli, "eve")
    result = run(cli, alias, "bob")
    assert result.code == 0, result
    assert list(read_users_file(auth_files.users)) == ["eve"]


# --- refusals: one line, non-zero, file untouched ---------------------------------------------


@pytest.mark.parametrize("command", ["toggle", "t", "rm", "d", "del", "r"])
def test_unknown_user_is_refused_and_the_file_untouched(
    cli: Cli, auth_files: AuthFiles, command: str
) -> None:
    add(cli, "bob")
    before = auth_files.users.read_bytes()
    result = run(cli, command, "nobody")
    assert_refused(result, PROG)
    assert "nobody" in result.err
    assert auth_files.users.read_bytes() == before


@pytest.mark.parametrize(
    "name",
    ["", "a:b", "a b", "a\tb", "a\x07b", "x" * 65],
    ids=["empty", "colon", "space", "tab", "control", "65chars"],
)
@pytest.mark.parametrize("command", ["add", "toggle", "rm"])
def test_bad_name_is_refused_and_the_file_untouched(
    cli: Cli, auth_files: AuthFiles, command: str, name: str
) -> None:
    add(cli, "bob")
    before = auth_files.users.read_bytes()
    assert_refused(run(cli, command, name, stdin=b"pw\n"), PROG)
    assert auth_files.users.read_bytes() == before


@pytest.mark.parametrize(
    "stdin", [b"\n", b"", "p".encode() * 73 + b"\n", "é".encode() * 37 + b"\n", b"\xff\xfe\n"],
    ids=["empty-line", "no-input", "73-bytes", "74-utf8-bytes", "not-utf8"],
)
def test_bad_password_is_refused_and_the_file_untouched(
    cli: Cli, auth_files: AuthFiles, stdin: bytes
) -> None:
    add(cli, "bob")
    before = auth_files.users.read_bytes()
    assert_refused(run(cli, "add", "eve", stdin=stdin), PROG)
    assert auth_files.users.read_bytes() == before


@pytest.mark.parametrize("args", [["ls"], ["add", "eve"], ["toggle", "bob"], ["rm", "bob"]])
def test_invalid_users_file_is_refused_with_the_reason_and_never_overwritten(
    cli: Cli, auth_files: AuthFiles, args: list[str]
) -> None:
    broken = b"users:\n  bob:\n    role: superuser\n    password_hash: nope\n"
    auth_files.users.write_bytes(broken)
    result = run(cli, *args, stdin=b"pw\n")
    assert_refused(result, PROG)
    assert "role must be one of" in result.err
    assert auth_files.users.read_bytes() == broken


def test_unreadable_users_file_is_refused(cli: Cli, auth_files: AuthFiles) -> None:
    auth_files.users.mkdir()  # a directory where the file should be: cannot be read as a file
    result = run(cli, "add", "bob", stdin=b"pw\n")
    assert_refused(result, PROG)
    assert "cannot read" in result.err


def test_missing_users_folder_is_refused(cli: Cli, auth_files: AuthFiles) -> None:
    env = dict(cli.env, MREG_USERS_FILE=str(auth_files.users.parent / "gone" / "users.yml"))
    assert_refused(Cli(env, cli.cwd).run("manage_user", "add", "bob", stdin=b"pw\n"), PROG)


def test_bad_setting_is_refused(cli: Cli) -> None:
    env = dict(cli.env, MREG_BCRYPT_COST="99")
    assert_refused(Cli(env, cli.cwd).run("manage_user", "ls"), PROG)


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["add"], ["add", "a", "b"]])
def test_usage_errors_are_one_line(cli: Cli, args: list[str]) -> None:
    assert_refused(run(cli, *args), PROG)


@pytest.mark.parametrize("module", ["manage_user", "manage_tls"])
def test_cli_does_not_load_aiohttp(cli: Cli, module: str) -> None:
    probe = f"import sys, mreg_proxy.cli.{module}; print('aiohttp' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], env=cli.env, capture_output=True, timeout=CLI_TIMEOUT
    )
    assert done.stdout.strip() == b"False", done.stderr


# --- the running proxy picks changes up by itself ---------------------------------------------


async def status(proxy: Proxy, user: str, password: str, method: str = "GET", path: str = "/v2/") -> int:
    async with aiohttp.ClientSession() as session:
        url = proxy.url("http", path)
        async with session.request(method, url, headers=basic(user, password)) as response:
            return response.status


async def test_proxy_accepts_a_user_added_while_it_runs(cli: Cli, proxy: Proxy) -> None:
    assert await status(proxy, "bob", "pw") == 401
    await asyncio.to_thread(add, cli, "bob", "pw")
    assert await status(proxy, "bob", "pw") == 200


async def test_proxy_refuses_a_user_removed_while_it_runs(cli: Cli, proxy: Proxy) -> None:
    await asyncio.to_thread(add, cli, "bob", "pw")
    assert await status(proxy, "bob", "pw") == 200
    await asyncio.to_thread(run, cli, "rm", "bob")
    assert await status(proxy, "bob", "pw") == 401


async def test_proxy_applies_a_role_change_while_it_runs(cli: Cli, proxy: Proxy) -> None:
    await asyncio.to_thread(add, cli, "bob", "pw")
    # the echo registry answers any path; a manifest PUT is a write
    manifest = "/v2/team/app/manifests/1.0"
    assert await status(proxy, "bob", "pw", "PUT", manifest) == 403
    await asyncio.to_thread(run, cli, "toggle", "bob")
    assert await status(proxy, "bob", "pw", "PUT", manifest) == 200


async def test_proxy_applies_a_new_password_while_it_runs(cli: Cli, proxy: Proxy) -> None:
    await asyncio.to_thread(add, cli, "bob", "old")
    assert await status(proxy, "bob", "old") == 200
    await asyncio.to_thread(add, cli, "bob", "new")
    assert await status(proxy, "bob", "old") == 401


# --- grants, tokens, audit, explain -----------------------------------------------------------


def test_add_with_role_none_and_grants_shown_by_ls(cli: Cli, auth_files: AuthFiles) -> None:
    assert run(cli, "add", "bob", "--role", "none", stdin=b"pw\n").code == 0
    assert run(cli, "grant", "bob", "team/*", "push").code == 0
    assert run(cli, "grant", "bob", "team/secret", "none").code == 0
    assert run(cli, "grant", "--anonymous", "public/**", "pull").code == 0
    lines = [line.split(None, 2) for line in run(cli, "ls").out.splitlines()]
    assert lines == [["bob", "none", "team/*=push, team/secret=none"], ["(anonymous)", "none", "public/**=pull"]]
    assert run(cli, "revoke", "bob", "team/secret").code == 0
    assert read_users_file(auth_files.users)["bob"].grants[0].pattern == "team/*"
    assert len(read_users_file(auth_files.users)["bob"].grants) == 1


def test_grant_replaces_the_level_of_the_same_pattern(cli: Cli, auth_files: AuthFiles) -> None:
    add(cli, "bob")
    run(cli, "grant", "bob", "team/*", "push")
    run(cli, "grant", "bob", "team/*", "delete")
    [grant] = read_users_file(auth_files.users)["bob"].grants
    assert str(grant) == "team/*=delete"


@pytest.mark.parametrize(
    "args",
    [
        ["grant", "bob", "Team/*", "push"],
        ["grant", "bob", "team/**/x", "push"],
        ["grant", "bob", "team/*", "write"],
        ["grant", "nobody", "team/*", "push"],
        ["grant", "--anonymous", "public/**", "push"],
        ["grant", "bob", "team/*"],
        ["revoke", "bob", "never/granted"],
        ["toggle", "nora"],
        ["token", "add", "bob", "--grant", "a=pull"],
        ["token", "add", "ci", "--grant", "a"],
        ["token", "add", "ci", "--grant", "a=pull", "--expires", "1y"],
        ["token", "rm", "nothing"],
        ["explain", "nobody", "team/app"],
        ["explain", "bob", "Not A Name"],
    ],
)
def test_access_refusals_are_one_line_and_leave_the_file_alone(cli: Cli, auth_files: AuthFiles, args: list[str]) -> None:
    add(cli, "bob")
    run(cli, "add", "nora", "--role", "none", stdin=b"pw\n")
    before = auth_files.users.read_bytes()
    assert_refused(run(cli, *args), PROG)
    assert auth_files.users.read_bytes() == before


def token_secret(result: Result) -> str:
    [secret] = [line.split(": ", 1)[1] for line in result.out.splitlines() if line.startswith("secret: ")]
    return secret


def test_token_add_prints_the_secret_once_and_stores_only_a_hash(cli: Cli, auth_files: AuthFiles) -> None:
    result = run(cli, "token", "add", "ci", "--grant", "team/app=push", "--grant", "base/**=pull", "--expires", "90d")
    assert result.code == 0, result
    secret = token_secret(result)
    assert secret.startswith("mreg_") and len(secret) >= 32
    text = auth_files.users.read_text()
    assert secret not in text and "hmac-sha256$" in text
    listed = run(cli, "token", "ls").out
    assert listed.startswith("ci  base/**=pull, team/app=push  created ") and "last used never" in listed
    assert run(cli, "token", "add", "ci", "--grant", "a=pull").code != 0  # no silent replacement
    assert run(cli, "token", "rm", "ci").code == 0
    assert "no CI tokens" in run(cli, "token", "ls").out


def test_explain_names_the_rule(cli: Cli) -> None:
    add(cli, "bob")
    run(cli, "grant", "bob", "team/*", "push")
    run(cli, "grant", "bob", "team/secret", "none")
    run(cli, "token", "add", "ci", "--grant", "team/**=pull")
    assert run(cli, "explain", "bob", "team/app").out == "bob on team/app: push (grant team/* push)\n"
    assert run(cli, "explain", "bob", "team/secret").out == "bob on team/secret: none (grant team/secret none)\n"
    assert run(cli, "explain", "bob", "other/x").out == "bob on other/x: pull (role reader; no grant matches)\n"
    assert run(cli, "explain", "ci", "team/a/b").out == "token ci on team/a/b: pull (grant team/** pull)\n"
    assert "nothing is public" in run(cli, "explain", "--anonymous", "team/app").out


def test_every_change_lands_once_in_the_audit_log_with_who_ran_it(cli: Cli, auth_files: AuthFiles) -> None:
    env = dict(cli.env, MREG_ACTOR="ops")
    ops = Cli(env, cli.cwd)
    for args, stdin in [
        (["add", "bob"], b"pw\n"), (["add", "bob", "--role", "admin"], b"pw2\n"), (["toggle", "bob"], b""),
        (["grant", "bob", "team/*", "push"], b""), (["revoke", "bob", "team/*"], b""),
        (["token", "add", "ci", "--grant", "a=pull"], b""), (["token", "rm", "ci"], b""), (["rm", "bob"], b""),
    ]:
        assert ops.run("manage_user", *args, stdin=stdin).code == 0
    lines = run(cli, "audit").out.splitlines()
    assert [line.split()[1] for line in lines] == [
        "user_added", "password_changed", "role_changed", "role_changed", "grant", "revoke",
        "token_created", "token_removed", "user_removed",
    ]
    assert all("by=ops" in line for line in lines)
    assert len(run(cli, "audit", "--user", "ci").out.splitlines()) == 2
    assert run(cli, "audit", "--since", "1h").out.splitlines() == lines


async def test_proxy_applies_grants_and_tokens_while_it_runs(cli: Cli, proxy: Proxy) -> None:
    manifest = "/v2/team/app/manifests/1.0"
    await asyncio.to_thread(lambda: run(cli, "add", "bob", "--role", "none", stdin=b"pw\n"))
    assert await status(proxy, "bob", "pw", "PUT", manifest) == 403
    await asyncio.to_thread(run, cli, "grant", "bob", "team/*", "push")
    assert await status(proxy, "bob", "pw", "PUT", manifest) == 200
    created = await asyncio.to_thread(run, cli, "token", "add", "ci", "--grant", "team/app=pull")
    secret = token_secret(created)
    assert await status(proxy, "ci", secret, "GET", manifest) == 200
    assert await status(proxy, "ci", secret, "PUT", manifest) == 403
    await asyncio.to_thread(run, cli, "token", "rm", "ci")
    assert await status(proxy, "ci", secret, "GET", manifest) == 401
