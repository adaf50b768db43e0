"""podman login against the proxy: right and wrong passwords."""

from __future__ import annotations

from pathlib import Path

import pytest

from live import ADMIN, READER, Mreg, run
from helpers import require_tool

pytestmark = pytest.mark.integration


def _login(mreg: Mreg, authfile: Path, user: str, password: str):
    podman = require_tool("podman")
    return run([podman, "login", "--tls-verify=false", "--authfile", str(authfile), "-u", user, "--password-stdin", mreg.host], input=password + "\n")


@pytest.mark.parametrize("who", [ADMIN, READER])
def test_login_with_right_password(mreg: Mreg, tmp_path: Path, who: tuple[str, str]) -> None:
    result = _login(mreg, tmp_path / "auth.json", *who)
    assert result.returncode == 0, result.stderr
    assert "Login Succeeded" in result.stdout
    assert mreg.host in (tmp_path / "auth.json").read_text()


def test_login_with_wrong_password(mreg: Mreg, tmp_path: Path) -> None:
    result = _login(mreg, tmp_path / "auth.json", ADMIN[0], "wrong")
    assert result.returncode != 0
    assert "unauthorized" in result.stderr.lower() or "invalid username/password" in result.stderr.lower()


def test_podman_probing_https_first_leaves_no_400_in_the_access_log(
    mreg: Mreg, mreg_home: Path, tmp_path: Path
) -> None:
    """Before TLS is on, podman tries HTTPS first: its ClientHello is not an HTTP request, and is
    not logged as a failed one (issue 12, item 8)."""
    log = mreg_home / "proxy.log"
    seen = len(log.read_text().splitlines())
    result = _login(mreg, tmp_path / "auth.json", *READER)
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()[seen:]
    assert any("mreg.access" in line and " 200 " in line for line in lines), lines
    assert not [line for line in lines if "mreg.access" in line and " 400 " in line], lines
