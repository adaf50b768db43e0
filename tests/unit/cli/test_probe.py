"""python3 -m mreg_proxy.cli.probe: 0 when the local proxy answers 200, in HTTP (or HTTPS), else 1."""

from __future__ import annotations

import http.server
import socket
import threading
from typing import Iterator

import pytest

from mreg_proxy.cli import probe


class _Handler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        _Handler.requests.append(self.path)
        self.send_response(200 if self.path == "/healthz" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server_port() -> Iterator[int]:
    _Handler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_probe_succeeds_on_200_over_plain_http(server_port: int) -> None:
    assert probe.probe(server_port, "/healthz", tls_likely=False) is True


def test_probe_fails_on_an_error_status(server_port: int) -> None:
    assert probe.probe(server_port, "/readyz", tls_likely=False) is False


def test_plain_http_probe_makes_no_failed_tls_attempt(server_port: int) -> None:
    """Without TLS files the probe speaks HTTP first: no junk request in the proxy's log."""
    assert probe.probe(server_port, "/healthz", tls_likely=False) is True
    assert probe.probe(server_port, "/readyz", tls_likely=False) is False
    assert _Handler.requests == ["/healthz", "/readyz"]


def test_probe_falls_back_to_http_when_tls_was_expected(server_port: int) -> None:
    assert probe.probe(server_port, "/healthz", tls_likely=True) is True


def test_probe_fails_when_nothing_listens() -> None:
    assert probe.probe(_closed_port(), "/healthz", tls_likely=True) is False


def test_main_uses_the_listen_port_from_the_environment(server_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MREG_LISTEN", f"0.0.0.0:{server_port}")
    assert probe.main(["/healthz"]) == 0


def test_main_refuses_other_paths() -> None:
    assert probe.main(["/v2/"]) == 2
