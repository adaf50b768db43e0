"""decide(principal, route) as tables: roles x grants x actions x endpoints, catalog and mount."""

import pytest

from mreg_proxy.auth.decide import Decision, Kind, Principal, decide
from mreg_proxy.auth.grants import Grant, Level
from mreg_proxy.spec.routes import classify

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


def user(role: str, *grants: tuple[str, str]) -> Principal:
    return Principal("u", Kind.USER, {"none": Level.NONE, "reader": Level.PULL, "admin": Level.DELETE}[role],
                     tuple(Grant(p, Level[l.upper()]) for p, l in grants))


def token(*grants: tuple[str, str]) -> Principal:
    return Principal("t", Kind.TOKEN, Level.NONE, tuple(Grant(p, Level[l.upper()]) for p, l in grants))


def anonymous(*grants: tuple[str, str]) -> Principal:
    return Principal.anonymous(tuple(Grant(p, Level[l.upper()]) for p, l in grants))


A, D, H, C = "allow", "deny", "hide", "challenge"
# columns follow REQUESTS: base, manifest HEAD, blob GET, catalog, upload start, upload PATCH,
# manifest PUT, manifest DELETE, blob DELETE (all on team/app)
TABLE = {
    "reader": (user("reader"), [A, A, A, A, D, D, D, D, D]),
    "admin": (user("admin"), [A] * 9),
    "none": (user("none"), [A, H, H, A, D, D, D, D, D]),
    "none + team/* push": (user("none", ("team/*", "push")), [A, A, A, A, A, A, A, D, D]),
    "none + team/** delete": (user("none", ("team/**", "delete")), [A] * 9),
    "none + team/app pull": (user("none", ("team/app", "pull")), [A, A, A, A, D, D, D, D, D]),
    "none + other/* push": (user("none", ("other/*", "push")), [A, H, H, A, D, D, D, D, D]),
    "reader + team/app none": (user("reader", ("team/app", "none")), [A, H, H, A, D, D, D, D, D]),
    "admin + team/** pull": (user("admin", ("team/**", "pull")), [A, A, A, A, D, D, D, D, D]),
    "admin + team/* none, team/app delete": (
        user("admin", ("team/*", "none"), ("team/app", "delete")), [A] * 9),
    "reader + team/* push, team/app pull": (
        user("reader", ("team/*", "push"), ("team/app", "pull")), [A, A, A, A, D, D, D, D, D]),
    "token team/app push": (token(("team/app", "push")), [A, A, A, A, A, A, A, D, D]),
    "token team/* pull": (token(("team/*", "pull")), [A, A, A, A, D, D, D, D, D]),
    "token other/** delete": (token(("other/**", "delete")), [A, H, H, A, D, D, D, D, D]),
    "anonymous, nothing public": (anonymous(), [C, C, C, C, C, C, C, C, C]),
    "anonymous team/** pull": (anonymous(("team/**", "pull")), [C, A, A, A, C, C, C, C, C]),
    # the file cannot say more than pull for anonymous clients; even if it did, they only pull
    "anonymous team/** delete": (anonymous(("team/**", "delete")), [C, A, A, A, C, C, C, C, C]),
    "anonymous other/* pull": (anonymous(("other/*", "pull")), [C, C, C, A, C, C, C, C, C]),
}


@pytest.mark.parametrize(
    "who,method,path,expected",
    [(who, *request, row[1][i]) for who, row in TABLE.items() for i, request in enumerate(REQUESTS)],
)
def test_decision_table(who: str, method: str, path: str, expected: str) -> None:
    assert decide(TABLE[who][0], classify(method, path)) is Decision(expected)


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
@pytest.mark.parametrize("who", ["reader", "admin", "anonymous team/** pull"])
def test_methods_an_endpoint_lacks_are_refused_for_everyone(who: str, method: str, path: str) -> None:
    assert decide(TABLE[who][0], classify(method, path)) is Decision.UNSUPPORTED


@pytest.mark.parametrize(
    "who,get,delete",
    [("admin", A, A), ("reader", A, D), ("admin + team/** pull", A, D), ("reader + team/app none", H, H),
     ("none + team/* push", H, H), ("token team/app push", H, H),
     ("anonymous team/** pull", C, C), ("anonymous, nothing public", C, C)],
)
def test_paths_outside_the_api_need_the_right_on_every_repository(who: str, get: str, delete: str) -> None:
    assert decide(TABLE[who][0], classify("GET", "/v2/Not_A_Name/x")) is Decision(get)
    assert decide(TABLE[who][0], classify("DELETE", "/v2/Not_A_Name/x")) is Decision(delete)


@pytest.mark.parametrize(
    "path", ["/v2/team/app/tags/list", "/v2/team/app/referrers/" + DIGEST, "/v2/team/app/manifests/" + DIGEST]
)
def test_every_read_endpoint_checks_the_grant(path: str) -> None:
    assert decide(user("none", ("team/app", "pull")), classify("GET", path)) is Decision.ALLOW
    assert decide(user("none", ("team/b", "pull")), classify("GET", path)) is Decision.HIDE
    assert decide(user("reader", ("team/*", "none")), classify("GET", path)) is Decision.HIDE


def test_upload_status_and_cancel_need_push() -> None:
    for method in ("GET", "DELETE", "PUT"):
        route = classify(method, "/v2/team/app/blobs/uploads/u1")
        assert decide(user("none", ("team/app", "pull")), route) is Decision.DENY
        assert decide(user("none", ("team/app", "push")), route) is Decision.ALLOW


def test_mount_source_is_a_pull_of_the_source() -> None:
    """The handler asks may_pull(from); the table of that answer."""
    bob = user("none", ("team/*", "push"), ("shared/base", "pull"))
    assert bob.may_pull("team/app") and bob.may_pull("shared/base")
    assert not bob.may_pull("secret/app") and not bob.may_pull("shared/other")
    assert user("reader", ("secret/**", "none")).may_pull("secret/x") is False


@pytest.mark.parametrize(
    "principal,everything",
    [(user("reader"), True), (user("admin"), True), (user("reader", ("a/*", "push")), True),
     (user("reader", ("a/*", "none")), False), (user("none", ("**", "pull")), False),
     (token(("**", "pull")), False), (anonymous(("**", "pull")), False)],
)
def test_who_sees_the_unfiltered_catalog(principal: Principal, everything: bool) -> None:
    assert principal.pulls_everything is everything
