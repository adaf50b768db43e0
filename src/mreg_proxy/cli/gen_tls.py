"""mreg-gen-tls: a self-signed certificate and key for the address clients use to reach mreg.

Runs on the operator's host (``bin/mreg-gen-tls`` works from a checkout with only the
``cryptography`` package installed), so it imports nothing beyond the standard library,
``cryptography``, ``files`` and ``pod`` (the container names). The certificate is its own CA (basicConstraints CA:TRUE), so
clients can trust it directly as ``ca.crt``.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import secrets
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..files import atomic_write
from . import OneLineParser, Refusal, one_line_errors
from .pod import pod_names

PROG = "mreg-gen-tls"
DEFAULT_DAYS = 365
MAX_DAYS = 3650
MREG_PORT = 5000
# what `podman kube play mreg.yml` names the auth container: podman 4.4 and later, podman 4.3
AUTH_CONTAINERS = tuple(f"{pod}-auth" for pod in pod_names("mreg"))
# backdated so that a client whose clock is a little behind still accepts it
CLOCK_SKEW = datetime.timedelta(minutes=5)
MAX_COMMON_NAME = 64  # X.509 upper bound for CN; the SAN is what clients check anyway
_DNS_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*\.?")


def subject_alt_name(address: str) -> x509.GeneralName:
    """An IP SAN for an IP address, a DNS SAN for a host name; Refusal for anything else."""
    try:
        return x509.IPAddress(ipaddress.ip_address(address.strip("[]")))
    except ValueError:
        pass
    if len(address) <= 253 and _DNS_NAME.fullmatch(address):
        return x509.DNSName(address.rstrip(".").lower())
    hint = " (give it without a port)" if ":" in address else ""
    raise Refusal(f"{address!r} is neither an IP address nor a DNS name{hint}")


def self_signed(address: str, days: int) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for ``address``, valid ``days`` days from now.

    EC P-256: small, fast, and accepted by every client mreg targets (Go's TLS, OpenSSL).
    """
    san = subject_alt_name(address)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(san.value)[:MAX_COMMON_NAME])])
    now = datetime.datetime.now(datetime.timezone.utc)
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)  # positive, 127 bits
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def instructions(address: str, cert: Path, key: Path, days: int) -> str:
    host = f"[{address.strip('[]')}]" if ":" in address else address
    where = f"{host}:{MREG_PORT}"
    return "\n".join(
        [
            f"wrote {cert} (certificate, valid {days} days)"
            f" and {key} (private key: keep it secret)",
            "load them into mreg, certificate first, then key"
            f" (the auth container is {AUTH_CONTAINERS[0]}; on podman 4.3 {AUTH_CONTAINERS[1]}:"
            " 'podman ps' shows yours):",
            f"  podman exec -i {AUTH_CONTAINERS[0]} manage-tls cert < {cert}",
            f"  podman exec -i {AUTH_CONTAINERS[0]} manage-tls key < {key}",
            f"trust it on every client ({MREG_PORT} is mreg's port;"
            " use the one clients connect to):",
            f"  podman/skopeo/buildah: /etc/containers/certs.d/{where}/ca.crt",
            f"  docker:                /etc/docker/certs.d/{where}/ca.crt",
            f"  e.g. sudo mkdir -p /etc/containers/certs.d/{where} && "
            f"sudo cp {cert} /etc/containers/certs.d/{where}/ca.crt",
        ]
    )


def generate(address: str, days: int, out: Path) -> str:
    """Write ``out``/tls.crt and ``out``/tls.key; return what to tell the operator."""
    if not 1 <= days <= MAX_DAYS:
        raise Refusal(f"--days {days}: must be between 1 and {MAX_DAYS}")
    cert_pem, key_pem = self_signed(address, days)  # refuses a bad address before any folder is made
    if out.exists() and not out.is_dir():
        raise Refusal(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    cert, key = out / "tls.crt", out / "tls.key"
    for path in (cert, key):
        if path.exists():  # never replace a key someone may already have deployed
            raise Refusal(f"{path} exists; move it away or choose another --out")
    atomic_write(key, key_pem, mode=0o600)
    atomic_write(cert, cert_pem, mode=0o644)  # public: it is copied to every client as ca.crt
    return instructions(address, cert, key, days)


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog=PROG,
        description="Create a self-signed certificate and key (tls.crt, tls.key) for mreg.",
    )
    parser.add_argument("address", metavar="ADDRESS", help="IP address or DNS name clients use")
    parser.add_argument(
        "--days", type=int, default=DEFAULT_DAYS, help=f"validity in days (default {DEFAULT_DAYS})"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("."), help="folder for tls.crt and tls.key (default .)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with one_line_errors(PROG):
        print(generate(args.address, args.days, args.out))


if __name__ == "__main__":
    main()
