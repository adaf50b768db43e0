"""The manifest reference grammar the proxy enforces before forwarding: pure decisions."""

import pytest

from mreg_proxy.spec.references import Refusal, digest_refusal, manifest_refusal, parse_digest

SHA256 = "sha256:" + "0123456789abcdef" * 4
SHA512 = "sha512:" + "0123456789abcdef" * 8


@pytest.mark.parametrize(
    "value,expected",
    [
        (SHA256, ("sha256", SHA256[7:])),
        (SHA512, ("sha512", SHA512[7:])),
        ("sha256:" + "a" * 63, None),  # one digit short
        ("sha256:" + "a" * 65, None),
        ("sha256:" + "A" * 64, None),  # upper-case hex is not canonical
        ("sha256:" + "g" * 64, None),
        ("Sha256:" + "a" * 64, None),
        ("sha512:" + "a" * 64, None),  # sha512 needs 128 digits
        ("md5:" + "a" * 32, None),  # an algorithm the registry does not store
        ("sha256:totallywrong", None),
        ("sha256", None),
        (":" + "a" * 64, None),
        ("sha256:" + "a" * 64 + ":", None),
        ("", None),
    ],
)
def test_parse_digest(value: str, expected: tuple[str, str] | None) -> None:
    assert parse_digest(value) == expected


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
@pytest.mark.parametrize("reference", ["latest", "v1.2.3-rc_1", "_x", "A" * 128, SHA256, SHA512])
def test_valid_references_are_forwarded(method: str, reference: str) -> None:
    assert manifest_refusal(method, reference) is None


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
@pytest.mark.parametrize("reference", ["sha256:totallywrong", "md5:abc", "sha256:" + "A" * 64, "a:b"])
def test_malformed_digests_are_digest_invalid(method: str, reference: str) -> None:
    refusal = manifest_refusal(method, reference)
    assert refusal is not None and (refusal.status, refusal.code) == (400, "DIGEST_INVALID")


@pytest.mark.parametrize("reference", [".INVALID_MANIFEST_NAME", "-dash", "t" * 129, "a+b", "ünï"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
def test_a_malformed_tag_names_no_manifest(method: str, reference: str) -> None:
    refusal = manifest_refusal(method, reference)
    assert refusal is not None and (refusal.status, refusal.code) == (404, "MANIFEST_UNKNOWN")


def test_pushing_to_a_malformed_tag_is_tag_invalid() -> None:
    refusal = manifest_refusal("PUT", ".INVALID_MANIFEST_NAME")
    assert refusal is not None and (refusal.status, refusal.code) == (400, "TAG_INVALID")


def test_a_refusal_quotes_at_most_80_characters_of_the_reference() -> None:
    refusal = digest_refusal("sha256:" + "x" * 10_000)
    assert isinstance(refusal, Refusal) and len(refusal.message) < 200
