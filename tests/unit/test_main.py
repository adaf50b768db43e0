"""mreg-proxy as a command: bad settings and a taken port end in one line, not a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "MREG_USERS_FILE": str(tmp_path / "users.yml"),
        "MREG_TLS_CERT": str(tmp_path / "tls.crt"),
        "MREG_TLS_KEY": str(tmp_path / "tls.key"),
    }
    return subprocess.run(
        [sys.executable, "-m", "mreg_proxy"], env={**os.environ, **base, **env},
        capture_output=True, text=True, timeout=60,
    )


def test_bad_setting_is_one_line(tmp_path: Path) -> None:
    result = _run(tmp_path, MREG_UPSTREAM="ftp://nowhere")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "mreg-proxy: error: MREG_UPSTREAM 'ftp://nowhere': expected http://HOST:PORT"
    ]


def test_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(tmp_path, MREG_LISTEN=f"127.0.0.1:{port}")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mreg-proxy: error: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in result.stderr
