"""The YAML user store: parse and validate, reload on change, and write atomically.

File format::

    users:
      bob:
        role: reader            # reader | admin
        password_hash: "$2b$12$..."

A file that does not parse or validate is rejected whole. The proxy keeps its last good copy; the
CLIs refuse to touch it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import yaml

from .files import atomic_write, signature

log = logging.getLogger("mreg.users")

ROLES = ("reader", "admin")
MAX_NAME_LENGTH = 64
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_ENTRY_KEYS = frozenset({"role", "password_hash"})


class UsersFileError(ValueError):
    """The users file cannot be used; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    password_hash: str


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a user name, or None when it can."""
    if not name:
        return "user name is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"user name is longer than {MAX_NAME_LENGTH} characters"
    if ":" in name:
        return "user name contains ':' (HTTP Basic splits on it)"
    if any(ch.isspace() or not ch.isprintable() for ch in name):
        return "user name contains whitespace or control characters"
    return None


def is_bcrypt_hash(value: object) -> bool:
    return isinstance(value, str) and _BCRYPT_HASH.fullmatch(value) is not None


def parse_users(text: str) -> dict[str, User]:
    """Validate the whole document; raise UsersFileError naming the first problem."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # where and what, without PyYAML's snippet of the file: it can quote a password hash
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise UsersFileError(f"not valid YAML{where}: {problem}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict) or set(doc) - {"users"}:
        raise UsersFileError("expected a mapping with the single key 'users'")
    entries = doc.get("users") or {}
    if not isinstance(entries, dict):
        raise UsersFileError("'users' must map user names to entries")
    users: dict[str, User] = {}
    for name, entry in entries.items():
        if not isinstance(name, str):
            raise UsersFileError(f"user name {name!r} is not a string")
        problem = name_problem(name)
        if problem:
            raise UsersFileError(f"user {name!r}: {problem}")
        if not isinstance(entry, dict):
            raise UsersFileError(f"user {name!r}: entry must be a mapping with role and password_hash")
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise UsersFileError(f"user {name!r}: unknown keys {sorted(map(str, unknown))}")
        role = entry.get("role")
        if role not in ROLES:
            raise UsersFileError(f"user {name!r}: role must be one of {', '.join(ROLES)}, not {role!r}")
        password_hash = entry.get("password_hash")
        if not is_bcrypt_hash(password_hash):
            raise UsersFileError(f"user {name!r}: password_hash is not a bcrypt hash")
        users[name] = User(name, role, password_hash)
    return users


def dump_users(users: Mapping[str, User]) -> str:
    doc = {
        "users": {
            name: {"role": user.role, "password_hash": user.password_hash}
            for name, user in sorted(users.items())
        }
    }
    return yaml.safe_dump(doc, default_flow_style=False, sort_keys=False)


def read_users_file(path: Path) -> dict[str, User]:
    """The users in ``path``; a missing file is an empty store."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise UsersFileError(f"cannot read {path}: {exc}") from None
    try:
        return parse_users(text)
    except UsersFileError as exc:
        raise UsersFileError(f"{path}: {exc}") from None


def write_users_file(path: Path, users: Mapping[str, User]) -> None:
    atomic_write(path, dump_users(users).encode("utf-8"), mode=0o600)


class UserStore:
    """The proxy's live view of the users file.

    ``current()`` stats the file (cheap) and re-reads it only when its identity, size or times
    changed, so edits take effect on the next request. A broken edit is logged once and the last
    good copy stays in force; a missing file means no users.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, ...] | None = None
        self._users: Mapping[str, User] = {}

    def current(self) -> Mapping[str, User]:
        self.refresh()
        return self._users

    def refresh(self) -> None:
        try:
            current = signature(self.path)
        except OSError as exc:
            log.error("cannot stat users file %s: %s; keeping the last good copy", self.path, exc)
            return
        if current is None:
            if self._signature != ():
                if self._signature is not None:
                    log.warning("users file %s is gone: no user can log in", self.path)
                self._signature = ()
                self._users = {}
            return
        if current == self._signature:
            return
        self._signature = current
        try:
            users = read_users_file(self.path)
        except UsersFileError as exc:
            log.error("rejected users file: %s; keeping the last good copy (%d users)", exc, len(self._users))
            return
        self._users = users
        log.info("loaded %d users from %s", len(users), self.path)
