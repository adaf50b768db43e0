"""Plain HTTP against the real registry behind the real proxy."""

from __future__ import annotations

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
