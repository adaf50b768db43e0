"""Grant patterns, levels and the specificity rule, as tables."""

import pytest

from mreg_proxy.auth.grants import Grant, GrantError, Level, checked_pattern, deciding_grant, matches, parse_level

MATCHES = [
    ("team/app", "team/app", True),
    ("team/app", "team/app2", False),
    ("team/app", "team/app/x", False),
    ("team/*", "team/app", True),
    ("team/*", "team", False),
    ("team/*", "team/a/b", False),
    ("team/**", "team/app", True),
    ("team/**", "team/a/b/c", True),
    ("team/**", "team", False),
    ("team/**", "teams/app", False),
    ("*/app", "team/app", True),
    ("*/app", "app", False),
    ("*", "app", True),
    ("*", "team/app", False),
    ("**", "app", True),
    ("**", "a/b/c", True),
    ("team/*/ci", "team/x/ci", True),
    ("team/*/ci", "team/x/y/ci", False),
]


@pytest.mark.parametrize("pattern,name,expected", MATCHES)
def test_matching(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


@pytest.mark.parametrize(
    "grants,name,winner",
    [
        # an exact name beats every glob
        (["team/*=push", "team/app=none"], "team/app", "team/app=none"),
        (["**=delete", "team/app=pull"], "team/app", "team/app=pull"),
        # a longer literal prefix beats a shorter one
        (["*/app=pull", "team/*=push"], "team/app", "team/*=push"),
        (["team/**=pull", "team/ci/**=push"], "team/ci/x", "team/ci/**=push"),
        (["**=pull", "team/**=none"], "team/x", "team/**=none"),
        # same prefix: more literal components, then * before **
        (["team/**=pull", "team/*/ci=push"], "team/x/ci", "team/*/ci=push"),
        (["team/**=pull", "team/*=push"], "team/x", "team/*=push"),
        # a true tie goes to the lower level
        (["a/*/c/*=push", "a/*/*/d=pull"], "a/b/c/d", "a/*/*/d=pull"),
        # no match at all
        (["team/*=push"], "other/app", None),
    ],
)
def test_most_specific_grant_decides(grants: list[str], name: str, winner: str | None) -> None:
    parsed = [Grant(p, parse_level(l)) for p, l in (g.split("=") for g in grants)]
    for order in (parsed, parsed[::-1]):  # the order of the file does not matter
        chosen = deciding_grant(order, name)
        assert (str(chosen) if chosen else None) == winner


@pytest.mark.parametrize("pattern", ["team/app", "team/*", "team/**", "*", "**", "*/app", "a.b/c-d/e__f"])
def test_valid_patterns(pattern: str) -> None:
    assert checked_pattern(pattern) == pattern


@pytest.mark.parametrize(
    "pattern", ["", "Team/app", "team//app", "/team", "team/", "team/**/x", "te*m/app", "team/a b", "x" * 256, 12]
)
def test_invalid_patterns(pattern: object) -> None:
    with pytest.raises(GrantError):
        checked_pattern(pattern)


def test_levels_are_ordered_and_named() -> None:
    assert Level.NONE < Level.PULL < Level.PUSH < Level.DELETE
    assert [parse_level(n) for n in ("none", "pull", "push", "delete")] == list(Level)
    with pytest.raises(GrantError):
        parse_level("write")
