"""manage-tls: show, install or remove the certificate and key the proxy serves HTTPS with.

Runs inside the auth container. ``cert`` and ``key`` read PEM from stdin, validate it with the
``cryptography`` package and replace the file atomically (mode 0600); empty input deletes the file,
which is how TLS is turned off. The running proxy notices either change within a couple of seconds
and keeps its last good pair while the files do not match, so a rotation is: new certificate, then
new key. Nothing here ever prints a private key.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Callable, Sequence, TypeVar, Union, get_args

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ..config import Settings
from ..files import atomic_write, remove
from ..transport.tls import build_context, why_unusable
from . import OneLineParser, Refusal, stdin_is_absent, warn
from .command import audit, run

PROG = "manage-tls"

# The key types a TLS server can sign its handshake with.
PrivateKey = Union[
    rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey
]
_SIGNING_KEYS = get_args(PrivateKey)
_PRIVATE_KEY_MARKER = b"PRIVATE KEY-----"

T = TypeVar("T")


def one_line(exc: Exception) -> str:
    """cryptography's messages span lines; a refusal is one."""
    return " ".join(str(exc).split())


def parse_certificates(data: bytes) -> list[x509.Certificate]:
    """The certificate (and chain) in ``data``; the server's own certificate comes first."""
    if _PRIVATE_KEY_MARKER in data:
        # a combined PEM would put the key in tls.crt, where it does not belong
        raise Refusal(
            "the input contains a private key: give only certificates to 'manage-tls cert'"
        )
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise Refusal(f"not a PEM certificate: {one_line(exc)}") from None


def parse_private_key(data: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise Refusal(
            "the key is encrypted and the proxy cannot ask for a passphrase: "
            "decrypt it first (openssl pkey -in encrypted.key -out tls.key)"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise Refusal(f"not a PEM private key: {one_line(exc)}") from None
    if not isinstance(key, _SIGNING_KEYS):
        raise Refusal(f"{describe_key(key)}s cannot sign TLS handshakes; use RSA, EC or Ed25519")
    return key


def _parsed_file(path: Path, parse: Callable[[bytes], T]) -> T | None:
    """``parse`` of the file's bytes; None when it is absent. Refusal, naming it, when unusable."""
    try:
        return parse(path.read_bytes())
    except FileNotFoundError:
        return None
    except Refusal as exc:
        raise Refusal(f"{path}: {exc}") from None


def certificates_in(path: Path) -> list[x509.Certificate] | None:
    return _parsed_file(path, parse_certificates)


def private_key_in(path: Path) -> PrivateKey | None:
    return _parsed_file(path, parse_private_key)


def key_matches(certificate: x509.Certificate, key: PrivateKey) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return certificate.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def describe_key(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA {key.key_size}-bit private key"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name} private key"
    return f"{type(key).__name__.removeprefix('_').removesuffix('PrivateKey')} private key"


def subject_alt_names(certificate: x509.Certificate) -> str:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "none (clients will reject it: they check the SAN, not the subject)"
    prefixes = {x509.DNSName: "DNS", x509.IPAddress: "IP"}
    return ", ".join(
        f"{prefixes.get(type(name), type(name).__name__)}:{name.value}" for name in names
    )


def validity(certificate: x509.Certificate, now: datetime.datetime) -> str:
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    dates = f"{start:%Y-%m-%d %H:%M} UTC to {end:%Y-%m-%d %H:%M} UTC"
    if now < start:
        return f"{dates} (NOT VALID YET)"
    if now > end:
        return f"{dates} (EXPIRED {(now - end).days} days ago)"
    return f"{dates} ({(end - now).days} days left)"


def certificate_lines(chain: list[x509.Certificate]) -> list[str]:
    leaf = chain[0]
    issuer = leaf.issuer.rfc4514_string()
    if leaf.issuer == leaf.subject:
        issuer += " (self-signed)"
    return [
        f"  subject:  {leaf.subject.rfc4514_string()}",
        f"  SANs:     {subject_alt_names(leaf)}",
        f"  issuer:   {issuer}",
        f"  valid:    {validity(leaf, datetime.datetime.now(datetime.timezone.utc))}",
        f"  SHA-256:  {leaf.fingerprint(hashes.SHA256()).hex(':').upper()}",
        f"  chain:    {len(chain)} certificate{'s' if len(chain) > 1 else ''}",
    ]


def attempt(load: Callable[[Path], T | None], path: Path) -> tuple[T | None, str | None]:
    """(what ``load`` found, None), or (None, why it is unusable): print reports, never refuses."""
    try:
        return load(path), None
    except Refusal as exc:
        return None, str(exc)


def served_problem(settings: Settings) -> str | None:
    """Why the proxy would refuse the installed pair, asked of the proxy's own loader (OpenSSL
    refuses things the parsing above accepts, such as an RSA key under 2048 bits); None if it
    would serve it."""
    try:
        build_context(settings.tls_cert, settings.tls_key)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        return why_unusable(settings.tls_cert, settings.tls_key, exc)
    return None


REFUSED_PAIR = (
    "the proxy keeps the last good pair it loaded; "
    "started without one, it answers every request with an error"
)


def cmd_print(settings: Settings, args: argparse.Namespace) -> None:
    chain, cert_problem = attempt(certificates_in, settings.tls_cert)
    key, key_problem = attempt(private_key_in, settings.tls_key)
    if cert_problem:
        print(f"certificate: INVALID: {cert_problem}")
    elif chain is None:
        print(f"certificate: {settings.tls_cert}: absent")
    else:
        print(f"certificate: {settings.tls_cert}")
        print("\n".join(certificate_lines(chain)))
    if key_problem:
        print(f"key: INVALID: {key_problem}")
    else:
        print(f"key: {settings.tls_key}: {f'{describe_key(key)} (not shown)' if key else 'absent'}")
    if chain and key:
        matches = key_matches(chain[0], key)
        print(f"key matches certificate: {'yes' if matches else 'NO'}")
        problem = served_problem(settings) if matches else None
        if matches and problem is None:
            print("pair complete: yes (the proxy serves HTTPS with it)")
            return
        if problem:
            print(f"pair complete: NO ({problem}; {REFUSED_PAIR})")
            return
    both_present = (chain or cert_problem) and (key or key_problem)
    if both_present:  # the proxy treats a present but unusable pair as a rotation half done
        print(f"pair complete: NO ({REFUSED_PAIR})")
    else:
        print("pair complete: no (the proxy serves plain HTTP)")


def report_pair(settings: Settings) -> None:
    """After a write: tell the operator what the proxy will do with the pair as it now stands."""
    try:
        chain, key = certificates_in(settings.tls_cert), private_key_in(settings.tls_key)
    except Refusal as exc:
        warn(PROG, f"{exc}; the proxy keeps its last good pair until this is fixed")
        return
    if chain is None or key is None:
        missing = "manage-tls cert" if chain is None else "manage-tls key"
        print(f"TLS starts once '{missing}' installs the other half of the pair")
    elif not key_matches(chain[0], key):
        warn(
            PROG,
            f"the certificate in {settings.tls_cert} does not match the key in {settings.tls_key}; "
            "the proxy keeps serving the previous pair until they match",
        )
    elif problem := served_problem(settings):
        warn(PROG, f"the proxy cannot serve this pair: {problem}; {REFUSED_PAIR}")
    else:
        print("certificate and key match: the proxy serves HTTPS with them within seconds")


def install(path: Path, data: bytes, what: str) -> None:
    atomic_write(path, data, mode=0o600)
    print(f"wrote {what} to {path}")


def uninstall(path: Path, what: str) -> None:
    """Empty input: delete the file, which turns TLS off."""
    if remove(path):
        print(f"removed the {what} {path}: the proxy serves plain HTTP within a couple of seconds")
    else:
        print(f"no {what} at {path}: nothing to remove (the proxy serves plain HTTP)")


def read_input(what: str) -> bytes:
    """All of stdin. No stdin at all (``podman exec`` without ``-i``) would read as empty input,
    delete the file and turn TLS off, so it is refused; deleting takes a pipe or a file. On a
    terminal, say what to paste and how to end it: a silent wait looks like a hang."""
    if stdin_is_absent():
        raise Refusal(
            "no input on stdin (forgot 'podman exec -i' / 'kubectl exec -i'?); "
            "to remove the file, pipe empty input: 'podman exec -i ... < /dev/null'"
        )
    if sys.stdin.isatty():
        print(f"paste the PEM {what}, then press Ctrl-D on an empty line", file=sys.stderr, flush=True)
    return sys.stdin.buffer.read()


def cmd_cert(settings: Settings, args: argparse.Namespace) -> None:
    data = read_input("certificate (chain)")
    if not data.strip():
        uninstall(settings.tls_cert, "certificate")
        audit(settings, "tls_certificate_removed", path=str(settings.tls_cert))
        return
    chain = parse_certificates(data)
    # write what was checked, re-encoded: stray text around the PEM blocks stays out
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    what = "the certificate" if len(chain) == 1 else f"{len(chain)} certificates"
    install(settings.tls_cert, pem, what)
    audit(
        settings, "tls_certificate_changed", path=str(settings.tls_cert),
        subject=chain[0].subject.rfc4514_string(), fingerprint=chain[0].fingerprint(hashes.SHA256()).hex(),
        not_after=chain[0].not_valid_after_utc.isoformat(),
    )
    if chain[0].not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc):
        warn(PROG, "this certificate has expired: clients will refuse it")
    report_pair(settings)


def cmd_key(settings: Settings, args: argparse.Namespace) -> None:
    data = read_input("private key")
    if not data.strip():
        uninstall(settings.tls_key, "key")
        audit(settings, "tls_key_removed", path=str(settings.tls_key))
        return
    key = parse_private_key(data)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    install(settings.tls_key, pem, f"the {describe_key(key)}")
    audit(settings, "tls_key_changed", path=str(settings.tls_key), key=describe_key(key))
    report_pair(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Manage the certificate and key mreg serves HTTPS with. Paths come from "
        "MREG_TLS_CERT and MREG_TLS_KEY (default /auth/tls.crt, /auth/tls.key). To rotate: "
        "'manage-tls cert < new.crt', then 'manage-tls key < new.key'. Empty input turns TLS off.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "print", help="show the certificate, whether the key matches, whether the pair is complete"
    ).set_defaults(run=cmd_print)
    commands.add_parser(
        "cert", help="install the PEM certificate (chain) read from stdin; empty input deletes it"
    ).set_defaults(run=cmd_cert)
    commands.add_parser(
        "key", help="install the PEM private key read from stdin; empty input deletes it"
    ).set_defaults(run=cmd_key)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    run(PROG, build_parser(), argv)


if __name__ == "__main__":
    main()
