"""Who may do what: a pure function of (role, method), tested as a table.

Rights are global in this design (no per-repository rules yet).
"""

from __future__ import annotations

from enum import Enum

READ_METHODS = frozenset({"GET", "HEAD"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ROLE_METHODS: dict[str, frozenset[str]] = {
    "reader": READ_METHODS,
    "admin": READ_METHODS | WRITE_METHODS,
}
KNOWN_METHODS = READ_METHODS | WRITE_METHODS


class Decision(Enum):
    ALLOW = "allow"
    DENY = "deny"  # the role lacks the right: 403 DENIED
    UNSUPPORTED = "unsupported"  # nobody may use this method: 405


def decide(role: str, method: str) -> Decision:
    if method not in KNOWN_METHODS:
        return Decision.UNSUPPORTED
    if method in ROLE_METHODS.get(role, frozenset()):
        return Decision.ALLOW
    return Decision.DENY
