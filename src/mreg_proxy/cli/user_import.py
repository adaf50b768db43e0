"""manage-user import: move the users of an htpasswd + group file setup into the YAML store.

The httpd-based registry mreg replaces kept its users in an htpasswd file (bcrypt hashes, often
``$2y$`` at cost 13) and its administrators in an Apache group file (``admin: alice bob``).
bcrypt hashes are taken over as they are, so every user keeps their password; members of the admin
group become admins, everyone else a reader. Other hash kinds (MD5 ``$apr1$``, ``{SHA}``, crypt)
cannot be verified by the proxy: those users are left out with a warning and need
``manage-user add NAME`` with a new password.

Everything is checked before anything is written; the store is then changed in one atomic write
under the same lock as every other manage-user command. Users already in the store are kept as
they are, so running the import twice changes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..config import Settings
from ..files import exclusive_lock
from ..auth.users import User, is_bcrypt_hash, name_problem, read_store, write_store
from . import Refusal, stdin_is_absent, warn
from .command import audit

PROG = "manage-user"
MAX_FILE_BYTES = 1 << 20  # about 14,000 bcrypt entries: far more than a team has
DEFAULT_ADMIN_GROUP = "admin"

# What other htpasswd hash kinds look like, to name them in the warning.
_OTHER_HASHES = (("$apr1$", "MD5 ($apr1$)"), ("{SHA}", "SHA-1 ({SHA})"), ("$5$", "SHA-256 crypt"),
                 ("$6$", "SHA-512 crypt"), ("$1$", "MD5 crypt"))


@dataclass(frozen=True)
class Entry:
    name: str
    password_hash: str


def hash_kind(password_hash: str) -> str:
    for prefix, kind in _OTHER_HASHES:
        if password_hash.startswith(prefix):
            return kind
    return "not bcrypt (crypt or plain text)"


def _lines(data: bytes, source: str) -> list[tuple[int, str]]:
    """(line number, text) of every line that is not blank or a comment."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(f"{source} is not UTF-8 text") from None
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]


def parse_htpasswd(data: bytes, source: str) -> tuple[list[Entry], dict[str, str]]:
    """(bcrypt entries, name -> hash kind of the users left out). A malformed line, a bad name or a
    name listed twice refuses the whole file: guessing which line was meant could lock someone out."""
    entries: list[Entry] = []
    skipped: dict[str, str] = {}
    seen: set[str] = set()
    for number, line in _lines(data, source):
        name, colon, password_hash = line.partition(":")
        if not colon or not password_hash:
            raise Refusal(f"{source} line {number}: expected NAME:HASH")
        problem = name_problem(name)
        if problem:
            raise Refusal(f"{source} line {number}: {problem}")
        if name in seen:
            raise Refusal(f"{source} line {number}: {name!r} is listed twice")
        seen.add(name)
        if is_bcrypt_hash(password_hash):
            entries.append(Entry(name, password_hash))
        else:
            skipped[name] = hash_kind(password_hash)
    return entries, skipped


def parse_groups(data: bytes, source: str) -> dict[str, set[str]]:
    """An Apache group file (``GROUP: USER USER ...``) as group -> members."""
    groups: dict[str, set[str]] = {}
    for number, line in _lines(data, source):
        group, colon, members = line.partition(":")
        if not colon or not group.strip():
            raise Refusal(f"{source} line {number}: expected GROUP: USER USER ...")
        groups.setdefault(group.strip(), set()).update(members.split())
    return groups


def admin_members(groups: dict[str, set[str]], wanted: str | None, source: str) -> set[str]:
    """The members of the admin group: the one named, else the only group, else ``admin``."""
    if wanted is None and len(groups) == 1:
        return next(iter(groups.values()))
    name = wanted or DEFAULT_ADMIN_GROUP
    if name not in groups:
        found = ", ".join(sorted(groups)) or "none"
        raise Refusal(f"{source} has no group {name!r} (groups: {found}); name it with --admin-group")
    return groups[name]


def read_source(path: str, what: str) -> tuple[bytes, str]:
    """(bytes, name for messages) of a file, or of stdin for ``-``; at most MAX_FILE_BYTES."""
    if path == "-":
        if sys.stdin.isatty() or stdin_is_absent():
            raise Refusal(f"no {what} on stdin: pipe it in ('podman exec -i ... {PROG} import - < htpasswd')")
        return _bounded(sys.stdin.buffer, "stdin"), "stdin"
    with Path(path).open("rb") as handle:
        return _bounded(handle, path), path


def _bounded(handle: BinaryIO, source: str) -> bytes:
    data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise Refusal(f"{source} is larger than {MAX_FILE_BYTES} bytes; is it really an htpasswd file?")
    return data


def cmd_import(settings: Settings, args: argparse.Namespace) -> None:
    if args.htpasswd == "-" and args.group_file == "-":
        raise Refusal("only one of HTPASSWD and --group-file can be read from stdin")
    data, source = read_source(args.htpasswd, "htpasswd file")
    entries, skipped = parse_htpasswd(data, source)
    admins: set[str] = set()
    if args.group_file:
        group_data, group_source = read_source(args.group_file, "group file")
        admins = admin_members(parse_groups(group_data, group_source), args.admin_group, group_source)
    elif args.admin_group:
        raise Refusal("--admin-group needs --group-file")
    path = settings.users_file
    with exclusive_lock(path):
        store = read_store(path)  # grants, tokens and anonymous access are kept as they are
        users = dict(store.users)
        added = [e for e in entries if e.name not in users and e.name not in store.tokens]
        for entry in added:
            role = "admin" if entry.name in admins else "reader"
            users[entry.name] = User(entry.name, role, entry.password_hash)
        if added:
            write_store(path, dataclasses.replace(store, users=users))
    added_names = {entry.name for entry in added}
    for entry in entries:
        if entry.name in added_names:
            print(f"added {entry.name} ({users[entry.name].role})")
            audit(settings, "user_added", user=entry.name, role=users[entry.name].role, source=source)
        elif entry.name in store.tokens:
            warn(PROG, f"left out {entry.name}: a CI token has that name")
        else:
            print(f"kept {entry.name} ({users[entry.name].role}): already in {path}")
    for name, kind in skipped.items():
        warn(PROG, f"left out {name}: the hash is {kind}, which mreg cannot check; "
                   f"give {name} a new password with '{PROG} add {name}'")
    for name in sorted(admins - {e.name for e in entries} - set(skipped)):
        warn(PROG, f"admin {name} of the group file is not in {source}")
    print(f"imported {len(added)} of {len(entries) + len(skipped)} users from {source} into {path}")


def add_import_command(commands: argparse._SubParsersAction) -> None:
    """The ``import`` subcommand of manage-user."""
    parser = commands.add_parser(
        "import",
        help="add the users of an htpasswd file (bcrypt hashes kept as they are); "
        "members of the admin group of --group-file become admins",
        description="Read an htpasswd file (or '-' for stdin) and add its users to the store with "
        "their bcrypt hashes unchanged: everyone keeps their password. Users in the admin group of "
        "--group-file (Apache format, 'GROUP: USER USER ...') become admins, the others readers. "
        "Users already in the store are kept as they are.",
    )
    parser.add_argument("htpasswd", metavar="HTPASSWD", help="the htpasswd file, or - for stdin")
    parser.add_argument("--group-file", metavar="FILE", help="Apache group file naming the admins")
    parser.add_argument(
        "--admin-group", metavar="NAME",
        help=f"the group of admins (default: the only group in the file, else {DEFAULT_ADMIN_GROUP!r})",
    )
    parser.set_defaults(run=cmd_import)
