"""Container probe: ``python3 -m mreg_proxy.cli.probe [/healthz|/readyz]``.

Exits 0 when the local proxy answers the path with 200, else 1. The port speaks HTTP until a
certificate is installed and HTTPS after, so both are tried, the likelier one first (HTTPS when both
TLS files are there), so that a probe does not leave a failed request in the log and the metrics
every time (the certificate is not checked: this only asks the process next door whether it is
alive). An exec probe rather than an httpGet probe,
because the scheme changes at run time, and because podman 4.3 turns exec probes into health
checks by joining the words with spaces: every word here is free of spaces.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from typing import Sequence

from ..config import ConfigError, load_settings

TIMEOUT = 4.0


def probe(port: int, path: str, *, tls_likely: bool) -> bool:
    context = ssl._create_unverified_context()  # noqa: S323 - liveness only, same pod
    for scheme in ("https", "http") if tls_likely else ("http", "https"):
        try:
            with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}{path}", timeout=TIMEOUT,
                                        context=context) as response:
                return response.status == 200
        except urllib.error.HTTPError:
            return False  # it answered, in this scheme: not ready
        except OSError:
            continue
    return False


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    path = args[0] if args else "/healthz"
    if path not in ("/healthz", "/readyz"):
        print("usage: python3 -m mreg_proxy.cli.probe [/healthz|/readyz]", file=sys.stderr)
        return 2
    try:
        settings = load_settings([], os.environ)
    except ConfigError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 1
    tls_likely = settings.tls_cert.exists() and settings.tls_key.exists()
    return 0 if probe(settings.listen_port, path, tls_likely=tls_likely) else 1


if __name__ == "__main__":
    sys.exit(main())
