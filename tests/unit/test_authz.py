import pytest

from mreg_proxy.authz import Decision, decide

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
TABLE = {
    "reader": ["allow", "allow", "deny", "deny", "deny", "deny"],
    "admin": ["allow"] * 6,
    "nobody": ["deny"] * 6,  # a role the store would never load still gets nothing
}


@pytest.mark.parametrize(
    "role,method,expected",
    [(role, m, row[i]) for role, row in TABLE.items() for i, m in enumerate(METHODS)],
)
def test_role_method_table(role: str, method: str, expected: str) -> None:
    assert decide(role, method) is Decision(expected)


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "CONNECT", "PROPFIND", "get"])
@pytest.mark.parametrize("role", ["reader", "admin"])
def test_other_methods_refused_for_everyone(role: str, method: str) -> None:
    assert decide(role, method) is Decision.UNSUPPORTED
