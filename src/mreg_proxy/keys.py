"""The objects create_app builds, found by every handler through typed keys (aiohttp's AppKey).

One module holds them all, so that the handlers in oci/, auth/ and transport/ reach what the
composition root (app.py) built without importing it. The types are named for the type checker
only: at run time this module imports nothing of the package, so it sits at the bottom floor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from .auth.decide import Principal
    from .auth.identify import Access
    from .auth.passwords import Authenticator
    from .auth.users import UserStore
    from .config import Settings
    from .oci.collect import Maintenance
    from .oci.reads import StorageReads
    from .oci.tagdelete import RepositoryLocks
    from .oci.upload_state import UploadMemory
    from .oci.writepause import WritePause
    from .policy.pulls import PullTimes
    from .policy.rules import PolicyStore
    from .transport.metrics import Metrics
    from .transport.readiness import Readiness
    from .transport.tls import TlsState
    from .web.render import WebState

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
SESSION = web.AppKey("session", aiohttp.ClientSession)  # the one client session to the registry
USERS: web.AppKey[UserStore] = web.AppKey("users")
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator")
ACCESS: web.AppKey[Access] = web.AppKey("access")
TLS: web.AppKey[TlsState] = web.AppKey("tls")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
READINESS: web.AppKey[Readiness] = web.AppKey("readiness")
TAG_LOCKS: web.AppKey[RepositoryLocks] = web.AppKey("tag_locks")
UPLOADS: web.AppKey[UploadMemory] = web.AppKey("uploads")
WRITE_PAUSE: web.AppKey[WritePause] = web.AppKey("write_pause")
POLICY: web.AppKey[PolicyStore] = web.AppKey("policy")  # retention rules and immutable tags
PULL_TIMES: web.AppKey[PullTimes] = web.AppKey("pull_times")
MAINTENANCE: web.AppKey[Maintenance] = web.AppKey("maintenance")  # retention runs and collections
# manifest and blob reads answered from the registry's files; None: MREG_REGISTRY_ROOT unset
STORAGE_READS: web.AppKey[StorageReads | None] = web.AppKey("storage_reads")
WEB: web.AppKey[WebState] = web.AppKey("web")  # the web page's key, templates and registry reader

USER: web.RequestKey[str] = web.RequestKey("user")  # who made the request, for the access log
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")  # who made it, for the handlers
# who answered a manifest or blob read: "storage" (the registry's files) or "registry" (forwarded)
SOURCE: web.RequestKey[str] = web.RequestKey("source")
