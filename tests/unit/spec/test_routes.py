"""The route classifier as a table: every request the proxy sees is classified once, here."""

import pytest

from mreg_proxy.spec.routes import Action, Endpoint, Route, classify

DIGEST = "sha256:" + "ab" * 32
E, A = Endpoint, Action


@pytest.mark.parametrize(
    "method,path,expected",
    [
        ("GET", "/v2/", Route(E.BASE, "GET", action=A.PULL)),
        ("HEAD", "/v2", Route(E.BASE, "HEAD", action=A.PULL)),
        ("POST", "/v2/", Route(E.BASE, "POST")),
        ("GET", "/v2/_catalog", Route(E.CATALOG, "GET", action=A.PULL)),
        ("GET", "/v2/team/app/tags/list", Route(E.TAGS, "GET", "team/app", action=A.PULL)),
        ("PUT", "/v2/team/app/tags/list", Route(E.TAGS, "PUT", "team/app")),
        ("GET", "/v2/app/manifests/latest", Route(E.MANIFEST, "GET", "app", "latest", A.PULL)),
        ("HEAD", f"/v2/a/b/c/manifests/{DIGEST}", Route(E.MANIFEST, "HEAD", "a/b/c", DIGEST, A.PULL)),
        ("PUT", "/v2/team/app/manifests/1.0", Route(E.MANIFEST, "PUT", "team/app", "1.0", A.PUSH)),
        ("DELETE", "/v2/team/app/manifests/1.0", Route(E.MANIFEST, "DELETE", "team/app", "1.0", A.DELETE)),
        ("POST", "/v2/team/app/manifests/1.0", Route(E.MANIFEST, "POST", "team/app", "1.0")),
        # a name may hold the words the API uses as components: the name grammar splits it one way
        ("GET", "/v2/a/manifests/b/manifests/c", Route(E.MANIFEST, "GET", "a/manifests/b", "c", A.PULL)),
        ("GET", f"/v2/team/app/blobs/{DIGEST}", Route(E.BLOB, "GET", "team/app", DIGEST, A.PULL)),
        ("DELETE", f"/v2/team/app/blobs/{DIGEST}", Route(E.BLOB, "DELETE", "team/app", DIGEST, A.DELETE)),
        ("PUT", f"/v2/team/app/blobs/{DIGEST}", Route(E.BLOB, "PUT", "team/app", DIGEST)),
        ("POST", "/v2/team/app/blobs/uploads/", Route(E.UPLOADS, "POST", "team/app", action=A.PUSH)),
        ("POST", "/v2/team/app/blobs/uploads", Route(E.UPLOADS, "POST", "team/app", action=A.PUSH)),
        ("GET", "/v2/team/app/blobs/uploads/", Route(E.UPLOADS, "GET", "team/app")),
        ("PATCH", "/v2/team/app/blobs/uploads/u-1", Route(E.UPLOAD, "PATCH", "team/app", "u-1", A.PUSH)),
        ("PUT", "/v2/team/app/blobs/uploads/u-1", Route(E.UPLOAD, "PUT", "team/app", "u-1", A.PUSH)),
        ("GET", "/v2/team/app/blobs/uploads/u-1", Route(E.UPLOAD, "GET", "team/app", "u-1", A.PUSH)),
        ("DELETE", "/v2/team/app/blobs/uploads/u-1", Route(E.UPLOAD, "DELETE", "team/app", "u-1", A.PUSH)),
        ("GET", f"/v2/team/app/referrers/{DIGEST}", Route(E.REFERRERS, "GET", "team/app", DIGEST, A.PULL)),
        ("PUT", f"/v2/team/app/referrers/{DIGEST}", Route(E.REFERRERS, "PUT", "team/app", DIGEST)),
        # not part of the API: left for global roles only, by method
        ("GET", "/v2/Team/app/tags/list", Route(E.UNKNOWN, "GET", action=A.PULL)),
        ("GET", "/v2/team/app/manifests/", Route(E.UNKNOWN, "GET", action=A.PULL)),
        ("DELETE", "/v2/team/app/other", Route(E.UNKNOWN, "DELETE", action=A.DELETE)),
        ("OPTIONS", "/v2/x/y", Route(E.UNKNOWN, "OPTIONS")),
        ("GET", "/v2/" + "a" * 256 + "/tags/list", Route(E.UNKNOWN, "GET", action=A.PULL)),
    ],
)
def test_classify(method: str, path: str, expected: Route) -> None:
    assert classify(method, path) == expected


@pytest.mark.parametrize(
    "path,is_tag",
    [
        ("/v2/app/manifests/latest", True),
        ("/v2/app/manifests/v1.2.3-rc_1", True),
        (f"/v2/app/manifests/{DIGEST}", False),
        ("/v2/app/manifests/-dash", False),
        ("/v2/app/manifests/" + "t" * 129, False),
        ("/v2/app/tags/list", False),
    ],
)
def test_is_tag(path: str, is_tag: bool) -> None:
    assert classify("DELETE", path).is_tag is is_tag


def test_remembered_routes_are_bounded_and_equal_to_fresh_ones() -> None:
    """classify remembers recent short paths (a pull asks for the same few again and again); what
    it remembers is what it would compute, and a stranger's long path is never kept."""
    from mreg_proxy.spec import routes

    routes._remembered.cache_clear()
    path = "/v2/team/app/manifests/latest"
    assert classify("HEAD", path) is classify("HEAD", path)  # the second one remembered
    assert classify("HEAD", path) == routes._classify("HEAD", path)
    long_path = "/v2/" + "a/" * routes.CLASSIFY_PATH_BUDGET + "manifests/latest"
    before = routes._remembered.cache_info().currsize
    assert classify("GET", long_path) == routes._classify("GET", long_path)
    assert routes._remembered.cache_info().currsize == before
    for i in range(routes.CLASSIFY_MEMORY + 10):
        classify("GET", f"/v2/app/manifests/t{i}")
    assert routes._remembered.cache_info().currsize == routes.CLASSIFY_MEMORY
