"""Plain HTTP against the real registry behind the real proxy."""

from __future__ import annotations

import base64
import hashlib
import socket
import urllib.parse
from pathlib import Path

import pytest

from live import ADMIN, READER, Mreg, error_code, http, run
from helpers import require_tool
from imagegen import make_oci_layout

pytestmark = pytest.mark.integration

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def test_anonymous_v2_is_challenged(mreg: Mreg) -> None:
    status, headers, body = http("GET", f"{mreg.url}/v2/")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith('Basic realm="mreg"')
    assert error_code(body) == "UNAUTHORIZED"


def test_wrong_password_is_refused(mreg: Mreg) -> None:
    status, _, body = http("GET", f"{mreg.url}/v2/", auth=(ADMIN[0], "nope"))
    assert (status, error_code(body)) == (401, "UNAUTHORIZED")


def test_both_roles_see_the_api(mreg: Mreg) -> None:
    for who in (ADMIN, READER):
        status, headers, _ = http("GET", f"{mreg.url}/v2/", auth=who)
        assert status == 200 and headers["Docker-Distribution-Api-Version"] == "registry/2.0"


def test_reader_cannot_start_an_upload(mreg: Mreg) -> None:
    status, _, body = http("POST", f"{mreg.url}/v2/team/x/blobs/uploads/", auth=READER)
    assert (status, error_code(body)) == (403, "DENIED")


def test_registry_errors_pass_through(mreg: Mreg) -> None:
    status, _, body = http("GET", f"{mreg.url}/v2/no/such/manifests/latest", auth=READER)
    assert status == 404 and error_code(body) in ("NAME_UNKNOWN", "MANIFEST_UNKNOWN")


def test_admin_deletes_by_digest(mreg: Mreg, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    digest = make_oci_layout(tmp_path / "img", [4096], seed=7)
    ref = f"docker://{mreg.host}/team/deleteme:1"
    push = run([skopeo, "copy", "--dest-tls-verify=false", "--dest-creds", ":".join(ADMIN), f"oci:{tmp_path / 'img'}:latest", ref])
    assert push.returncode == 0, push.stderr
    manifest_url = f"{mreg.url}/v2/team/deleteme/manifests"
    status, headers, _ = http("HEAD", f"{manifest_url}/1", auth=READER, headers={"Accept": MANIFEST_TYPES})
    assert (status, headers["Docker-Content-Digest"]) == (200, digest)
    assert int(headers["Content-Length"]) > 0

    status, _, _ = http("DELETE", f"{manifest_url}/{digest}", auth=READER)
    assert status == 403
    status, _, _ = http("DELETE", f"{manifest_url}/{digest}", auth=ADMIN)
    assert status == 202
    status, _, body = http("GET", f"{manifest_url}/1", auth=READER, headers={"Accept": MANIFEST_TYPES})
    assert (status, error_code(body)) == (404, "MANIFEST_UNKNOWN")



def _raw_request(host_port: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` byte for byte on a new connection (it must ask the server to close it):
    status, headers (names in lower case) and body of the answer."""
    host, _, port = host_port.rpartition(":")
    answer = b""
    with socket.create_connection((host.strip("[]"), int(port)), timeout=30) as sock:
        sock.sendall(request)
        while len(answer) < 1 << 20:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def _start_upload(mreg: Mreg, version: bytes, host_line: bytes) -> tuple[int, dict[str, str], bytes]:
    token = base64.b64encode(":".join(ADMIN).encode())
    return _raw_request(
        mreg.host,
        b"POST /v2/team/nohost/blobs/uploads/ " + version + b"\r\n" + host_line
        + b"Authorization: Basic " + token + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )


def _finish_upload(mreg: Mreg, location: str, blob: bytes) -> None:
    """The client follows the Location it was given: it must lead back to the proxy and work."""
    where = urllib.parse.urlsplit(location)
    assert (where.scheme, where.netloc) == ("http", mreg.host)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    url = f"{location}{'&' if where.query else '?'}digest={digest}"
    status, _, body = http("PUT", url, auth=ADMIN, data=blob, headers={"Content-Type": "application/octet-stream"})
    assert status == 201, body
    assert http("HEAD", f"{mreg.url}/v2/team/nohost/blobs/{digest}", auth=ADMIN)[0] == 200


def test_http10_upload_without_host_gets_a_location_that_works(mreg: Mreg) -> None:
    """HTTP/1.0 may omit Host: the registry must then build Location from the address the
    client connected to, not from an empty host (port 80)."""
    status, headers, body = _start_upload(mreg, b"HTTP/1.0", b"")
    assert status == 202, body
    _finish_upload(mreg, headers["location"], b"sent over HTTP/1.0 without Host")


def test_http11_upload_with_an_empty_host_gets_a_location_that_works(mreg: Mreg) -> None:
    status, headers, body = _start_upload(mreg, b"HTTP/1.1", b"Host:\r\n")
    assert status == 202, body
    _finish_upload(mreg, headers["location"], b"sent over HTTP/1.1 with an empty Host")


def test_http11_without_host_is_a_bad_request(mreg: Mreg) -> None:
    """RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host; aiohttp's
    parser does, before any handler runs (so nothing reaches the registry)."""
    status, _, body = _start_upload(mreg, b"HTTP/1.1", b"")
    assert (status, error_code(body)) == (400, "BAD_REQUEST")
