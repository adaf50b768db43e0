"""The policy file: rules, the most specific rule, tag globs, durations, a broken file, reloads."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from mreg_proxy.policy.rules import (
    MAX_FILE_BYTES, ImmutableRule, Policy, PolicyFileError, PolicyStore, RetentionRule, dump_policy, glob_matches,
    make_immutable_rule, make_retention_rule, parse_policy, read_policy, write_policy,
)

GOOD = """
retention:
  ci/*: {keep_last: 5, keep_tags: ["v*", latest]}
  ci/app: {pushed_within: 14d, pulled_within: 30d}
  "**": {keep_last: 50}
immutable:
  ci/**: ["v*"]
  ci/app: ["release-?"]
"""


def test_a_good_file_parses_and_dumps_back_to_the_same_policy() -> None:
    policy = parse_policy(GOOD)
    assert policy.retention_rule("ci/app") == RetentionRule("ci/app", pushed_within="14d", pulled_within="30d")
    assert parse_policy(dump_policy(policy)) == policy


@pytest.mark.parametrize(
    ("repository", "pattern"),
    [("ci/app", "ci/app"), ("ci/web", "ci/*"), ("ci/web/sub", "**"), ("other", "**")],
)
def test_the_most_specific_rule_decides(repository: str, pattern: str) -> None:
    rule = parse_policy(GOOD).retention_rule(repository)
    assert rule is not None and rule.pattern == pattern


def test_a_repository_no_rule_matches_has_no_rule() -> None:
    assert parse_policy("retention: {ci/*: {keep_last: 1}}").retention_rule("team/app") is None


@pytest.mark.parametrize(
    ("glob", "tag", "expected"),
    [("v*", "v1.0", True), ("v*", "1.0", False), ("release-?", "release-1", True), ("release-?", "release-10", False),
     ("latest", "latest", True), ("latest", "latest2", False), ("a.b", "axb", False), ("*", "anything", True)],
)
def test_tag_globs(glob: str, tag: str, expected: bool) -> None:
    assert glob_matches(glob, tag) is expected


def test_immutable_tags_any_matching_rule_protects() -> None:
    policy = parse_policy(GOOD)
    assert policy.immutable_rule("ci/app", "v2") == ImmutableRule("ci/**", ("v*",))  # the less specific one protects too
    assert policy.immutable_rule("ci/app", "release-1") == ImmutableRule("ci/app", ("release-?",))
    assert policy.immutable_rule("ci/app", "latest") is None
    assert policy.immutable_rule("team/app", "v1") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("retention: {ci/*: {}}", "at least one of"),
        ("retention: {ci/*: {keep_last: 0}}", "keep_last"),
        ("retention: {ci/*: {keep_last: true}}", "keep_last"),
        ("retention: {ci/*: {pushed_within: 3y}}", "pushed_within"),
        ("retention: {ci/*: {pulled_within: 14}}", "pulled_within"),
        ("retention: {ci/*: {keep_tags: ['a b']}}", "tag glob"),
        ("retention: {ci/*: {keep_last: 1, allow_empty: yes please}}", "allow_empty"),
        ("retention: {ci/*: {keep_last: 1, keep: 2}}", "unknown key"),
        ("retention: {Bad/*: {keep_last: 1}}", "components"),
        ("retention: [1]", "must map"),
        ("immutable: {ci/*: []}", "1 to"),
        ("immutable: {ci/*: v*}", "list"),
        ("other: 1", "expected a mapping"),
        ("a: &x [1]\nb: *x", "aliases"),
        ("retention: {ci/*: {keep_last: 1}", "not valid YAML"),
    ],
)
def test_a_broken_file_is_refused_whole_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(PolicyFileError, match=problem):
        parse_policy(text)


def test_durations_are_checked_like_token_expiries() -> None:
    assert make_retention_rule("a", pushed_within="12h").pushed_within == "12h"
    for bad in ("0d", "12", "1.5d", "-1d", "12H"):
        with pytest.raises(PolicyFileError):
            make_retention_rule("a", pushed_within=bad)


def test_a_file_over_the_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text("#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(PolicyFileError, match="larger than"):
        read_policy(path)


def test_a_missing_file_is_an_empty_policy(tmp_path: Path) -> None:
    assert read_policy(tmp_path / "none.yml") == Policy()


async def test_the_store_reloads_and_keeps_the_last_good_copy(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policy.yml"
    store = PolicyStore(path)
    assert await store.fresh() == Policy()
    write_policy(path, Policy(immutable=(make_immutable_rule("ci/*", ["v*"]),)))
    good = await store.fresh()
    assert good.immutable_rule("ci/app", "v1") is not None
    path.write_text("immutable: {ci/*: [")
    with caplog.at_level(logging.ERROR, logger="mreg.policy"):
        assert await store.fresh() is good
    assert any("keeping the last good copy" in r.getMessage() for r in caplog.records)
    os.unlink(path)
    assert await store.fresh() == Policy()


async def test_concurrent_reads_share_one_load(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    write_policy(path, Policy(retention=(make_retention_rule("a", keep_last=1),)))
    store = PolicyStore(path)
    results = await asyncio.gather(*(store.fresh() for _ in range(5)))
    assert all(result is results[0] for result in results) and results[0].retention
