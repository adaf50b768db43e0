"""Who may do what: a pure function of (role, route), tested as a table.

Rights are global in this design (no per-repository rules yet): readers pull, admins do everything.
"""

from __future__ import annotations

from enum import Enum

from .routes import Action, Route

ROLE_ACTIONS: dict[str, frozenset[Action]] = {
    "reader": frozenset({Action.PULL}),
    "admin": frozenset(Action),
}


class Decision(Enum):
    ALLOW = "allow"
    DENY = "deny"  # the role lacks the right: 403 DENIED
    UNSUPPORTED = "unsupported"  # nobody may use this method here: 405


def decide(role: str, route: Route) -> Decision:
    if route.action is None:
        return Decision.UNSUPPORTED
    if route.action in ROLE_ACTIONS.get(role, frozenset()):
        return Decision.ALLOW
    return Decision.DENY
