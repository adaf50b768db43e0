"""The TLS state of the listener: which certificate new connections get, if any.

Both files present and matching: HTTPS. Both absent, or one deliberately removed (an empty
``manage-tls cert`` or ``key``): plain HTTP. Present but unreadable, invalid, mismatched (a
rotation half done) or refused by OpenSSL (an RSA key under 2048 bits): the last good pair stays in
force and one line says why. With no good pair to keep (a fresh start), the state fails closed:
``refused`` says why, and the proxy answers every request with an error instead of serving
registry content over plain HTTP to clients that expect HTTPS.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from ..files import signature

log = logging.getLogger("mreg.tls")


def _no_passphrase() -> str:
    # Without a callback OpenSSL prompts on the terminal for an encrypted key, which would block
    # the event loop (or read the container's stdin); an encrypted key is simply unusable here.
    raise ValueError("the private key is encrypted; install it decrypted")


def build_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for the pair; raises ssl.SSLError/OSError/ValueError when unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key, password=_no_passphrase)
    context.set_alpn_protocols(["http/1.1"])
    return context


# OpenSSL's reasons for refusing a key or certificate that is well formed but too weak to serve
_TOO_WEAK = {
    "EE_KEY_TOO_SMALL": "the key is too small for OpenSSL (RSA needs at least 2048 bits)",
    "CA_KEY_TOO_SMALL": "a certificate in the chain has a key too small for OpenSSL",
    "CA_MD_TOO_WEAK": "a certificate is signed with a digest OpenSSL refuses (e.g. SHA-1 or MD5)",
}


def why_unusable(cert: Path, key: Path, exc: Exception) -> str:
    """Which half of the pair is wrong, in words: for a broken file OpenSSL only says "PEM lib"."""
    if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
        return f"{key} does not match {cert} (a rotation half done: install the matching key)"
    if isinstance(exc, ssl.SSLError) and exc.reason in _TOO_WEAK:
        return f"{cert}: {_TOO_WEAK[exc.reason]}"
    if isinstance(exc, ValueError):  # from _no_passphrase
        return f"{key}: {exc}"
    if not isinstance(exc, ssl.SSLError):  # OpenSSL's read errors do not name the file
        return f"cannot read {cert} or {key}: {exc.strerror or exc}"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except (OSError, ValueError):
        return f"{cert} is not a complete PEM certificate ({exc})"
    return f"{key} is not a complete PEM private key ({exc})"


class TlsState:
    """The SSL context for new connections; ``refresh()`` re-reads the files when they change."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self.context: ssl.SSLContext | None = None
        # why both files are there but nothing can be served (no good pair loaded yet); None when
        # the state is HTTPS or deliberate plain HTTP
        self.refused: str | None = None
        self._signature: object = object()  # never equal to a real one: the first refresh loads

    def refresh(self) -> None:
        try:
            pair = (signature(self.cert), signature(self.key))
        except OSError as exc:
            if self._signature != str(exc):  # once per distinct problem, not on every poll
                self._signature = str(exc)
                log.error("cannot stat TLS files: %s; keeping the current state", exc)
            if self.context is None:  # whether TLS is wanted is unknown: fail closed
                self.refused = f"cannot stat the TLS files: {exc.strerror or exc}"
            return
        if pair == self._signature:
            return
        self._signature = pair
        cert_sig, key_sig = pair
        if cert_sig is None or key_sig is None:
            if self.context is not None or cert_sig != key_sig:
                missing = self.cert if cert_sig is None else self.key
                log.warning("TLS off: %s is absent; serving plain HTTP", missing)
            self.context = None
            self.refused = None
            return
        try:
            self.context = build_context(self.cert, self.key)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            why = why_unusable(self.cert, self.key, exc)
            if self.context is not None:
                log.error("TLS files rejected: %s; still serving HTTPS with the previous pair", why)
            else:
                self.refused = why
                log.error(
                    "TLS files rejected: %s; answering every request with an error (never plain "
                    "HTTP) until a usable pair is installed with manage-tls", why,
                )
            return
        self.refused = None
        log.info("TLS on: serving HTTPS with %s", self.cert)
