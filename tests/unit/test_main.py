"""mreg-proxy as a command: bad settings and a taken port end in one line, not a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from mreg_proxy.app import startup_notes
from mreg_proxy.config import settings_from
from helpers import free_port


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


def _startup_log(tmp_path: Path) -> str:
    """mreg-proxy's log up to its last start-up note (no users, no TLS); then it is stopped."""
    port = free_port()
    env = {
        **os.environ,
        "MREG_USERS_FILE": str(tmp_path / "users.yml"),
        "MREG_TLS_CERT": str(tmp_path / "tls.crt"),
        "MREG_TLS_KEY": str(tmp_path / "tls.key"),
        "MREG_LISTEN": f"127.0.0.1:{port}",
        "MREG_UPSTREAM": f"http://127.0.0.1:{free_port()}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "mreg_proxy"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        lines = []
        for _ in range(50):  # bounded: the notes follow the "listening" line directly
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "serving plain HTTP" in line:  # the last start-up note
                break
        return "".join(lines)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()


def test_startup_says_there_are_no_users_yet_and_plain_http(tmp_path: Path) -> None:
    log = _startup_log(tmp_path)
    assert f"no users yet in {tmp_path / 'users.yml'}" in log
    assert "manage-user add NAME" in log
    assert "serving plain HTTP: no usable TLS pair" in log


def test_startup_notes_are_silent_when_users_and_tls_exist() -> None:
    settings = settings_from({}, {})
    assert startup_notes(settings, users=1, tls_on=True) == []
    assert len(startup_notes(settings, users=0, tls_on=False)) == 2
