"""Who may do what: a pure function of (principal, route), tested as a table.

The principal is whoever made the request: a user (its role plus its grants), a CI token (its
grants only) or an anonymous client (the file's ``anonymous`` grants, pull at most). Its level on a
repository is the most specific matching grant, else its role's level (grants.py). The answer to
a request the caller may not make is chosen so that nothing leaks across repositories:

- no credentials: 401 with the Basic challenge, so clients ask for credentials. ``/v2/`` always
  challenges them, even when some repositories are public: podman, skopeo and docker learn from
  that answer alone whether to send credentials at all, and a 200 there would stop logged-in
  clients from ever sending theirs, so their pushes would fail (container-libs issue 1009, zot
  issue 3538). Challenged, podman and skopeo without credentials send empty ones, which count as
  anonymous: anonymous pulls work with them;
- a repository the caller may not even pull: a read answers exactly as for a repository that does
  not exist (HIDE); a write gets 403 DENIED, which is what it gets whether or not it exists;
- a repository the caller may pull but not write: 403 DENIED, the clearest answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .grants import ROLE_LEVELS, Grant, Level, deciding_grant, may_see_any
from ..spec.routes import Action, Endpoint, Route
from .users import Token, User

ACTION_LEVELS = {Action.PULL: Level.PULL, Action.PUSH: Level.PUSH, Action.DELETE: Level.DELETE}


class Kind(Enum):
    USER = "user"
    TOKEN = "token"
    ANONYMOUS = "anonymous"


class Decision(Enum):
    ALLOW = "allow"
    DENY = "deny"  # 403 DENIED
    HIDE = "hide"  # answer as for a repository that does not exist
    CHALLENGE = "challenge"  # 401 with the Basic challenge
    UNSUPPORTED = "unsupported"  # nobody may use this method here: 405


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    kind: Kind
    base: Level  # the level where no grant matches: the user's role, NONE for tokens and anonymous
    grants: tuple[Grant, ...] = ()

    @classmethod
    def of_user(cls, user: User) -> Principal:
        return cls(user.name, Kind.USER, ROLE_LEVELS[user.role], user.grants)

    @classmethod
    def of_token(cls, token: Token) -> Principal:
        return cls(token.name, Kind.TOKEN, Level.NONE, token.grants)

    @classmethod
    def anonymous(cls, grants: tuple[Grant, ...]) -> Principal:
        # capped at pull whatever the file says: anonymous clients never write
        capped = tuple(Grant(g.pattern, min(g.level, Level.PULL)) for g in grants)
        return cls("", Kind.ANONYMOUS, Level.NONE, capped)

    def access(self, repository: str) -> tuple[Level, Grant | None]:
        """The level on ``repository`` and the grant that gave it (None: the role's level)."""
        grant = deciding_grant(self.grants, repository)
        return (self.base, None) if grant is None else (grant.level, grant)

    def may_pull(self, repository: str) -> bool:
        return self.access(repository)[0] >= Level.PULL

    def may_delete_in(self, repository: str) -> bool:
        """Who may run retention on ``repository`` (POST /mreg/retention, and its dry run on the
        web page): admins, and users or tokens whose deciding grant there is delete."""
        return self.access(repository)[0] >= Level.DELETE

    @property
    def is_admin(self) -> bool:
        """A user whose role is admin: the proxy's own endpoints (metrics, write pause) are theirs."""
        return self.kind is Kind.USER and self.base is Level.DELETE

    @property
    def floor(self) -> Level:
        """The level held on every repository whatever its name: the role's, unless a grant
        narrows it somewhere."""
        return min((self.base, *(grant.level for grant in self.grants)))

    @property
    def pulls_everything(self) -> bool:
        """True when the catalog needs no filter."""
        return self.floor >= Level.PULL


def decide(principal: Principal, route: Route) -> Decision:
    if route.action is None:
        return Decision.UNSUPPORTED
    anonymous = principal.kind is Kind.ANONYMOUS
    if route.endpoint is Endpoint.BASE:
        return Decision.CHALLENGE if anonymous else Decision.ALLOW
    if route.endpoint is Endpoint.CATALOG:  # filtered by the handler
        if anonymous and not may_see_any(principal.grants, principal.base):
            return Decision.CHALLENGE
        return Decision.ALLOW
    needed = ACTION_LEVELS[route.action]
    if route.name is None:
        # not part of the API: forwarded only for a right held on every repository, so that
        # no path the registry may still understand can reach around a grant
        if principal.floor >= needed:
            return Decision.ALLOW
        if anonymous:
            return Decision.CHALLENGE
        return Decision.DENY if principal.floor >= Level.PULL else Decision.HIDE
    level, _grant = principal.access(route.name)
    if level >= needed:
        return Decision.ALLOW
    if anonymous:
        return Decision.CHALLENGE
    if level >= Level.PULL or needed > Level.PULL:
        return Decision.DENY
    return Decision.HIDE
