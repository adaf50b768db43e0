"""manage-user: users, per-repository grants, CI tokens and the audit log of the registry.

Runs inside the auth container and edits the file the running proxy reads; the proxy notices
the change by itself. Every change is a read-modify-write under an exclusive lock, written
atomically with mode 0600, so concurrent invocations never lose each other's users. A users file
that cannot be read or parsed is refused and left exactly as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import getpass
import secrets
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import bcrypt

from ..auth.audit import read_events, selected
from ..auth.passwords import BCRYPT_MAX_BYTES
from ..config import Settings
from ..files import exclusive_lock
from ..auth.grants import ROLE_LEVELS, Grant, GrantError, Level, checked_pattern, deciding_grant, parse_level
from ..spec.names import is_name
from ..auth.tokencheck import read_usage, write_usage
from ..auth.tokens import hash_secret, new_secret, parse_duration, utc_text
from ..auth.users import (
    ANONYMOUS_LEVELS, ROLES, Store, Token, User, UsersFileError, name_problem, read_store, write_store,
)
from . import OneLineParser, Refusal, stdin_is_absent
from .command import audit, run
from .user_import import add_import_command

PROG = "manage-user"
RANDOM_PASSWORD_BYTES = 24  # 192 bits, 32 URL-safe characters: well under bcrypt's 72 bytes
ANONYMOUS = "(anonymous)"  # how ls and explain name clients without credentials


def checked_name(name: str) -> str:
    problem = name_problem(name)
    if problem:
        raise Refusal(f"{problem}: {name!r}")
    return name


def checked_password(password: str) -> str:
    if not password:
        raise Refusal("the password is empty")
    size = len(password.encode("utf-8"))
    if size > BCRYPT_MAX_BYTES:
        raise Refusal(f"the password is {size} bytes; bcrypt uses at most {BCRYPT_MAX_BYTES}")
    return password


def prompt_password(name: str) -> str:
    """Ask twice without echo: a typo in a password nobody can see would lock the user out."""
    try:
        first = getpass.getpass(f"New password for {name}: ")
        second = getpass.getpass("Repeat it: ")
    except EOFError:
        raise Refusal("no password given") from None
    if first != second:
        raise Refusal("the two passwords differ")
    return first


def first_line_of_stdin() -> str:
    """The password piped in (``printf 'pw\\n' | manage-user add bob``), without its line end."""
    line = sys.stdin.buffer.readline().removesuffix(b"\n").removesuffix(b"\r")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal("the password is not valid UTF-8") from None


def hash_password(password: str, cost: int) -> str:
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(cost)).decode("ascii")


def grants_text(grants: tuple[Grant, ...]) -> str:
    return ", ".join(map(str, grants))


def cmd_list(settings: Settings, args: argparse.Namespace) -> None:
    store = read_store(settings.users_file)
    if not store.users:
        print(f"no users in {settings.users_file}; add one with: {PROG} add NAME")
    rows = [(name, user.role, grants_text(user.grants)) for name, user in sorted(store.users.items())]
    if store.anonymous:
        rows.append((ANONYMOUS, "none", grants_text(store.anonymous)))
    if rows:
        width = max(len(name) for name, _role, _grants in rows)
        for name, role, grants in rows:
            print(f"{name:<{width}}  {role:<6}  {grants}".rstrip())
    if store.tokens:
        print(f"{len(store.tokens)} CI token(s): {PROG} token ls")


def cmd_add(settings: Settings, args: argparse.Namespace) -> None:
    name = checked_name(args.name)
    path = settings.users_file
    if name in read_store(path).tokens:  # refuse a broken file before a password is typed for nothing
        raise Refusal(f"{name!r} is a CI token; pick another user name")
    if args.random:
        password = secrets.token_urlsafe(RANDOM_PASSWORD_BYTES)
    elif sys.stdin.isatty():
        password = prompt_password(name)
    elif stdin_is_absent():
        raise Refusal(
            f"no password on stdin ('podman exec' without -i gives none): use 'podman exec -it ... "
            f"{PROG} add {name}' to be asked, or pipe it: printf '%s\\n' PASSWORD | podman exec -i ... "
            f"{PROG} add {name}"
        )
    else:
        password = first_line_of_stdin()
    # bcrypt is slow by design: hash before taking the lock so concurrent adds do not queue on it
    password_hash = hash_password(checked_password(password), settings.bcrypt_cost)
    with exclusive_lock(path):
        store = read_store(path)
        if name in store.tokens:
            raise Refusal(f"{name!r} is a CI token; pick another user name")
        existing = store.users.get(name)
        role = args.role or (existing.role if existing else ROLES[0])
        grants = existing.grants if existing else ()
        write_store(path, with_user(store, User(name, role, password_hash, grants)))
    if existing:
        print(f"set a new password for {name} ({role})")
        audit(settings, "password_changed", user=name)
        if role != existing.role:
            audit(settings, "role_changed", user=name, role=role, previous=existing.role)
    else:
        print(f"added {name} ({role})")
        audit(settings, "user_added", user=name, role=role)
    if args.random:
        print(f"password: {password}")
        print("it is shown only this once: only its bcrypt hash is stored")


def with_user(store: Store, user: User) -> Store:
    return dataclasses.replace(store, users={**store.users, user.name: user})


def cmd_toggle(settings: Settings, args: argparse.Namespace) -> None:
    name = checked_name(args.name)
    path = settings.users_file
    with exclusive_lock(path):
        store = read_store(path)
        user = existing_user(store.users, name, path)
        if user.role == "none":
            raise Refusal(f"{name} has no role (only grants); give one with: {PROG} add {name} --role reader")
        role = "admin" if user.role == "reader" else "reader"
        write_store(path, with_user(store, dataclasses.replace(user, role=role)))
    audit(settings, "role_changed", user=name, role=role, previous=user.role)
    rights = "may pull, push and delete" if role == "admin" else "may only pull"
    where = " where no grant says otherwise" if user.grants else ""
    print(f"{name} is now {role} ({rights}{where})")


def cmd_remove(settings: Settings, args: argparse.Namespace) -> None:
    name = checked_name(args.name)
    path = settings.users_file
    with exclusive_lock(path):
        store = read_store(path)
        existing_user(store.users, name, path)
        write_store(path, dataclasses.replace(store, users={k: v for k, v in store.users.items() if k != name}))
    audit(settings, "user_removed", user=name)
    print(f"removed {name}")


def grant_target(args: argparse.Namespace, count: int) -> tuple[str | None, list[str]]:
    """(user name or None for --anonymous, the remaining words) of grant, revoke and explain."""
    words = list(args.words)
    wanted = count if args.anonymous else count + 1
    if len(words) != wanted:
        last = {"grant": "PATTERN LEVEL", "revoke": "PATTERN", "explain": "REPOSITORY"}[args.command]
        raise Refusal(f"expected {args.command} USER {last}, or {args.command} --anonymous {last}")
    if args.anonymous:
        return None, words
    return checked_name(words[0]), words[1:]


def cmd_grant(settings: Settings, args: argparse.Namespace) -> None:
    name, (pattern, level_text) = grant_target(args, 2)
    try:
        grant = Grant(checked_pattern(pattern), parse_level(level_text))
    except GrantError as exc:
        raise Refusal(str(exc)) from None
    if name is None and grant.level not in ANONYMOUS_LEVELS:
        raise Refusal(f"anonymous clients may only pull: {pattern} {level_text} refused")
    path = settings.users_file
    with exclusive_lock(path):
        store = read_store(path)
        current = store.anonymous if name is None else existing_user(store.users, name, path).grants
        grants = tuple(sorted((*(g for g in current if g.pattern != pattern), grant), key=lambda g: g.pattern))
        write_store(path, set_grants(store, name, grants))
    audit(settings, "grant", user=name, anonymous=True if name is None else None, pattern=pattern, level=str(grant.level))
    print(f"{name or ANONYMOUS}: {grant.pattern} -> {grant.level}")


def cmd_revoke(settings: Settings, args: argparse.Namespace) -> None:
    name, (pattern,) = grant_target(args, 1)
    path = settings.users_file
    with exclusive_lock(path):
        store = read_store(path)
        current = store.anonymous if name is None else existing_user(store.users, name, path).grants
        if not any(g.pattern == pattern for g in current):
            raise Refusal(f"{name or ANONYMOUS} has no grant for {pattern!r}")
        write_store(path, set_grants(store, name, tuple(g for g in current if g.pattern != pattern)))
    audit(settings, "revoke", user=name, anonymous=True if name is None else None, pattern=pattern)
    print(f"{name or ANONYMOUS}: {pattern} revoked")


def set_grants(store: Store, name: str | None, grants: tuple[Grant, ...]) -> Store:
    if name is None:
        return dataclasses.replace(store, anonymous=grants)
    return with_user(store, dataclasses.replace(store.users[name], grants=grants))


def parse_grant_option(text: str) -> Grant:
    pattern, sep, level = text.rpartition("=")
    if not sep:
        raise Refusal(f"--grant {text!r}: expected PATTERN=LEVEL, e.g. team/app=push")
    try:
        return Grant(checked_pattern(pattern), parse_level(level))
    except GrantError as exc:
        raise Refusal(f"--grant {text!r}: {exc}") from None


def cmd_token_add(settings: Settings, args: argparse.Namespace) -> None:
    name = checked_name(args.name)
    grants = [parse_grant_option(text) for text in args.grant]
    patterns = [g.pattern for g in grants]
    if len(set(patterns)) != len(patterns):
        raise Refusal("a pattern is given twice")
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    try:
        expires = now + parse_duration(args.expires) if args.expires else None
    except ValueError as exc:
        raise Refusal(f"--expires: {exc}") from None
    secret = new_secret()
    token = Token(name, hash_secret(secret), tuple(sorted(grants, key=lambda g: g.pattern)), now, expires)
    path = settings.users_file
    with exclusive_lock(path):
        store = read_store(path)
        if name in store.users:
            raise Refusal(f"{name!r} is a user; a token needs a name of its own (it logs in by name)")
        if name in store.tokens:
            raise Refusal(f"token {name!r} exists; remove it first with: {PROG} token rm {name}")
        write_store(path, dataclasses.replace(store, tokens={**store.tokens, name: token}))
    audit(settings, "token_created", token=name, grants=grants_text(token.grants),
          expires=utc_text(expires) if expires else None)
    print(f"created token {name} ({grants_text(token.grants)}), expires {utc_text(expires) if expires else 'never'}")
    print(f"secret: {secret}")
    print("it is shown only this once: only a hash of it is stored")
    print(f"log in with the token's name as user name: podman login -u {name} --password-stdin REGISTRY")


def cmd_token_list(settings: Settings, args: argparse.Namespace) -> None:
    store = read_store(settings.users_file)
    if not store.tokens:
        print(f"no CI tokens; create one with: {PROG} token add NAME --grant PATTERN=LEVEL")
        return
    usage = read_usage(settings.token_usage_file)
    now = datetime.datetime.now(datetime.timezone.utc)
    width = max(len(name) for name in store.tokens)
    for name, token in sorted(store.tokens.items()):
        expiry = "never" if token.expires is None else utc_text(token.expires)
        if token.expired(now):
            expiry = f"EXPIRED {expiry}"
        used = utc_text(usage[name]) if name in usage else "never"
        print(f"{name:<{width}}  {grants_text(token.grants)}  created {utc_text(token.created)}"
              f"  expires {expiry}  last used {used}")


def cmd_token_remove(settings: Settings, args: argparse.Namespace) -> None:
    name = checked_name(args.name)
    path = settings.users_file
    with exclusive_lock(path):
        store = read_store(path)
        if name not in store.tokens:
            raise Refusal(f"no token {name!r} in {path}")
        write_store(path, dataclasses.replace(store, tokens={k: v for k, v in store.tokens.items() if k != name}))
    write_usage(settings.token_usage_file, {}, drop=frozenset({name}))
    audit(settings, "token_removed", token=name)
    print(f"removed token {name}: it no longer logs in")


def cmd_audit(settings: Settings, args: argparse.Namespace) -> None:
    if settings.audit_target == "-":
        raise Refusal("MREG_AUDIT_LOG is '-' (standard output): read the proxy's output instead")
    try:
        since = datetime.datetime.now(datetime.timezone.utc) - parse_duration(args.since) if args.since else None
    except ValueError as exc:
        raise Refusal(f"--since: {exc}") from None
    shown = 0
    for entry in selected(read_events(Path(settings.audit_target)), since, args.user):
        fields = " ".join(f"{key}={value}" for key, value in entry.items() if key not in ("time", "event"))
        print(f"{entry['time']}  {entry['event']}  {fields}".rstrip())
        shown += 1
    if not shown:
        print(f"no matching events in {settings.audit_target}", file=sys.stderr)


def cmd_explain(settings: Settings, args: argparse.Namespace) -> None:
    name, (repository,) = grant_target(args, 1)
    if not is_name(repository):
        raise Refusal(f"{repository!r} is not a repository name")
    store = read_store(settings.users_file)
    if name is None:
        who, base, grants, fallback = ANONYMOUS, Level.NONE, store.anonymous, "nothing is public by default"
    elif name in store.users:
        user = store.users[name]
        who, base, grants, fallback = user.name, ROLE_LEVELS[user.role], user.grants, f"role {user.role}"
    elif name in store.tokens:
        token = store.tokens[name]
        who, base, grants, fallback = f"token {token.name}", Level.NONE, token.grants, "tokens have no role"
        if token.expired(datetime.datetime.now(datetime.timezone.utc)):
            print(f"token {name} expired at {utc_text(token.expires)}: it no longer logs in")  # type: ignore[arg-type]
    else:
        raise Refusal(f"no user or token {name!r} in {settings.users_file}")
    grant = deciding_grant(grants, repository)
    if grant is None:
        print(f"{who} on {repository}: {base} ({fallback}; no grant matches)")
    else:
        print(f"{who} on {repository}: {grant.level} (grant {grant.pattern} {grant.level})")


def existing_user(users: Mapping[str, User], name: str, path: Path) -> User:
    user = users.get(name)
    if user is None:
        raise Refusal(f"no user {name!r} in {path}")
    return user


def with_target(commands: Any, name: str, rest: str, command: Any, **texts: str) -> None:
    """A subcommand taking ``USER REST...`` or ``--anonymous REST...`` (see grant_target)."""
    parser = commands.add_parser(name, usage=f"{PROG} {name} [-h] {{USER | --anonymous}} {rest}", **texts)
    parser.add_argument("--anonymous", action="store_true", help="clients without credentials")
    parser.add_argument("words", nargs="+", metavar=f"USER {rest}")
    parser.set_defaults(run=command)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Manage the users, grants and CI tokens of the mreg registry. The running proxy "
        "picks changes up by itself. The users file comes from MREG_USERS_FILE (default "
        "/auth/users.yml); the bcrypt cost of new hashes from MREG_BCRYPT_COST (default 12); "
        "changes are recorded in the audit log (MREG_AUDIT_LOG, default audit.log beside the users "
        "file). Access model: docs/access-control.md.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("ls", aliases=["list", "l"], help="list users, their roles and grants")
    listing.set_defaults(run=cmd_list)

    add = commands.add_parser(
        "add",
        aliases=["a", "new", "n"],
        help="add a reader, or set a new password for an existing user (its role is kept unless --role)",
        description="The password is asked twice without echo when stdin is a terminal; "
        "otherwise it is the first line of stdin (printf 'pw\\n' | manage-user add bob).",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--random", action="store_true", help="generate a strong password and print it once"
    )
    add.add_argument(
        "--role", choices=ROLES, help="reader (pull everything), admin (everything) or none (only its grants)"
    )
    add.set_defaults(run=cmd_add)

    toggle = commands.add_parser(
        "toggle", aliases=["t"], help="switch a user between reader and admin"
    )
    toggle.add_argument("name", metavar="NAME")
    toggle.set_defaults(run=cmd_toggle)

    remove = commands.add_parser("rm", aliases=["d", "del", "r"], help="remove a user")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(run=cmd_remove)

    levels = "/".join(str(level) for level in Level)
    with_target(
        commands, "grant", "PATTERN LEVEL", cmd_grant,
        help=f"give USER (or --anonymous) LEVEL ({levels}) on repositories matching PATTERN",
        description="PATTERN is a repository name, or one with * (one path component) or a final ** "
        "(any depth): team/app, team/*, team/**. The most specific matching pattern decides, over "
        "the role. Anonymous clients may only be granted pull (or none).",
    )
    with_target(commands, "revoke", "PATTERN", cmd_revoke, help="remove the grant of USER (or --anonymous) for PATTERN")

    token = commands.add_parser("token", help="CI tokens: add, ls, rm")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    token_add = token_commands.add_parser(
        "add", help="create a token and print its secret once",
        description="The token logs in with HTTP Basic: its NAME as user name, its secret as password. "
        "It has no role: only its grants.",
    )
    token_add.add_argument("name", metavar="NAME")
    token_add.add_argument(
        "--grant", action="append", required=True, metavar="PATTERN=LEVEL", help="e.g. team/app=push; repeatable"
    )
    token_add.add_argument("--expires", metavar="DURATION", help="e.g. 12h, 90d, 4w (default: never)")
    token_add.set_defaults(run=cmd_token_add)
    token_list = token_commands.add_parser("ls", aliases=["list"], help="list tokens, expiry and last use")
    token_list.set_defaults(run=cmd_token_list)
    token_remove = token_commands.add_parser("rm", aliases=["del"], help="remove a token: it stops working at once")
    token_remove.add_argument("name", metavar="NAME")
    token_remove.set_defaults(run=cmd_token_remove)

    audit_log = commands.add_parser("audit", help="show the audit log")
    audit_log.add_argument("--since", metavar="DURATION", help="only the last DURATION, e.g. 30m, 1h, 7d")
    audit_log.add_argument("--user", metavar="NAME", help="only events made by or about NAME (user or token)")
    audit_log.set_defaults(run=cmd_audit)

    with_target(
        commands, "explain", "REPOSITORY", cmd_explain,
        help="the access of USER (a user or a token) on REPOSITORY, and the rule that gives it",
    )
    add_import_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    run(PROG, build_parser(), argv, refusals=(UsersFileError,))


if __name__ == "__main__":
    main()
