"""The policy file: retention rules and immutable tags, parsed, validated, reloaded and written.

File format (both keys optional; docs/retention.md explains the rules)::

    retention:                  # repository pattern -> what survives a retention run
      ci/app:
        keep_last: 5            # the 5 most recently pushed tags
        keep_tags: ["v*", "latest"]
        pushed_within: 14d
        pulled_within: 30d
        allow_empty: false      # true: the rule may delete every tag of a repository
    immutable:                  # repository pattern -> tag globs that, once pushed, never move
      ci/**: ["v*"]

Patterns are the grants' (auth/grants.py): ``team/app``, ``team/*``, ``team/**``. For retention
the most specific matching rule decides (as for grants; a tie goes to the pattern that sorts
first); a repository no rule matches is never touched. A tag is immutable when any matching
immutable rule lists a glob it matches: a more specific rule cannot take a protection away.

The file is read like the users file (auth/users.py): at most MAX_FILE_BYTES, no YAML aliases,
rejected whole when anything is wrong; the proxy keeps its last good copy.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..auth.grants import GrantError, checked_pattern, matches, specificity
from ..auth.tokens import parse_duration
from ..auth.users import load_yaml
from ..escape import escaped
from ..files import LiveFile, atomic_write, read_limited

log = logging.getLogger("mreg.policy")

MAX_FILE_BYTES = 256 * 1024  # thousands of rules; more is a mistake, not a policy
MAX_GLOBS = 64  # tag globs per rule
MAX_KEEP_LAST = 100_000
_TAG_GLOB = re.compile(r"[A-Za-z0-9_.*?-]{1,128}")
_DURATION_TEXT = re.compile(r"[1-9][0-9]{0,5}[mhdw]")
_TOP_KEYS = frozenset({"retention", "immutable"})
_RULE_KEYS = frozenset({"keep_last", "keep_tags", "pushed_within", "pulled_within", "allow_empty"})


class PolicyFileError(ValueError):
    """The policy file (or a rule for it) cannot be used; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class RetentionRule:
    pattern: str
    keep_last: int | None = None
    keep_tags: tuple[str, ...] = ()
    pushed_within: str | None = None  # a duration as written (14d); parse_duration reads it
    pulled_within: str | None = None
    allow_empty: bool = False

    def clauses(self) -> list[str]:
        """The clauses as the operator wrote them, for ls and the dry run."""
        parts = []
        if self.keep_last is not None:
            parts.append(f"keep-last {self.keep_last}")
        parts.extend(f"keep-tag {glob}" for glob in self.keep_tags)
        if self.pushed_within:
            parts.append(f"pushed-within {self.pushed_within}")
        if self.pulled_within:
            parts.append(f"pulled-within {self.pulled_within}")
        if self.allow_empty:
            parts.append("allow-empty")
        return parts


@dataclass(frozen=True, slots=True)
class ImmutableRule:
    pattern: str
    tags: tuple[str, ...]

    def __str__(self) -> str:
        return f"immutable {self.pattern} {' '.join(self.tags)}"


@dataclass(frozen=True, slots=True)
class Policy:
    retention: tuple[RetentionRule, ...] = ()
    immutable: tuple[ImmutableRule, ...] = ()

    def retention_rule(self, repository: str) -> RetentionRule | None:
        """The rule that decides for ``repository``: the most specific match (grants' order)."""
        found = [rule for rule in self.retention if matches(rule.pattern, repository)]
        if not found:
            return None
        return min(found, key=lambda rule: (_negated(specificity(rule.pattern)), rule.pattern))

    def immutable_rule(self, repository: str, tag: str) -> ImmutableRule | None:
        """The (most specific) rule that makes ``repository:tag`` immutable, or None."""
        found = [
            rule for rule in self.immutable
            if matches(rule.pattern, repository) and any(glob_matches(glob, tag) for glob in rule.tags)
        ]
        if not found:
            return None
        return min(found, key=lambda rule: (_negated(specificity(rule.pattern)), rule.pattern))


def _negated(key: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(-part for part in key)


def glob_matches(glob: str, tag: str) -> bool:
    """``*`` stands for any run of tag characters, ``?`` for one; everything else is itself."""
    return _glob_regex(glob).fullmatch(tag) is not None


@functools.lru_cache(maxsize=1024)
def _glob_regex(glob: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in glob))


def checked_glob(glob: object) -> str:
    if not isinstance(glob, str) or not _TAG_GLOB.fullmatch(glob):
        raise PolicyFileError(
            f"tag glob {_shown(glob)}: tag characters (letters, digits, _ . -) with * and ?, at most 128"
        )
    return glob


def checked_duration(text: object, what: str) -> str:
    if not isinstance(text, str) or not _DURATION_TEXT.fullmatch(text):
        raise PolicyFileError(f"{what} {_shown(text)}: expected a duration like 12h, 14d or 4w")
    parse_duration(text)
    return text


def checked_rule_pattern(pattern: object) -> str:
    try:
        return checked_pattern(pattern)
    except GrantError as exc:
        raise PolicyFileError(str(exc)) from None


def make_retention_rule(
    pattern: object,
    keep_last: object = None,
    keep_tags: object = (),
    pushed_within: object = None,
    pulled_within: object = None,
    allow_empty: object = False,
) -> RetentionRule:
    """A validated rule; PolicyFileError names the first problem."""
    where = f"retention {_shown(pattern)}"
    pattern = checked_rule_pattern(pattern)
    if keep_last is not None and (
        isinstance(keep_last, bool) or not isinstance(keep_last, int) or not 1 <= keep_last <= MAX_KEEP_LAST
    ):
        raise PolicyFileError(f"{where}: keep_last must be a whole number from 1 to {MAX_KEEP_LAST}")
    if keep_tags is None:
        keep_tags = ()
    if not isinstance(keep_tags, (list, tuple)) or len(keep_tags) > MAX_GLOBS:
        raise PolicyFileError(f"{where}: keep_tags must be a list of at most {MAX_GLOBS} tag globs")
    try:
        globs = tuple(dict.fromkeys(checked_glob(glob) for glob in keep_tags))
        pushed = None if pushed_within is None else checked_duration(pushed_within, "pushed_within")
        pulled = None if pulled_within is None else checked_duration(pulled_within, "pulled_within")
    except PolicyFileError as exc:
        raise PolicyFileError(f"{where}: {exc}") from None
    if not isinstance(allow_empty, bool):
        raise PolicyFileError(f"{where}: allow_empty must be true or false")
    if keep_last is None and not globs and pushed is None and pulled is None:
        # a rule without a clause would delete every tag: that is never what an operator means
        raise PolicyFileError(f"{where}: give at least one of keep_last, keep_tags, pushed_within, pulled_within")
    return RetentionRule(pattern, keep_last, globs, pushed, pulled, allow_empty)


def make_immutable_rule(pattern: object, tags: object) -> ImmutableRule:
    where = f"immutable {_shown(pattern)}"
    pattern = checked_rule_pattern(pattern)
    if not isinstance(tags, (list, tuple)) or not tags or len(tags) > MAX_GLOBS:
        raise PolicyFileError(f"{where}: expected a list of 1 to {MAX_GLOBS} tag globs")
    try:
        return ImmutableRule(pattern, tuple(dict.fromkeys(checked_glob(glob) for glob in tags)))
    except PolicyFileError as exc:
        raise PolicyFileError(f"{where}: {exc}") from None


def _shown(value: object) -> str:
    if isinstance(value, str):
        return f"'{escaped(value, 32)}'"
    if isinstance(value, (int, float, bool)) or value is None:
        return escaped(str(value), 32)
    return f"a {type(value).__name__}"


def parse_policy(text: str) -> Policy:
    doc = load_yaml(text, PolicyFileError)
    if doc is None:
        return Policy()
    if not isinstance(doc, dict) or set(doc) - _TOP_KEYS:
        raise PolicyFileError("expected a mapping with the keys 'retention' and/or 'immutable'")
    retention = []
    for pattern, entry in _entries(doc, "retention"):
        if not isinstance(entry, dict):
            raise PolicyFileError(f"retention {_shown(pattern)}: the rule must be a mapping")
        unknown = set(entry) - _RULE_KEYS
        if unknown:
            raise PolicyFileError(f"retention {_shown(pattern)}: unknown key {_shown(min(map(str, unknown)))}")
        retention.append(make_retention_rule(pattern, **entry))
    immutable = [make_immutable_rule(pattern, tags) for pattern, tags in _entries(doc, "immutable")]
    return Policy(tuple(retention), tuple(immutable))


def _entries(doc: dict[Any, Any], key: str) -> list[tuple[Any, Any]]:
    entries = doc.get(key) or {}
    if not isinstance(entries, dict):
        raise PolicyFileError(f"'{key}' must map repository patterns to rules")
    return sorted(entries.items(), key=lambda item: str(item[0]))


def dump_policy(policy: Policy) -> str:
    doc: dict[str, Any] = {}
    if policy.retention:
        rules: dict[str, Any] = {}
        for rule in sorted(policy.retention, key=lambda r: r.pattern):
            entry: dict[str, Any] = {}
            if rule.keep_last is not None:
                entry["keep_last"] = rule.keep_last
            if rule.keep_tags:
                entry["keep_tags"] = list(rule.keep_tags)
            if rule.pushed_within:
                entry["pushed_within"] = rule.pushed_within
            if rule.pulled_within:
                entry["pulled_within"] = rule.pulled_within
            if rule.allow_empty:
                entry["allow_empty"] = True
            rules[rule.pattern] = entry
        doc["retention"] = rules
    if policy.immutable:
        doc["immutable"] = {rule.pattern: list(rule.tags) for rule in sorted(policy.immutable, key=lambda r: r.pattern)}
    return yaml.safe_dump(doc, default_flow_style=False, sort_keys=False) if doc else ""


def read_policy(path: Path) -> Policy:
    """The policy in ``path``; a missing file is an empty policy (nothing retained, nothing immutable)."""
    text = read_limited(path, MAX_FILE_BYTES, PolicyFileError)
    if text is None:
        return Policy()
    try:
        return parse_policy(text)
    except PolicyFileError as exc:
        raise PolicyFileError(f"{path}: {exc}") from None


def write_policy(path: Path, policy: Policy) -> None:
    atomic_write(path, dump_policy(policy).encode("utf-8"), mode=0o600)


class PolicyStore(LiveFile[Policy]):
    """The proxy's live view of the policy file, as UserStore is of the users file (LiveFile); a
    missing file is an empty policy."""

    kind = "policy file"
    when_gone = "no retention, no immutable tags"
    error = PolicyFileError

    def __init__(self, path: Path) -> None:
        super().__init__(path, Policy(), log)

    def read(self, path: Path) -> Policy:
        return read_policy(path)

    def describe(self, value: Policy) -> str:
        return f"{len(value.retention)} retention and {len(value.immutable)} immutable rules"

    async def fresh(self) -> Policy:
        return await self.latest()
