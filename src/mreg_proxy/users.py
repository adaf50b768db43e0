"""The YAML user store: parse and validate, reload on change, and write atomically.

File format::

    users:
      bob:
        role: reader            # reader | admin
        password_hash: "$2b$12$..."

A file that does not parse or validate is rejected whole. The proxy keeps its last good copy; the
CLIs refuse to touch it. The file is a stranger's input too (anyone who can write the auth volume):
it may be at most MAX_FILE_BYTES, YAML aliases are refused (a few hundred bytes of nested aliases
expand to gigabytes), and errors quote at most a short escaped prefix of any value.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import yaml

from .escape import escaped
from .files import atomic_write, signature

log = logging.getLogger("mreg.users")

ROLES = ("reader", "admin")
MAX_NAME_LENGTH = 64
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_ENTRY_KEYS = frozenset({"role", "password_hash"})
MAX_FILE_BYTES = 1 << 20  # ~9,000 users; parsing that much takes about a second, in a thread
QUOTE_LIMIT = 32  # characters of a bad value shown in an error


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


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load without aliases: the users file never needs them (dump_users writes none)."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed", self.peek_event().start_mark
            )
        return super().compose_node(parent, index)  # type: ignore[no-any-return]


def _shown(value: object) -> str:
    """A bad value as an error may show it: a short escaped prefix of a string, else its type."""
    if isinstance(value, str):
        return f"'{escaped(value, QUOTE_LIMIT)}'"
    if isinstance(value, (int, float, bool)) or value is None:
        return escaped(str(value), QUOTE_LIMIT)
    return f"a {type(value).__name__}"


def _load_yaml(text: str) -> object:
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        # where and what, without PyYAML's snippet of the file: it can quote a password hash
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise UsersFileError(f"not valid YAML{where}: {escaped(problem, 80)}") from None
    except RecursionError:
        raise UsersFileError("not valid YAML: nested too deeply") from None


def parse_users(text: str) -> dict[str, User]:
    """Validate the whole document; raise UsersFileError naming the first problem."""
    doc = _load_yaml(text)
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
            raise UsersFileError(f"user name {_shown(name)} is not a string")
        problem = name_problem(name)
        if problem:
            raise UsersFileError(f"user {_shown(name)}: {problem}")
        if not isinstance(entry, dict):
            raise UsersFileError(f"user {_shown(name)}: entry must be a mapping with role and password_hash")
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise UsersFileError(f"user {_shown(name)}: unknown key {_shown(min(map(str, unknown)))}")
        role = entry.get("role")
        if role not in ROLES:
            raise UsersFileError(f"user {_shown(name)}: role must be one of {', '.join(ROLES)}, not {_shown(role)}")
        password_hash = entry.get("password_hash")
        if not is_bcrypt_hash(password_hash):
            raise UsersFileError(f"user {_shown(name)}: password_hash is not a bcrypt hash")
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
        # O_NONBLOCK: a FIFO put in the file's place must not hang the reader; fstat refuses it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsersFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsersFileError(f"cannot read {path}: not a regular file")
    with open(fd, "rb") as handle:
        try:
            data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise UsersFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise UsersFileError(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsersFileError(f"{path}: not UTF-8 (byte {exc.start})") from None
    try:
        return parse_users(text)
    except UsersFileError as exc:
        raise UsersFileError(f"{path}: {exc}") from None


def write_users_file(path: Path, users: Mapping[str, User]) -> None:
    atomic_write(path, dump_users(users).encode("utf-8"), mode=0o600)


class UserStore:
    """The proxy's live view of the users file.

    ``fresh()`` (on the event loop) and ``current()`` (anywhere else) stat the file (cheap) and
    re-read it only when its identity, size or times changed, so edits take effect on the next
    request. ``fresh()`` reads and parses in a thread, one read at a time, so that no file stalls
    the loop. A broken edit is logged once and the last good copy stays in force; a missing file
    means no users.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, ...] | None = None
        self._users: Mapping[str, User] = {}
        self._loading: asyncio.Future[None] | None = None

    def current(self) -> Mapping[str, User]:
        self.refresh()
        return self._users

    def refresh(self) -> None:
        if self._stale():
            self._apply(_outcome(self.path))

    async def fresh(self) -> Mapping[str, User]:
        if self._loading is None and self._stale():
            outcome = asyncio.ensure_future(asyncio.to_thread(_outcome, self.path))
            self._loading = asyncio.ensure_future(self._finish(outcome))
        if self._loading is not None:
            await asyncio.shield(self._loading)  # a client hanging up does not cancel the read
        return self._users

    async def _finish(self, outcome: asyncio.Future[Mapping[str, User] | UsersFileError]) -> None:
        try:
            self._apply(await outcome)
        finally:
            self._loading = None

    def _stale(self) -> bool:
        """True when the file must be (re-)read; a file that is gone empties the store here."""
        try:
            current = signature(self.path)
        except OSError as exc:
            log.error("cannot stat users file %s: %s; keeping the last good copy", self.path, exc)
            return False
        if current is None:
            if self._signature != ():
                if self._signature is not None:
                    log.warning("users file %s is gone: no user can log in", self.path)
                self._signature = ()
                self._users = {}
            return False
        if current == self._signature:
            return False
        self._signature = current  # a broken file is reported once, not on every request
        return True

    def _apply(self, outcome: Mapping[str, User] | UsersFileError) -> None:
        if isinstance(outcome, UsersFileError):
            log.error("rejected users file: %s; keeping the last good copy (%d users)", outcome, len(self._users))
            return
        self._users = outcome
        log.info("loaded %d users from %s", len(outcome), self.path)


def _outcome(path: Path) -> Mapping[str, User] | UsersFileError:
    try:
        return read_users_file(path)
    except UsersFileError as exc:
        return exc
