"""manage-user: list, add, toggle and remove the users in the proxy's YAML user store.

Runs inside the auth container and edits the file the running proxy reads; the proxy notices
the change by itself. Every change is a read-modify-write under an exclusive lock, written
atomically with mode 0600, so concurrent invocations never lose each other's users. A users file
that cannot be read or parsed is refused and left exactly as it is.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from pathlib import Path
from typing import Sequence

import bcrypt

from ..authn import BCRYPT_MAX_BYTES
from ..config import Settings
from ..files import exclusive_lock
from ..users import ROLES, User, UsersFileError, name_problem, read_users_file, write_users_file
from . import OneLineParser, Refusal, stdin_is_absent
from .command import run
from .user_import import add_import_command

PROG = "manage-user"
RANDOM_PASSWORD_BYTES = 24  # 192 bits, 32 URL-safe characters: well under bcrypt's 72 bytes



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


def cmd_list(settings: Settings, args: argparse.Namespace) -> None:
    users = read_users_file(settings.users_file)
    if not users:
        print(f"no users in {settings.users_file}; add one with: {PROG} add NAME")
        return
    width = max(len(name) for name in users)
    for name in sorted(users):
        print(f"{name:<{width}}  {users[name].role}")


def cmd_add(settings: Settings, args: argparse.Namespace) -> None:
    name = checked_name(args.name)
    path = settings.users_file
    read_users_file(path)  # refuse a broken file before the operator types a password for nothing
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
        users = read_users_file(path)
        existing = users.get(name)
        role = existing.role if existing else ROLES[0]
        users[name] = User(name, role, password_hash)
        write_users_file(path, users)
    if existing:
        print(f"set a new password for {name} ({role})")
    else:
        print(f"added {name} ({role})")
    if args.random:
        print(f"password: {password}")
        print("it is shown only this once: only its bcrypt hash is stored")


def cmd_toggle(settings: Settings, args: argparse.Namespace) -> None:
    name = checked_name(args.name)
    path = settings.users_file
    with exclusive_lock(path):
        users = read_users_file(path)
        user = existing_user(users, name, path)
        role = "admin" if user.role == "reader" else "reader"
        users[name] = User(name, role, user.password_hash)
        write_users_file(path, users)
    rights = "may pull, push and delete" if role == "admin" else "may only pull"
    print(f"{name} is now {role} ({rights})")


def cmd_remove(settings: Settings, args: argparse.Namespace) -> None:
    name = checked_name(args.name)
    path = settings.users_file
    with exclusive_lock(path):
        users = read_users_file(path)
        existing_user(users, name, path)
        del users[name]
        write_users_file(path, users)
    print(f"removed {name}")


def existing_user(users: dict[str, User], name: str, path: Path) -> User:
    user = users.get(name)
    if user is None:
        raise Refusal(f"no user {name!r} in {path}")
    return user


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Manage the users of the mreg registry. The running proxy picks changes up by "
        "itself. The users file comes from MREG_USERS_FILE (default /auth/users.yml); the bcrypt "
        "cost of new hashes from MREG_BCRYPT_COST (default 12).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("ls", aliases=["list", "l"], help="list users and their roles")
    listing.set_defaults(run=cmd_list)

    add = commands.add_parser(
        "add",
        aliases=["a", "new", "n"],
        help="add a reader, or set a new password for an existing user (its role is kept)",
        description="The password is asked twice without echo when stdin is a terminal; "
        "otherwise it is the first line of stdin (printf 'pw\\n' | manage-user add bob).",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--random", action="store_true", help="generate a strong password and print it once"
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

    add_import_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    run(PROG, build_parser(), argv, refusals=(UsersFileError,))


if __name__ == "__main__":
    main()
