"""Which requests the proxy answers itself: pure decisions over (method, path)."""

import pytest

from mreg_proxy.refs import is_digest, is_name, is_tag, manifest_write, tag_deletion, tags_listing

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "method,path,expected",
    [
        ("DELETE", "/v2/app/manifests/latest", ("app", "latest")),
        ("DELETE", "/v2/team/app/manifests/v1.2.3-rc_1", ("team/app", "v1.2.3-rc_1")),
        ("DELETE", "/v2/a/b/c/manifests/_x", ("a/b/c", "_x")),
        ("DELETE", f"/v2/team/app/manifests/{DIGEST}", None),  # by digest: a plain forward
        ("DELETE", "/v2/team/app/manifests/-dash", None),  # not a tag: the registry's to refuse
        ("DELETE", "/v2/team/app/manifests/" + "t" * 129, None),  # longer than a tag may be
        ("DELETE", "/v2/Team/app/manifests/latest", None),  # not a repository name
        ("DELETE", "/v2/team/app/blobs/" + DIGEST, None),
        ("DELETE", "/v2/team/app/manifests/", None),
        ("GET", "/v2/team/app/manifests/latest", None),
        ("PUT", "/v2/team/app/manifests/latest", None),
    ],
)
def test_tag_deletion_decision(method: str, path: str, expected: tuple[str, str] | None) -> None:
    assert tag_deletion(method, path) == expected


@pytest.mark.parametrize(
    "method,path,expected",
    [
        ("GET", "/v2/team/app/tags/list", "team/app"),
        ("GET", "/v2/app/tags/list", "app"),
        ("HEAD", "/v2/team/app/tags/list", None),
        ("GET", "/v2/_catalog", None),  # the registry pages its catalog itself
        ("GET", "/v2/team/app/tags/list/x", None),
        ("GET", "/v2/UPPER/tags/list", None),
    ],
)
def test_tags_listing_decision(method: str, path: str, expected: str | None) -> None:
    assert tags_listing(method, path) == expected


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


@pytest.mark.parametrize(
    "method,path,expected",
    [
        ("PUT", "/v2/team/app/manifests/1.0", "team/app"),
        ("DELETE", "/v2/team/app/manifests/sha256:" + "a" * 64, "team/app"),
        ("GET", "/v2/team/app/manifests/1.0", None),
        ("PUT", "/v2/team/app/blobs/uploads/u", None),
        ("PUT", "/v2/Bad/manifests/1.0", None),
    ],
)
def test_manifest_write(method: str, path: str, expected: str | None) -> None:
    assert manifest_write(method, path) == expected
