"""The TLS state of the listener: which certificate new connections get, if any.

Both files present and matching: HTTPS. Both absent, or one deliberately removed (an empty
``manage-tls cert`` or ``key``): plain HTTP. Present but unreadable, invalid or mismatched (a
rotation half done): the last good state stays in force and one line says why.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger("mreg.tls")


def build_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for the pair; raises ssl.SSLError/OSError when unusable or mismatched."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _signature(path: Path) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class TlsState:
    """Holds the SSL context for new connections; ``refresh()`` re-reads the files when they change."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self.context: ssl.SSLContext | None = None
        self._signature: object = object()  # never equal to a real one: the first refresh loads

    def refresh(self) -> None:
        try:
            signature = (_signature(self.cert), _signature(self.key))
        except OSError as exc:
            log.error("cannot stat TLS files: %s; keeping the current state", exc)
            return
        if signature == self._signature:
            return
        self._signature = signature
        cert_sig, key_sig = signature
        if cert_sig is None or key_sig is None:
            if self.context is not None or cert_sig != key_sig:
                missing = self.cert if cert_sig is None else self.key
                log.warning("TLS off: %s is absent; serving plain HTTP", missing)
            self.context = None
            return
        try:
            self.context = build_context(self.cert, self.key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            state = "HTTPS with the previous certificate" if self.context else "plain HTTP"
            log.error("TLS files %s + %s rejected (%s); still serving %s", self.cert, self.key, exc, state)
            return
        log.info("TLS on: serving HTTPS with %s", self.cert)
