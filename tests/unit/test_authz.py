import pytest

from mreg_proxy.authz import Decision, decide
from mreg_proxy.routes import classify

DIGEST = "sha256:" + "ab" * 32
REQUESTS = [
    ("GET", "/v2/"),
    ("HEAD", "/v2/team/app/manifests/1.0"),
    ("GET", "/v2/team/app/blobs/" + DIGEST),
    ("GET", "/v2/_catalog"),
    ("POST", "/v2/team/app/blobs/uploads/"),
    ("PATCH", "/v2/team/app/blobs/uploads/u1"),
    ("PUT", "/v2/team/app/manifests/1.0"),
    ("DELETE", "/v2/team/app/manifests/1.0"),
    ("DELETE", "/v2/team/app/blobs/" + DIGEST),
]
TABLE = {
    "reader": ["allow"] * 4 + ["deny"] * 5,
    "admin": ["allow"] * 9,
    "nobody": ["deny"] * 9,  # a role the store would never load still gets nothing
}


@pytest.mark.parametrize(
    "role,method,path,expected",
    [(role, *request, row[i]) for role, row in TABLE.items() for i, request in enumerate(REQUESTS)],
)
def test_role_route_table(role: str, method: str, path: str, expected: str) -> None:
    assert decide(role, classify(method, path)) is Decision(expected)


@pytest.mark.parametrize(
    "method,path",
    [
        ("OPTIONS", "/v2/"),
        ("TRACE", "/v2/team/app/manifests/1.0"),
        ("PROPFIND", "/v2/x/y"),
        ("get", "/v2/team/app/manifests/1.0"),
        ("PATCH", "/v2/team/app/manifests/1.0"),  # not a method of the manifest endpoint
        ("POST", "/v2/team/app/blobs/" + DIGEST),
        ("DELETE", "/v2/team/app/tags/list"),
    ],
)
@pytest.mark.parametrize("role", ["reader", "admin"])
def test_methods_an_endpoint_lacks_are_refused_for_everyone(role: str, method: str, path: str) -> None:
    assert decide(role, classify(method, path)) is Decision.UNSUPPORTED
