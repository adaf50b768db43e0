"""A pass-through in front of the S3 engine that can hold one request: a race made deterministic.

A registry configured with this as its S3 endpoint works as usual; ``hold(fragment)`` makes the
next PUT whose path contains ``fragment`` wait (before it reaches S3) until ``release()``. The
Host header goes through unchanged, so request signatures stay valid. Bodies are read whole:
meant for small objects (links, manifests), not for big blobs.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from bench.services import HOST

HOLD_SECONDS = 60.0  # bound on a hold: a test that forgets to release still ends
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding"}


class S3Hold:
    def __init__(self, target: str) -> None:
        self.target = urlsplit(target)
        self.held = threading.Event()
        self._release = threading.Event()
        self._fragment: str | None = None
        self._guard = threading.Lock()
        self._server = ThreadingHTTPServer((HOST, 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://{HOST}:{self._server.server_address[1]}"

    def __enter__(self) -> S3Hold:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def hold(self, fragment: str) -> None:
        self._fragment = fragment
        self.held.clear()
        self._release.clear()

    def release(self) -> None:
        self._release.set()

    def _should_hold(self, method: str, path: str) -> bool:
        with self._guard:
            if method == "PUT" and self._fragment is not None and self._fragment in path:
                self._fragment = None  # once
                return True
            return False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hold = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if hold._should_hold(self.command, self.path):
                    hold.held.set()
                    hold._release.wait(HOLD_SECONDS)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream = http.client.HTTPConnection(hold.target.hostname, hold.target.port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    for name, value in response.getheaders():
                        if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                            self.send_header(name, value)
                    length_header = response.getheader("Content-Length")
                    self.send_header("Content-Length", length_header if self.command == "HEAD" and length_header else str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler
