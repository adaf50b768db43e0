"""Per-repository access: levels, patterns, and which grant decides. Pure: no I/O, no aiohttp.

A grant is a pattern and a level. Patterns are repository names whose path components may be
``*`` (exactly one component) or, as the last component only, ``**`` (one or more components):
``team/app``, ``team/*``, ``team/**``, ``*/app``, ``**``. Levels are ordered
none < pull < push < delete; each one implies those before it.

When several patterns match a repository, the most specific decides (see ``specificity``): an
exact name beats every glob, then the longer literal prefix wins, then the pattern with more literal
components, then ``*`` beats ``**``. A tie between different patterns goes to the lower level: when
in doubt, less access. A user's role is the least specific rule of all (``reader`` pulls
everything, ``admin`` deletes everything), so any matching grant overrides it, upwards or down.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Iterable

from ..spec.names import MAX_NAME, is_name


class Level(IntEnum):
    NONE = 0
    PULL = 1
    PUSH = 2
    DELETE = 3

    def __str__(self) -> str:
        return self.name.lower()


LEVEL_NAMES = tuple(str(level) for level in Level)
ROLE_LEVELS: dict[str, Level] = {"none": Level.NONE, "reader": Level.PULL, "admin": Level.DELETE}


class GrantError(ValueError):
    """A pattern or level cannot be used; the message says why, in one line."""


def parse_level(text: object) -> Level:
    if isinstance(text, str) and text in LEVEL_NAMES:
        return Level[text.upper()]
    raise GrantError(f"access level must be one of {', '.join(LEVEL_NAMES)}, not {text!r}")


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be a grant pattern, or None when it can."""
    if not pattern:
        return "the pattern is empty"
    if len(pattern) > MAX_NAME:
        return f"the pattern is longer than {MAX_NAME} characters"
    parts = pattern.split("/")
    if "**" in parts[:-1]:
        return "'**' may only be the last component"
    # with each wildcard standing for a plain component, the rest must be a repository name
    if not is_name("/".join("x" if part in ("*", "**") else part for part in parts)):
        return (
            "components must be repository name components (lower case letters and digits, "
            "separated inside by . _ __ or -), * or **"
        )
    return None


def checked_pattern(pattern: object) -> str:
    if not isinstance(pattern, str):
        raise GrantError(f"pattern {pattern!r} is not a string")
    problem = pattern_problem(pattern)
    if problem:
        raise GrantError(f"pattern {pattern!r}: {problem}")
    return pattern


@dataclass(frozen=True, slots=True)
class Grant:
    pattern: str
    level: Level

    def __str__(self) -> str:
        return f"{self.pattern}={self.level}"


def matches(pattern: str, name: str) -> bool:
    """Does the (valid) ``pattern`` match the repository ``name``?"""
    return _regex(pattern).fullmatch(name) is not None


@functools.lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    """``*`` is one component, a final ``**`` one or more; cached: a file holds few patterns,
    and every request (and every name of a filtered catalog) is matched against them."""
    parts = []
    for part in pattern.split("/"):
        parts.append("[^/]+" if part == "*" else "[^/]+(?:/[^/]+)*" if part == "**" else re.escape(part))
    return re.compile("/".join(parts))


@functools.lru_cache(maxsize=4096)
def specificity(pattern: str) -> tuple[int, int, int, int]:
    """Larger is more specific: (exact, literal prefix components, literal components, no ``**``)."""
    parts = pattern.split("/")
    literal = [p not in ("*", "**") for p in parts]
    prefix = next((i for i, is_literal in enumerate(literal) if not is_literal), len(parts))
    return (int(all(literal)), prefix, sum(literal), int(parts[-1] != "**"))


def deciding_grant(grants: Iterable[Grant], name: str) -> Grant | None:
    """The grant that decides for ``name``: the most specific match, the lower level on a tie."""
    best: Grant | None = None
    for grant in grants:
        if not matches(grant.pattern, name):
            continue
        if best is None or _beats(grant, best):
            best = grant
    return best


def _beats(grant: Grant, other: Grant) -> bool:
    mine, theirs = specificity(grant.pattern), specificity(other.pattern)
    if mine != theirs:
        return mine > theirs
    return grant.level < other.level


def may_see_any(grants: Iterable[Grant], base: Level) -> bool:
    """Could some repository name give at least pull? (For the anonymous login probe.)"""
    return base >= Level.PULL or any(grant.level >= Level.PULL for grant in grants)
