"""The YAML user store: parse and validate, reload on change, and write atomically.

File format (only ``users`` is required; docs/access-control.md explains the access model)::

    users:
      bob:
        role: reader            # reader | admin | none
        password_hash: "$2b$12$..."
        grants:                 # optional: repository pattern -> none | pull | push | delete
          team/*: push
    anonymous:                  # optional: what clients without credentials may pull
      public/**: pull
    tokens:                     # optional: CI tokens (Basic user name = token name)
      ci-app:
        secret_hash: "hmac-sha256$...$..."
        grants: {team/app: push}
        created: "2026-12-02T15:00:00Z"
        expires: "2027-03-02T15:00:00Z"   # optional: never expires without it

A file that does not parse or validate is rejected whole. The proxy keeps its last good copy; the
CLIs refuse to touch it. The file is a stranger's input too (anyone who can write the auth volume):
it may be at most MAX_FILE_BYTES, YAML aliases are refused (a few hundred bytes of nested aliases
expand to gigabytes), and errors quote at most a short escaped prefix of any value.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..escape import escaped
from ..files import LiveFile, atomic_write, exclusive_lock, read_limited
from .grants import Grant, GrantError, Level, checked_pattern, parse_level
from .tokens import is_secret_hash, parse_utc, utc_text

log = logging.getLogger("mreg.users")

ROLES = ("reader", "admin", "none")  # the first is what ``manage-user add`` gives by default
MAX_NAME_LENGTH = 64
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_TOP_KEYS = frozenset({"users", "anonymous", "tokens"})
_ENTRY_KEYS = frozenset({"role", "password_hash", "grants"})
_TOKEN_KEYS = frozenset({"secret_hash", "grants", "created", "expires"})
ANONYMOUS_LEVELS = (Level.NONE, Level.PULL)  # clients without credentials never write
MAX_FILE_BYTES = 1 << 20  # ~9,000 users; parsing that much takes about a second, in a thread
QUOTE_LIMIT = 32  # characters of a bad value shown in an error


class UsersFileError(ValueError):
    """The users file cannot be used; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    password_hash: str
    grants: tuple[Grant, ...] = ()


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    secret_hash: str
    grants: tuple[Grant, ...]
    created: datetime.datetime
    expires: datetime.datetime | None = None  # None: never

    def expired(self, now: datetime.datetime) -> bool:
        return self.expires is not None and now >= self.expires


@dataclass(frozen=True, slots=True)
class Store:
    """Everything the users file holds."""

    users: Mapping[str, User] = field(default_factory=dict)
    tokens: Mapping[str, Token] = field(default_factory=dict)
    anonymous: tuple[Grant, ...] = ()


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
    return load_yaml(text, UsersFileError)


def load_yaml(text: str, error: type[ValueError]) -> object:
    """The document in ``text``, without aliases; ``error`` names the first problem (the users and
    the policy file share this: both are edited by hand and read by the proxy)."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        # where and what, without PyYAML's snippet of the file: it can quote a password hash
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise error(f"not valid YAML{where}: {escaped(problem, 80)}") from None
    except RecursionError:
        raise error("not valid YAML: nested too deeply") from None


def parse_users(text: str) -> dict[str, User]:
    """The users of the document (see parse_store)."""
    return dict(parse_store(text).users)


def parse_store(text: str) -> Store:
    """Validate the whole document; raise UsersFileError naming the first problem."""
    doc = _load_yaml(text)
    if doc is None:
        return Store()
    if not isinstance(doc, dict) or "users" not in doc or set(doc) - _TOP_KEYS:
        raise UsersFileError("expected a mapping with the key 'users' (and optionally 'anonymous', 'tokens')")
    users = {name: _parse_user(name, entry) for name, entry in _mapping(doc, "users", "user names to entries")}
    anonymous = _parse_grants("anonymous", doc.get("anonymous"))
    for grant in anonymous:
        if grant.level not in ANONYMOUS_LEVELS:
            raise UsersFileError(f"anonymous: {grant.pattern}: anonymous access is pull or none, not {grant.level}")
    tokens = {name: _parse_token(name, entry) for name, entry in _mapping(doc, "tokens", "token names to entries")}
    for name in tokens:
        if name in users:
            raise UsersFileError(f"token {_shown(name)}: a user has that name (tokens log in by name)")
    return Store(users, tokens, anonymous)


def _mapping(doc: dict[Any, Any], key: str, what: str) -> list[tuple[str, Any]]:
    entries = doc.get(key) or {}
    if not isinstance(entries, dict):
        raise UsersFileError(f"'{key}' must map {what}")
    for name in entries:
        if not isinstance(name, str):
            raise UsersFileError(f"{key[:-1]} name {_shown(name)} is not a string")
        problem = name_problem(name)
        if problem:
            raise UsersFileError(f"{key[:-1]} {_shown(name)}: {problem}")
    return list(entries.items())


def _parse_user(name: str, entry: object) -> User:
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
    return User(name, role, password_hash, _parse_grants(f"user {_shown(name)}", entry.get("grants")))


def _parse_token(name: str, entry: object) -> Token:
    where = f"token {_shown(name)}"
    if not isinstance(entry, dict):
        raise UsersFileError(f"{where}: entry must be a mapping with secret_hash, grants and created")
    unknown = set(entry) - _TOKEN_KEYS
    if unknown:
        raise UsersFileError(f"{where}: unknown key {_shown(min(map(str, unknown)))}")
    if not is_secret_hash(entry.get("secret_hash")):
        raise UsersFileError(f"{where}: secret_hash is not an hmac-sha256 token hash")
    try:
        created = parse_utc(entry.get("created"))
        expires = None if entry.get("expires") is None else parse_utc(entry["expires"])
    except ValueError as exc:
        raise UsersFileError(f"{where}: {exc}") from None
    return Token(name, entry["secret_hash"], _parse_grants(where, entry.get("grants")), created, expires)


def _parse_grants(where: str, entries: object) -> tuple[Grant, ...]:
    """``{pattern: level}`` -> grants, sorted by pattern so that equal files compare equal."""
    if entries is None:
        return ()
    if not isinstance(entries, dict):
        raise UsersFileError(f"{where}: grants must map repository patterns to access levels")
    try:
        return tuple(
            Grant(checked_pattern(pattern), parse_level(level)) for pattern, level in sorted(entries.items(), key=str)
        )
    except GrantError as exc:
        raise UsersFileError(f"{where}: {exc}") from None


def _dump_grants(grants: tuple[Grant, ...]) -> dict[str, str]:
    return {grant.pattern: str(grant.level) for grant in grants}


def dump_store(store: Store) -> str:
    users: dict[str, Any] = {}
    for name, user in sorted(store.users.items()):
        entry: dict[str, Any] = {"role": user.role, "password_hash": user.password_hash}
        if user.grants:
            entry["grants"] = _dump_grants(user.grants)
        users[name] = entry
    doc: dict[str, Any] = {"users": users}
    if store.anonymous:
        doc["anonymous"] = _dump_grants(store.anonymous)
    if store.tokens:
        doc["tokens"] = {
            name: {
                "secret_hash": token.secret_hash,
                "grants": _dump_grants(token.grants),
                "created": utc_text(token.created),
                **({"expires": utc_text(token.expires)} if token.expires else {}),
            }
            for name, token in sorted(store.tokens.items())
        }
    return yaml.safe_dump(doc, default_flow_style=False, sort_keys=False)


def dump_users(users: Mapping[str, User]) -> str:
    return dump_store(Store(users))


def read_users_file(path: Path) -> dict[str, User]:
    """The users in ``path``; a missing file is an empty store."""
    return dict(read_store(path).users)


def read_store(path: Path) -> Store:
    """Everything in ``path``; a missing file is an empty store."""
    text = read_limited(path, MAX_FILE_BYTES, UsersFileError)
    if text is None:
        return Store()
    try:
        return parse_store(text)
    except UsersFileError as exc:
        raise UsersFileError(f"{path}: {exc}") from None


def write_users_file(path: Path, users: Mapping[str, User]) -> None:
    """A users file holding only ``users`` (no tokens, no anonymous grants): for fresh files."""
    write_store(path, Store(users))


def write_store(path: Path, store: Store) -> None:
    atomic_write(path, dump_store(store).encode("utf-8"), mode=0o600)


def replace_password_hash(path: Path, name: str, old: str, new: str) -> bool:
    """Give ``name`` the password hash ``new`` if the file still holds ``old`` for it.

    The file is re-read under the CLIs' lock and only that one hash changes, so an edit made since
    the proxy last read it (a new user, a role, a new password) is never lost. False when the entry
    changed or is gone. OSError when the file cannot be written; a symlink counts as such: a mounted
    Secret (tests/secretmount.py) belongs to the kubelet, and replacing the link by a file would
    also cut it off from later updates.
    """
    if path.is_symlink():
        raise OSError(errno.EROFS, "a symlink (a mounted Secret?) is never replaced", str(path))
    with exclusive_lock(path):
        store = read_store(path)
        user = store.users.get(name)
        if user is None or user.password_hash != old:
            return False
        users = {**store.users, name: dataclasses.replace(user, password_hash=new)}
        write_store(path, dataclasses.replace(store, users=users))
    return True


class UserStore(LiveFile[Store]):
    """The proxy's live view of the users file: users, tokens and anonymous grants (a Store).

    ``fresh()`` / ``fresh_store()`` (on the event loop) and ``current()`` / ``snapshot()``
    (anywhere else): see LiveFile. A missing file means no users.
    """

    kind = "users file"
    when_gone = "no user can log in"
    error = UsersFileError

    def __init__(self, path: Path) -> None:
        super().__init__(path, Store(), log)

    def read(self, path: Path) -> Store:
        return read_store(path)

    def describe(self, value: Store) -> str:
        return f"{len(value.users)} users and {len(value.tokens)} tokens"

    def current(self) -> Mapping[str, User]:
        return self.snapshot().users

    def refresh(self) -> None:
        self.snapshot()

    async def fresh(self) -> Mapping[str, User]:
        return (await self.latest()).users

    async def fresh_store(self) -> Store:
        return await self.latest()
