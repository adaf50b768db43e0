"""Errors the proxy produces itself, in the registry's JSON envelope."""

from __future__ import annotations

import json

from aiohttp import web

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
# What the proxy calls itself in the Server header: no versions for a stranger to match to advisories
SERVER_NAME = "mreg"


def envelope(code: str, message: str) -> str:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]})


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    response = web.Response(status=status, text=envelope(code, message), content_type="application/json")
    response.headers[API_VERSION[0]] = API_VERSION[1]
    response.headers["Server"] = SERVER_NAME  # also where no app signal runs (parse errors)
    if headers:
        response.headers.update(headers)
    return response


def unauthorized(realm: str) -> web.Response:
    return error_response(
        401,
        "UNAUTHORIZED",
        "authentication required",
        headers={"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'},
    )


def denied(user: str, method: str) -> web.Response:
    return error_response(403, "DENIED", f"user {user!r} has read-only access: {method} refused")


def unsupported(method: str) -> web.Response:
    return error_response(405, "UNSUPPORTED", f"method {method} is not allowed on this registry")


def not_found() -> web.Response:
    return error_response(404, "NOT_FOUND", "not found: this server only serves the /v2/ API")


def unavailable(status: int, message: str) -> web.Response:
    return error_response(status, "UNAVAILABLE", message)


def raw_response(status: int, reason: str, body: str, content_type: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, for answers given below aiohttp's
    request handling (a connection refused before, or instead of, parsing a request)."""
    data = body.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nServer: {SERVER_NAME}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + data
