"""Requests no handler should see, and the header every answer carries."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from .. import errors
from ..keys import TLS
from .connection import HEADER_BUDGET


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """TLS wanted but unusable (fail closed: an error, never registry content over plain HTTP),
    a header block over budget, and request targets that are not a path."""
    refused = request.app[TLS].refused
    if refused and request.path not in ("/healthz", "/readyz"):
        return errors.unavailable(
            503, "this registry's TLS certificate or key is unusable; its administrator must "
            "install a working pair with manage-tls (the proxy's log says what is wrong)",
        )
    if sum(len(name) + len(value) + 4 for name, value in request.raw_headers) > HEADER_BUDGET:
        # a block that arrived in one piece; connection.py cuts one that arrives slowly
        response = errors.error_response(
            431, "HEADERS_TOO_LARGE", f"the request headers exceed {HEADER_BUDGET} bytes"
        )
        response.force_close()
        return response
    if not request.raw_path.startswith("/"):  # absolute-form (GET http://host/v2/) or "*"
        return errors.error_response(400, "BAD_REQUEST", "the request target must be a path")
    return await handler(request)


async def server_name(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = errors.SERVER_NAME
