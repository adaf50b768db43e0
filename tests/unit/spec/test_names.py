"""The reference grammar: repository names, tags and digests."""

import pytest

from mreg_proxy.spec.names import is_digest, is_name, is_tag

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("value", ["a", "team/app", "a-b/c.d/e__f", "a--b"])
def test_valid_names(value: str) -> None:
    assert is_name(value)


@pytest.mark.parametrize("value", ["", "A", "a/", "/a", "a//b", "-a", "a_", "a:b", "a" * 256])
def test_invalid_names(value: str) -> None:
    assert not is_name(value)


def test_a_digest_is_never_a_tag() -> None:
    assert is_digest(DIGEST) and not is_tag(DIGEST)


@pytest.mark.parametrize("value", ["latest", "v1.0", "_", "A-b_c.d", "t" * 128])
def test_valid_tags(value: str) -> None:
    assert is_tag(value) and not is_digest(value)
