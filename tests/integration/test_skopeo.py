"""skopeo pushes and pulls a multi-layer image through the proxy."""

from __future__ import annotations

from pathlib import Path

import pytest

from live import ADMIN, READER, Mreg, run
from helpers import require_tool
from imagegen import layout_blobs, layout_digest, make_oci_layout

pytestmark = pytest.mark.integration

MB = 1 << 20


@pytest.fixture(scope="module")
def pushed(mreg: Mreg, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 3-layer image of about 30 MB, pushed once by the admin."""
    skopeo = require_tool("skopeo")
    layout = tmp_path_factory.mktemp("src") / "img"
    make_oci_layout(layout, [20 * MB, 8 * MB, 2 * MB + 17], seed=1)
    ref = f"docker://{mreg.host}/team/app:1.0"
    result = run([skopeo, "copy", "--dest-tls-verify=false", "--dest-creds", ":".join(ADMIN), f"oci:{layout}:latest", ref])
    assert result.returncode == 0, result.stderr
    return layout, ref


def test_reader_pulls_identical_image(pushed: tuple[Path, str], tmp_path: Path) -> None:
    layout, ref = pushed
    out = tmp_path / "pulled"
    result = run(["skopeo", "copy", "--src-tls-verify=false", "--src-creds", ":".join(READER), ref, f"oci:{out}:latest"])
    assert result.returncode == 0, result.stderr
    assert layout_digest(out) == layout_digest(layout)
    assert layout_blobs(out) == layout_blobs(layout)


def test_inspect_as_reader(pushed: tuple[Path, str]) -> None:
    layout, ref = pushed
    result = run(["skopeo", "inspect", "--tls-verify=false", "--creds", ":".join(READER), "--format", "{{.Digest}}", ref])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == layout_digest(layout)


def test_reader_push_is_refused(pushed: tuple[Path, str], mreg: Mreg) -> None:
    layout, _ = pushed
    result = run(["skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", ":".join(READER), f"oci:{layout}:latest", f"docker://{mreg.host}/team/app:evil"])
    assert result.returncode != 0
    assert "denied" in result.stderr.lower()


def test_wrong_password_push_is_refused(pushed: tuple[Path, str], mreg: Mreg) -> None:
    layout, _ = pushed
    result = run(["skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", "admin:wrong", f"oci:{layout}:latest", f"docker://{mreg.host}/team/app:evil"])
    assert result.returncode != 0
    assert "unauthorized" in result.stderr.lower() or "authentication required" in result.stderr.lower()
