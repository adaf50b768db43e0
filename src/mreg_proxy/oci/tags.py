"""Tag listing as the OCI distribution spec has it: lexical order, ``n`` and ``last``, a ``Link``.

registry 2.8 ignores ``n`` and ``last`` on ``/v2/<name>/tags/list`` and returns its tags in no
particular order, so the proxy fetches the whole list and pages it itself. (Its ``/v2/_catalog``
pages correctly and is forwarded untouched.)
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from yarl import URL

from .. import errors
from ..keys import SESSION, SETTINGS
from ..spec.routes import Route
from ..transport.forwarder import UPSTREAM_ERRORS, forwarded_headers, relay, upstream_failure, upstream_url


# n is a page size: 9 digits are plenty, and int() of thousands of digits raises (or costs CPU)
MAX_N_DIGITS = 9


class PagingError(ValueError):
    """``n`` is not a non-negative integer."""


def paging_params(query: Mapping[str, str]) -> tuple[int | None, str | None]:
    """(n, last) from a query; n is None when absent (no limit)."""
    raw = query.get("n")
    if raw is None or raw == "":
        n = None
    elif raw.isascii() and raw.isdigit() and len(raw) <= MAX_N_DIGITS:
        n = int(raw)
    else:
        raise PagingError(f"n must be a non-negative integer of at most {MAX_N_DIGITS} digits, not {raw[:20]!r}")
    return n, query.get("last") or None


def page(tags: Sequence[str], n: int | None, last: str | None) -> tuple[list[str], str | None]:
    """At most ``n`` tags after ``last``, lexically; plus the ``last`` of the next page, if any.

    n=0 is an empty page with no next one (the spec forbids a Link then).
    """
    after = sorted(t for t in set(tags) if last is None or t > last)
    if n is None or len(after) <= n:
        return after, None
    chosen = after[:n]
    return chosen, (chosen[-1] if chosen else None)


def next_link(name: str, last: str, n: int) -> str:
    """The ``Link`` header value for the page after ``last``, in registry 2.8's catalog form."""
    return f'</v2/{name}/tags/list?{urlencode({"last": last, "n": n})}>; rel="next"'


async def list_tags(
    request: web.Request, session: aiohttp.ClientSession, upstream: URL, name: str
) -> web.StreamResponse:
    try:
        n, last = paging_params(request.query)
    except PagingError as exc:
        return errors.error_response(400, "PAGINATION_NUMBER_INVALID", str(exc))
    headers = forwarded_headers(request, with_body=False)
    try:
        async with session.get(upstream_url(upstream, f"/v2/{name}/tags/list"), headers=headers) as listed:
            if listed.status != 200:
                return await relay(request, listed, upstream)  # e.g. 404 NAME_UNKNOWN
            body = json.loads(await listed.read())
    except UPSTREAM_ERRORS as exc:
        return upstream_failure(request, exc)
    # a repository whose tags were all deleted lists "tags": null
    tags, next_last = page(body.get("tags") or [], n, last)
    response = web.json_response({"name": name, "tags": tags}, headers=[errors.API_VERSION])
    if next_last is not None and n is not None:
        response.headers["Link"] = next_link(name, next_last, n)
    return response


async def handle_list(request: web.Request, route: Route) -> web.StreamResponse:
    assert route.name is not None
    return await list_tags(request, request.app[SESSION], request.app[SETTINGS].upstream, route.name)
