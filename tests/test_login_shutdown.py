"""The real proxy process stops on SIGTERM without working through a queue of password checks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import bcrypt

from cli_helpers import SRC
from helpers import basic, free_port
from mreg_proxy.auth.users import User, write_users_file

QUEUED = 60
STOP_BOUND = 30  # seconds: a bound on the wait, not a timing assertion (a queue of 60 checks
# at cost 14 is over a minute of bcrypt; before the fix, stopping waited for all of it)


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        assert process.poll() is None, "the proxy exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the proxy never listened")


def test_sigterm_with_a_full_queue_exits_promptly(tmp_path: Path) -> None:
    users = tmp_path / "users.yml"
    costly = bcrypt.hashpw(b"x", bcrypt.gensalt(14)).decode()  # unknown names are checked against it
    write_users_file(users, {"amy": User("amy", "admin", costly)})
    port = free_port()
    env = {
        **os.environ, "PYTHONPATH": str(SRC), "MREG_LISTEN": f"127.0.0.1:{port}",
        "MREG_UPSTREAM": f"http://127.0.0.1:{free_port()}", "MREG_USERS_FILE": str(users),
        "MREG_TLS_CERT": str(tmp_path / "tls.crt"), "MREG_TLS_KEY": str(tmp_path / "tls.key"),
        "MREG_BCRYPT_WORKERS": "1", "MREG_BCRYPT_QUEUE": "1000",
        "MREG_LOGIN_FREE_FAILURES": "1000", "MREG_LOGIN_ADDRESS_FREE_FAILURES": "1000",
    }
    log = tmp_path / "proxy.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "mreg_proxy"], env=env, stdout=out, stderr=subprocess.STDOUT)
    clients: list[socket.socket] = []
    try:
        _wait_listening(port, process)
        for i in range(QUEUED):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            auth = basic(f"guess{i}", "wrong")["Authorization"]
            sock.sendall(f"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode())
            clients.append(sock)
        time.sleep(1)  # let the proxy read them all and queue their checks
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_BOUND)
    finally:
        for sock in clients:
            sock.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "mreg-proxy stopped" in log.read_text()
