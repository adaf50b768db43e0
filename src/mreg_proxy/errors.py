"""Errors the proxy produces itself, in the registry's JSON envelope."""

from __future__ import annotations

import json

from aiohttp import web

from .spec.routes import Endpoint, Route

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


_RAISABLE: dict[int, type[web.HTTPError]] = {
    400: web.HTTPBadRequest,
    429: web.HTTPTooManyRequests,
    503: web.HTTPServiceUnavailable,
}


def error_exception(
    status: int, code: str, message: str, *, retry_after: int | None = None
) -> web.HTTPError:
    """The same envelope, to raise from deep inside a handler (aiohttp answers it as is)."""
    headers = {API_VERSION[0]: API_VERSION[1]}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return _RAISABLE[status](text=envelope(code, message), content_type="application/json", headers=headers)


def unauthorized(realm: str) -> web.Response:
    return error_response(
        401,
        "UNAUTHORIZED",
        "authentication required",
        headers={"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'},
    )


def denied(who: str, action: str, repository: str | None, level: str) -> web.Response:
    """403: the caller may not do this here. Said the same whether the repository exists or not."""
    where = f" {repository}" if repository else ""
    return error_response(
        403, "DENIED", f"requested access to the resource is denied: {who} may not {action}{where} (access: {level})"
    )


# What registry 2.8 answers for a repository that does not exist, per endpoint, byte for byte:
# a repository the caller may not see answers the same, whether it exists or not.
_UNKNOWN: dict[str, tuple[str, str]] = {
    "tag": ("MANIFEST_UNKNOWN", "manifest unknown"),
    "manifest": ("MANIFEST_UNKNOWN", "manifest unknown"),
    "blob": ("BLOB_UNKNOWN", "blob unknown to registry"),
    "name": ("NAME_UNKNOWN", "repository name not known to registry"),
}


def unknown_repository(route: Route) -> web.Response:
    """The 404 of a read in a repository that does not exist (or that the caller may not see)."""
    if route.endpoint is Endpoint.MANIFEST and route.is_tag:
        return _unknown("tag", {"Tag": route.reference})
    if route.endpoint is Endpoint.MANIFEST:
        return _unknown("manifest", {"Name": route.name, "Revision": route.reference})
    if route.endpoint is Endpoint.BLOB:
        return _unknown("blob", route.reference)
    if route.name is None:
        return not_found()
    return _unknown("name", {"name": route.name})


def _unknown(kind: str, detail: object) -> web.Response:
    code, message = _UNKNOWN[kind]
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": detail}]}, separators=(",", ":"))
    response = web.Response(
        status=404, body=(body + "\n").encode(), headers={"Content-Type": "application/json; charset=utf-8"}
    )
    response.headers[API_VERSION[0]] = API_VERSION[1]
    return response


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
