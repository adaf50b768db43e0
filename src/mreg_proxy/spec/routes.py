"""What a /v2 request touches, parsed once: endpoint, repository, reference and the action needed.

The way distribution's route table and ``auth.Access{repository:NAME, action}`` do it: the proxy
classifies each request into one frozen Route before deciding anything, and authorization, the
requests the proxy answers itself and the manifest lock all work from that value instead of matching
the path again. Pure: no aiohttp, no I/O.
"""

from __future__ import annotations

import re
from functools import lru_cache
from dataclasses import dataclass
from enum import Enum

from .names import MAX_NAME, NAME, is_tag


class Endpoint(Enum):
    BASE = "base"  # /v2/
    CATALOG = "catalog"  # /v2/_catalog
    TAGS = "tags"  # /v2/<name>/tags/list
    MANIFEST = "manifest"  # /v2/<name>/manifests/<reference>
    BLOB = "blob"  # /v2/<name>/blobs/<digest>
    UPLOADS = "uploads"  # /v2/<name>/blobs/uploads/ (POST starts an upload or a mount)
    UPLOAD = "upload"  # /v2/<name>/blobs/uploads/<id>
    REFERRERS = "referrers"  # /v2/<name>/referrers/<digest>
    UNKNOWN = "unknown"  # anything else under /v2


class Action(Enum):
    PULL = "pull"
    PUSH = "push"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Route:
    endpoint: Endpoint
    method: str
    name: str | None = None  # the repository; None where the request names none
    reference: str | None = None  # manifest tag or digest, blob digest, upload id
    action: Action | None = None  # what the caller needs; None: the method is not allowed here

    @property
    def is_tag(self) -> bool:
        """A manifest addressed by tag (a digest never matches the tag grammar: it holds a ``:``)."""
        return self.endpoint is Endpoint.MANIFEST and self.reference is not None and is_tag(self.reference)


_READ = {"GET": Action.PULL, "HEAD": Action.PULL}
_BY_METHOD = {**_READ, "POST": Action.PUSH, "PUT": Action.PUSH, "PATCH": Action.PUSH, "DELETE": Action.DELETE}
_PUSH_SESSION = {  # an upload in progress belongs to whoever may push: its status too
    "GET": Action.PUSH, "HEAD": Action.PUSH, "PATCH": Action.PUSH, "PUT": Action.PUSH, "DELETE": Action.PUSH,
}

# Checked in order, the repository name matched with its own grammar so that a name holding
# "manifests" or "blobs" as a component still splits in one way only.
_NAMED = NAME.pattern
_TABLE: tuple[tuple[re.Pattern[str], Endpoint, dict[str, Action]], ...] = (
    (re.compile(r"/v2/?"), Endpoint.BASE, _READ),
    (re.compile(r"/v2/_catalog"), Endpoint.CATALOG, _READ),
    (re.compile(rf"/v2/(?P<name>{_NAMED})/tags/list"), Endpoint.TAGS, _READ),
    (re.compile(rf"/v2/(?P<name>{_NAMED})/manifests/(?P<ref>[^/]+)"), Endpoint.MANIFEST,
     {**_READ, "PUT": Action.PUSH, "DELETE": Action.DELETE}),
    (re.compile(rf"/v2/(?P<name>{_NAMED})/blobs/uploads/?"), Endpoint.UPLOADS, {"POST": Action.PUSH}),
    (re.compile(rf"/v2/(?P<name>{_NAMED})/blobs/uploads/(?P<ref>[^/]+)"), Endpoint.UPLOAD, _PUSH_SESSION),
    (re.compile(rf"/v2/(?P<name>{_NAMED})/blobs/(?P<ref>[^/]+)"), Endpoint.BLOB,
     {**_READ, "DELETE": Action.DELETE}),
    (re.compile(rf"/v2/(?P<name>{_NAMED})/referrers/(?P<ref>[^/]+)"), Endpoint.REFERRERS, _READ),
)


def classify(method: str, path: str) -> Route:
    """The Route of ``method path`` (``path`` as aiohttp decodes it, query excluded).

    References are not validated here: a malformed one is the handler's (or the registry's) to
    answer. A name longer than the spec allows classifies as UNKNOWN, like any other path that is
    not part of the API.
    """
    # A pure function of its two strings: pulls ask for the same few paths again and again, so
    # recent answers are remembered (Routes are frozen). Only short paths, so that strangers'
    # paths cannot hold more than CLASSIFY_MEMORY * CLASSIFY_PATH_BUDGET characters.
    if len(path) <= CLASSIFY_PATH_BUDGET and len(method) <= 16:
        return _remembered(method, path)
    return _classify(method, path)


CLASSIFY_MEMORY = 1024  # routes remembered
CLASSIFY_PATH_BUDGET = 512  # characters of a path that may be remembered


def _classify(method: str, path: str) -> Route:
    for pattern, endpoint, actions in _TABLE:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        groups = match.groupdict()
        name = groups.get("name")
        if name is not None and len(name) > MAX_NAME:
            break
        return Route(endpoint, method, name, groups.get("ref"), actions.get(method))
    return Route(Endpoint.UNKNOWN, method, action=_BY_METHOD.get(method))


_remembered = lru_cache(maxsize=CLASSIFY_MEMORY)(_classify)
