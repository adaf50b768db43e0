"""``/v2/_catalog`` for a caller who may not pull everything: only what it may pull, paged.

The registry's catalog is sorted, so the proxy reads it from the client's ``last`` on, in pages
of CATALOG_MAX, keeps the names the caller may pull, and stops once it holds one more than the
page needs (then there is a next page) or the registry has no more. The ``Link`` cursor is always
a name the caller may see. Reading is bounded (MAX_UPSTREAM_PAGES): a caller who may see almost
nothing in a huge registry gets a short page and a cursor, never an unbounded scan.
"""

from __future__ import annotations

import json
import logging
from typing import Callable
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from yarl import URL

from .. import errors
from ..keys import PRINCIPAL, SESSION, SETTINGS
from ..spec.routes import Route
from ..transport.forwarder import UPSTREAM_ERRORS, forwarded_headers, pass_through, relay, upstream_failure, upstream_url
from .tags import PagingError, page, paging_params

log = logging.getLogger("mreg.catalog")

CATALOG_MAX = 1000  # registry 2.8's largest catalog page (and its page when n is absent)
MAX_UPSTREAM_PAGES = 100  # at most 100 000 names read for one answer


def next_link(last: str, n: int) -> str:
    return f'</v2/_catalog?{urlencode({"last": last, "n": n})}>; rel="next"'


async def list_catalog(
    request: web.Request,
    session: aiohttp.ClientSession,
    upstream: URL,
    may_pull: Callable[[str], bool],
) -> web.StreamResponse:
    try:
        n, last = paging_params(request.query)
    except PagingError as exc:
        return errors.error_response(400, "PAGINATION_NUMBER_INVALID", str(exc))
    if n is not None and n > CATALOG_MAX:
        return errors.error_response(
            400, "PAGINATION_NUMBER_INVALID", f"n must be at most {CATALOG_MAX}, not {n}"
        )
    wanted = CATALOG_MAX if n is None else n
    if wanted == 0:
        return web.json_response({"repositories": []}, headers=[errors.API_VERSION])
    headers = forwarded_headers(request, with_body=False)
    visible: list[str] = []
    cursor, more = last, True
    try:
        for _ in range(MAX_UPSTREAM_PAGES):
            if len(visible) > wanted or not more:
                break
            query = {"n": str(CATALOG_MAX), **({"last": cursor} if cursor else {})}
            url = upstream_url(upstream, "/v2/_catalog?" + urlencode(query))
            async with session.get(url, headers=headers) as listed:
                if listed.status != 200:
                    return await relay(request, listed, upstream)
                names = json.loads(await listed.read()).get("repositories") or []
            visible.extend(name for name in names if isinstance(name, str) and may_pull(name))
            more = len(names) == CATALOG_MAX
            cursor = names[-1] if names else cursor
    except UPSTREAM_ERRORS as exc:
        return upstream_failure(request, exc)
    shown, next_last = page(visible, wanted, None)
    if next_last is None and more and shown:
        # the reading budget ran out before the registry did: the client goes on from here
        log.warning("catalog: %d pages read without filling a page of %d", MAX_UPSTREAM_PAGES, wanted)
        next_last = shown[-1]
    response = web.json_response({"repositories": shown}, headers=[errors.API_VERSION])
    if next_last is not None:
        response.headers["Link"] = next_link(next_last, wanted)
    return response


async def handle_list(request: web.Request, route: Route) -> web.StreamResponse:
    principal = request[PRINCIPAL]
    if principal.pulls_everything:
        return await pass_through(request, route)  # the registry's own paging, untouched
    return await list_catalog(request, request.app[SESSION], request.app[SETTINGS].upstream, principal.may_pull)
