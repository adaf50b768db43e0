"""Read-only views for admins: users, roles, grants, CI tokens, anonymous pulls, the audit log.

Changes stay in the CLIs (manage-user), which validate, lock and audit them; the page only shows
the users file as the proxy has it now and the audit log filtered as ``manage-user audit`` does.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from ..auth.audit import STDOUT, read_events, selected
from ..auth.tokens import parse_duration, utc_text
from ..keys import SETTINGS, USERS
from .login import MAX_USER, Viewer
from .render import WebState, problem, render

MAX_EVENTS = 200  # the newest matching events shown


def _forbidden(request: web.Request, state: WebState, viewer: Viewer) -> web.Response:
    return problem(request, state, 403, "Admins only", "These pages are for admins.", viewer=viewer, csrf=viewer.csrf)


async def users(request: web.Request, state: WebState, viewer: Viewer) -> web.Response:
    if not viewer.principal.is_admin:
        return _forbidden(request, state, viewer)
    store = await request.app[USERS].fresh_store()
    people = [(u.name, u.role, ", ".join(map(str, u.grants))) for u in sorted(store.users.values(), key=lambda u: u.name)]
    tokens = [
        (t.name, ", ".join(map(str, t.grants)), utc_text(t.created), utc_text(t.expires) if t.expires else "never")
        for t in sorted(store.tokens.values(), key=lambda t: t.name)
    ]
    return render(request, state, "admin.html", viewer=viewer, csrf=viewer.csrf, people=people, tokens=tokens,
                  anonymous=", ".join(map(str, store.anonymous)))


def newest_events(path: Path, since: datetime.datetime | None, user: str | None, limit: int = MAX_EVENTS) -> list[dict[str, Any]]:
    """The newest ``limit`` matching events, newest first (the whole log is read: at most twice
    its rotation size)."""
    kept: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
    kept.extend(selected(read_events(path), since, user))
    return list(reversed(kept))


async def audit(request: web.Request, state: WebState, viewer: Viewer) -> web.Response:
    if not viewer.principal.is_admin:
        return _forbidden(request, state, viewer)
    user = request.query.get("user", "").strip()[:MAX_USER] or None
    since_text = request.query.get("since", "").strip()[:16]
    since = None
    error = ""
    if since_text:
        try:
            since = datetime.datetime.now(datetime.timezone.utc) - parse_duration(since_text)
        except ValueError:
            error = "Since: a duration like 30m, 12h, 7d or 4w."
    target = request.app[SETTINGS].audit_target
    if target == STDOUT:
        events: list[dict[str, Any]] = []
        error = error or "The audit log is written to standard output: read it with the container's logs."
    else:
        events = await asyncio.to_thread(newest_events, Path(target), since, user)
    rows = [
        (str(e.get("time", ""))[:32], str(e.get("event", ""))[:64],
         json.dumps({k: v for k, v in e.items() if k not in ("time", "event")}, ensure_ascii=False)[:500])
        for e in events
    ]
    return render(request, state, "audit.html", viewer=viewer, csrf=viewer.csrf, rows=rows, user=user or "",
                  since=since_text, error=error, limit=MAX_EVENTS)
