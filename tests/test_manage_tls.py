"""manage-tls: print, cert and key, their warnings and refusals, and the files they write."""

from __future__ import annotations

import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from cli_helpers import (
    AuthFiles, Cli, Result, assert_refused, encrypted, fingerprint, rsa_1024_pair, run_on_terminal, tls_pair,
)

PROG = "manage-tls"


def run(cli: Cli, *args: str, stdin: bytes = b"") -> Result:
    return cli.run("manage_tls", *args, stdin=stdin)


def install(cli: Cli, cert: bytes, key: bytes) -> None:
    assert run(cli, "cert", stdin=cert).code == 0
    assert run(cli, "key", stdin=key).code == 0


# --- print ------------------------------------------------------------------------------------


def test_print_without_files_says_the_pair_is_incomplete(cli: Cli) -> None:
    result = run(cli, "print")
    assert result.code == 0
    assert result.out.count("absent") == 2
    assert "pair complete: no" in result.out


def test_print_shows_the_certificate_details(cli: Cli) -> None:
    cert, key = tls_pair()
    install(cli, cert, key)
    out = run(cli, "print").out
    assert "subject:  CN=127.0.0.1" in out
    assert "SANs:     IP:127.0.0.1" in out
    assert "issuer:   CN=127.0.0.1 (self-signed)" in out
    assert "days left" in out
    assert fingerprint(cert) in out


def test_print_says_a_matching_pair_is_complete(cli: Cli) -> None:
    install(cli, *tls_pair())
    out = run(cli, "print").out
    assert "key matches certificate: yes" in out
    assert "pair complete: yes" in out


def test_print_never_shows_the_private_key(cli: Cli) -> None:
    cert, key = tls_pair()
    install(cli, cert, key)
    out = run(cli, "print").out
    body = b"".join(key.splitlines()[1:-1]).decode()
    assert "PRIVATE KEY-----" not in out
    assert body[:16] not in out.replace("\n", "")


def test_print_says_a_mismatched_pair_does_not_match(cli: Cli) -> None:
    cert, _key = tls_pair()
    _cert, other_key = tls_pair()
    install(cli, cert, other_key)
    out = run(cli, "print").out
    assert "key matches certificate: NO" in out
    assert "pair complete: NO" in out


def test_print_reports_an_invalid_certificate_file(cli: Cli, auth_files: AuthFiles) -> None:
    install(cli, *tls_pair())
    auth_files.cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n")
    result = run(cli, "print")
    assert result.code == 0
    assert "certificate: INVALID" in result.out
    assert "pair complete: NO (the proxy keeps the last good pair" in result.out


def test_print_with_only_a_key_says_plain_http(cli: Cli) -> None:
    run(cli, "key", stdin=tls_pair()[1])
    assert "pair complete: no (the proxy serves plain HTTP)" in run(cli, "print").out


# --- cert and key -----------------------------------------------------------------------------


def test_cert_writes_the_certificate_with_mode_0600(cli: Cli, auth_files: AuthFiles) -> None:
    cert, _key = tls_pair()
    assert run(cli, "cert", stdin=cert).code == 0
    assert fingerprint(auth_files.cert.read_bytes()) == fingerprint(cert)
    assert stat.S_IMODE(auth_files.cert.stat().st_mode) == 0o600


def test_key_writes_the_key_with_mode_0600(cli: Cli, auth_files: AuthFiles) -> None:
    _cert, key = tls_pair()
    assert run(cli, "key", stdin=key).code == 0
    written = serialization.load_pem_private_key(auth_files.key.read_bytes(), password=None)
    original = serialization.load_pem_private_key(key, password=None)
    assert written.private_numbers() == original.private_numbers()  # type: ignore[union-attr]
    assert stat.S_IMODE(auth_files.key.stat().st_mode) == 0o600


def test_cert_accepts_a_chain(cli: Cli, auth_files: AuthFiles) -> None:
    chain = tls_pair()[0] + tls_pair()[0]
    assert run(cli, "cert", stdin=chain).code == 0
    assert len(x509.load_pem_x509_certificates(auth_files.cert.read_bytes())) == 2


@pytest.mark.parametrize("command", ["cert", "key"])
@pytest.mark.parametrize("empty", [b"", b"\n  \n"], ids=["nothing", "blank"])
def test_empty_input_deletes_the_file(cli: Cli, auth_files: AuthFiles, command: str, empty: bytes) -> None:
    install(cli, *tls_pair())
    result = run(cli, command, stdin=empty)
    assert result.code == 0
    assert "plain HTTP" in result.out
    path = auth_files.cert if command == "cert" else auth_files.key
    assert not path.exists()


@pytest.mark.parametrize("command", ["cert", "key"])
def test_no_stdin_at_all_is_refused_and_keeps_the_file(cli: Cli, auth_files: AuthFiles, command: str) -> None:
    """`podman exec` without -i gives /dev/null: that must not delete the file (TLS off)."""
    install(cli, *tls_pair())
    path = auth_files.cert if command == "cert" else auth_files.key
    before = path.read_bytes()
    result = cli.run("manage_tls", command, stdin=None)
    assert_refused(result, "manage-tls")
    assert "exec -i" in result.err
    assert path.read_bytes() == before


@pytest.mark.parametrize("command, what", [("cert", "certificate (chain)"), ("key", "private key")])
def test_on_a_terminal_it_says_what_to_paste_and_how_to_end(
    cli: Cli, auth_files: AuthFiles, command: str, what: str
) -> None:
    cert, key = tls_pair()
    pem = cert if command == "cert" else key
    hint = f"paste the PEM {what}, then press Ctrl-D on an empty line"
    code, output = run_on_terminal(cli, "manage_tls", [command], [pem + b"\x04"], prompt=b"empty line\r\n")
    assert code == 0, output
    assert hint in output
    assert (auth_files.cert if command == "cert" else auth_files.key).is_file()


def test_empty_input_without_a_file_is_fine(cli: Cli) -> None:
    result = run(cli, "cert")
    assert result.code == 0
    assert "nothing to remove" in result.out


def test_matching_pair_is_announced(cli: Cli) -> None:
    cert, key = tls_pair()
    run(cli, "cert", stdin=cert)
    result = run(cli, "key", stdin=key)
    assert "certificate and key match" in result.out
    assert result.err == ""


def test_cert_not_matching_the_key_is_written_with_a_warning(cli: Cli, auth_files: AuthFiles) -> None:
    install(cli, *tls_pair())
    new_cert, _new_key = tls_pair()
    result = run(cli, "cert", stdin=new_cert)
    assert result.code == 0
    assert "warning" in result.err and "does not match" in result.err
    assert fingerprint(auth_files.cert.read_bytes()) == fingerprint(new_cert)


def test_key_not_matching_the_cert_is_written_with_a_warning(cli: Cli, auth_files: AuthFiles) -> None:
    install(cli, *tls_pair())
    _new_cert, new_key = tls_pair()
    result = run(cli, "key", stdin=new_key)
    assert result.code == 0
    assert "does not match" in result.err
    assert auth_files.key.read_bytes().strip() == new_key.strip()


def test_a_pair_openssl_refuses_is_named_never_announced_as_served(cli: Cli) -> None:
    """RSA-1024 parses and matches, but the proxy's loader (OpenSSL) refuses it: manage-tls asks
    that same loader and names the problem instead of saying the proxy serves HTTPS with it."""
    cert, key = rsa_1024_pair()
    assert run(cli, "cert", stdin=cert).code == 0
    result = run(cli, "key", stdin=key)
    assert "serves HTTPS" not in result.out
    assert "warning" in result.err and "too small" in result.err and "2048" in result.err
    out = run(cli, "print").out
    assert "key matches certificate: yes" in out
    assert "pair complete: NO" in out and "too small" in out


def test_cert_without_a_key_says_what_is_missing(cli: Cli) -> None:
    result = run(cli, "cert", stdin=tls_pair()[0])
    assert "manage-tls key" in result.out


# --- refusals: one line, non-zero, file untouched ---------------------------------------------


def x25519_key() -> bytes:
    return x25519.X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(
    "data",
    [
        b"hello\n",
        b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
        tls_pair()[0][:200],
        tls_pair()[1],
        tls_pair()[0] + tls_pair()[1],
    ],
    ids=["text", "garbage-pem", "truncated", "a-key", "cert-and-key"],
)
def test_bad_certificate_is_refused_and_the_file_untouched(
    cli: Cli, auth_files: AuthFiles, data: bytes
) -> None:
    install(cli, *tls_pair())
    before = auth_files.cert.read_bytes()
    assert_refused(run(cli, "cert", stdin=data), PROG)
    assert auth_files.cert.read_bytes() == before


@pytest.mark.parametrize(
    "data",
    [b"hello\n", tls_pair()[1][:100], tls_pair()[0], encrypted(tls_pair()[1]), x25519_key()],
    ids=["text", "truncated", "a-certificate", "encrypted", "x25519"],
)
def test_bad_key_is_refused_and_the_file_untouched(cli: Cli, auth_files: AuthFiles, data: bytes) -> None:
    install(cli, *tls_pair())
    before = auth_files.key.read_bytes()
    assert_refused(run(cli, "key", stdin=data), PROG)
    assert auth_files.key.read_bytes() == before


def test_key_that_cannot_sign_is_refused_by_name(cli: Cli) -> None:
    assert "X25519 private keys cannot sign" in run(cli, "key", stdin=x25519_key()).err


def test_encrypted_key_refusal_says_how_to_fix_it(cli: Cli) -> None:
    assert "decrypt it first" in run(cli, "key", stdin=encrypted(tls_pair()[1])).err


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["print", "extra"]])
def test_usage_errors_are_one_line(cli: Cli, args: list[str]) -> None:
    assert_refused(run(cli, *args), PROG)


def test_bad_setting_is_refused(cli: Cli) -> None:
    env = dict(cli.env, MREG_TLS_CERT="")
    assert_refused(Cli(env, cli.cwd).run("manage_tls", "print"), PROG)


def test_missing_folder_is_refused(cli: Cli, auth_files: AuthFiles) -> None:
    env = dict(cli.env, MREG_TLS_CERT=str(auth_files.cert.parent / "gone" / "tls.crt"))
    assert_refused(Cli(env, cli.cwd).run("manage_tls", "cert", stdin=tls_pair()[0]), PROG)
