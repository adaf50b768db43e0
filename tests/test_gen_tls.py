"""mreg-gen-tls: the right SAN, a certificate clients can trust as ca.crt, careful file handling."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cli_helpers import CLI_TIMEOUT, SRC, Cli, Result, assert_refused

PROG = "mreg-gen-tls"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def generate(cli: Cli, *args: str) -> Result:
    return cli.run("gen_tls", *args)


def certificate(folder: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((folder / "tls.crt").read_bytes())


def sans(folder: Path) -> list[x509.GeneralName]:
    return list(certificate(folder).extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("192.0.2.7", x509.IPAddress(ipaddress.ip_address("192.0.2.7"))),
        ("::1", x509.IPAddress(ipaddress.ip_address("::1"))),
        ("registry.example.com", x509.DNSName("registry.example.com")),
        ("localhost", x509.DNSName("localhost")),
    ],
)
def test_san_type_follows_the_address(cli: Cli, out: Path, address: str, expected: x509.GeneralName) -> None:
    result = generate(cli, address, "--out", str(out))
    assert result.code == 0, result
    assert sans(out) == [expected]


def test_certificate_is_its_own_ca(cli: Cli, out: Path) -> None:
    generate(cli, "127.0.0.1", "--out", str(out))
    cert = certificate(out)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.issuer == cert.subject


def test_key_matches_certificate(cli: Cli, out: Path) -> None:
    generate(cli, "127.0.0.1", "--out", str(out))
    key = serialization.load_pem_private_key((out / "tls.key").read_bytes(), password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(*spki) == certificate(out).public_key().public_bytes(*spki)


def test_days_sets_the_validity(cli: Cli, out: Path) -> None:
    generate(cli, "127.0.0.1", "--days", "30", "--out", str(out))
    left = certificate(out).not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    assert 29 <= left.days <= 30


def test_key_is_private_and_certificate_readable(cli: Cli, out: Path) -> None:
    generate(cli, "127.0.0.1", "--out", str(out))
    assert stat.S_IMODE((out / "tls.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "tls.crt").stat().st_mode) == 0o644


def test_default_output_folder_is_the_current_one(cli: Cli) -> None:
    assert generate(cli, "127.0.0.1").code == 0
    assert (cli.cwd / "tls.crt").is_file() and (cli.cwd / "tls.key").is_file()


def test_prints_how_to_load_and_trust_it(cli: Cli, out: Path) -> None:
    result = generate(cli, "192.0.2.7", "--out", str(out))
    assert f"manage-tls cert < {out}/tls.crt" in result.out
    assert f"manage-tls key < {out}/tls.key" in result.out
    assert "/etc/containers/certs.d/192.0.2.7:5000/ca.crt" in result.out
    assert "/etc/docker/certs.d/192.0.2.7:5000/ca.crt" in result.out


@pytest.mark.parametrize("address", ["", "a b", "host:5000", "-bad-.example", "x" * 254, "a..b"])
def test_bad_address_is_refused(cli: Cli, out: Path, address: str) -> None:
    assert_refused(generate(cli, address, "--out", str(out)), PROG)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("days", ["0", "-1", "3651", "soon"])
def test_bad_days_are_refused(cli: Cli, out: Path, days: str) -> None:
    assert_refused(generate(cli, "127.0.0.1", "--days", days, "--out", str(out)), PROG)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("existing", ["tls.crt", "tls.key"])
def test_existing_files_are_never_replaced(cli: Cli, out: Path, existing: str) -> None:
    (out / existing).write_bytes(b"keep me")
    assert_refused(generate(cli, "127.0.0.1", "--out", str(out)), PROG)
    assert (out / existing).read_bytes() == b"keep me"
    assert [p.name for p in out.iterdir()] == [existing]


def test_missing_output_folder_is_created(cli: Cli, out: Path) -> None:
    result = generate(cli, "127.0.0.1", "--out", str(out / "new" / "tls"))
    assert result.code == 0, result
    assert (out / "new" / "tls" / "tls.crt").is_file() and (out / "new" / "tls" / "tls.key").is_file()


def test_output_path_that_is_a_file_is_refused(cli: Cli, out: Path) -> None:
    (out / "file").write_text("x")
    result = generate(cli, "127.0.0.1", "--out", str(out / "file"))
    assert_refused(result, PROG)
    assert "exists and is not a folder" in result.err


def test_next_steps_name_the_auth_container_of_both_podman_generations(cli: Cli, out: Path) -> None:
    result = generate(cli, "127.0.0.1", "--out", str(out))
    assert "podman exec -i mreg-pod-auth manage-tls cert" in result.out
    assert "on podman 4.3 mreg-pod-0-auth" in result.out


def test_host_wrapper_runs_from_a_checkout(out: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(SRC.parent / "bin" / "mreg-gen-tls"), "127.0.0.1", "--out", str(out)],
        env=env,
        capture_output=True,
        timeout=CLI_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "tls.crt").is_file()


def test_needs_nothing_beyond_cryptography(cli: Cli) -> None:
    """bin/mreg-gen-tls runs on hosts that have only Python and cryptography."""
    probe = (
        "import sys, mreg_proxy.cli.gen_tls; "
        "print(sorted({'aiohttp', 'yarl', 'yaml', 'multidict'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=cli.env, capture_output=True, timeout=CLI_TIMEOUT
    )
    assert done.stdout.strip() == b"[]", done.stderr
