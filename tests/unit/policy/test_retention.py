"""The retention engine: every clause, the most specific rule, immutable and unknown tags, empty
repositories, the reasons a dry run prints, and the bytes a plan frees."""

from __future__ import annotations

import pytest

from mreg_proxy.policy.retention import TagFacts, age_text, attribute_bytes, blobs_of, plan_repository
from mreg_proxy.policy.rules import parse_policy

NOW = 1_800_000_000.0
DAY = 86400.0


def ci_tags(count: int) -> list[TagFacts]:
    """build-1 .. build-N, one a day, build-N pushed an hour ago; each its own digest."""
    return [
        TagFacts(f"build-{i}", f"sha256:{i:064x}", NOW - (count - i) * DAY - 3600, None) for i in range(1, count + 1)
    ]


def doomed(policy_text: str, tags: list[TagFacts], repository: str = "ci/app", **options: bool) -> list[str]:
    return [d.tag for d in plan_repository(repository, parse_policy(policy_text), tags, NOW, **options).doomed]


def test_keep_last_keeps_the_most_recently_pushed() -> None:
    assert doomed("retention: {ci/*: {keep_last: 3}}", ci_tags(5)) == ["build-1", "build-2"]


def test_keep_tags_keeps_matching_globs() -> None:
    tags = ci_tags(3) + [TagFacts("v1.0", "sha256:" + "a" * 64, NOW - 100 * DAY, None)]
    assert doomed("retention: {ci/*: {keep_tags: ['v*', build-3]}}", tags) == ["build-1", "build-2"]


def test_pushed_within_keeps_recent_pushes() -> None:
    # build-3 was pushed 2 days and an hour ago
    assert doomed("retention: {ci/*: {pushed_within: 2d}}", ci_tags(5)) == ["build-1", "build-2", "build-3"]


def test_pulled_within_keeps_recently_pulled_digests() -> None:
    tags = ci_tags(4)
    tags[0] = TagFacts("build-1", tags[0].digest, tags[0].pushed, NOW - 3 * DAY)
    tags[1] = TagFacts("build-2", tags[1].digest, tags[1].pushed, NOW - 40 * DAY)
    assert doomed("retention: {ci/*: {keep_last: 1, pulled_within: 30d}}", tags) == ["build-2", "build-3"]


def test_the_most_specific_rule_decides() -> None:
    text = "retention: {'**': {keep_last: 1}, ci/*: {keep_last: 4}, ci/app: {keep_last: 2}}"
    assert doomed(text, ci_tags(5)) == ["build-1", "build-2", "build-3"]
    assert doomed(text, ci_tags(5), repository="ci/web") == ["build-1"]
    assert doomed(text, ci_tags(5), repository="other/x") == ["build-1", "build-2", "build-3", "build-4"]


def test_a_repository_without_a_rule_is_never_touched() -> None:
    plan = plan_repository("team/app", parse_policy("retention: {ci/*: {keep_last: 1}}"), ci_tags(5), NOW)
    assert plan.doomed == () and plan.rule is None


def test_immutable_tags_and_unknown_push_times_survive() -> None:
    tags = ci_tags(3) + [TagFacts("v1", "sha256:" + "b" * 64, NOW - 99 * DAY, None),
                         TagFacts("mystery", "sha256:" + "c" * 64, None, None)]
    text = "retention: {ci/*: {keep_last: 1}}\nimmutable: {ci/**: ['v*']}"
    assert doomed(text, tags) == ["build-1", "build-2"]


def test_referrers_index_tags_are_never_candidates() -> None:
    tags = ci_tags(2) + [TagFacts("sha256-" + "d" * 64, "sha256:" + "e" * 64, NOW - 99 * DAY, None)]
    assert doomed("retention: {ci/*: {keep_last: 1}}", tags) == ["build-1"]


def test_a_rule_that_would_empty_a_repository_needs_allow_empty() -> None:
    text = "retention: {ci/*: {keep_tags: ['v*']}}"
    plan = plan_repository("ci/app", parse_policy(text), ci_tags(3), NOW)
    assert plan.doomed == () and plan.left_alone is not None and "all 3 tags" in plan.left_alone
    assert doomed(text, ci_tags(3), allow_empty=True) == ["build-1", "build-2", "build-3"]
    assert doomed("retention: {ci/*: {keep_tags: ['v*'], allow_empty: true}}", ci_tags(3)) == [
        "build-1", "build-2", "build-3"]


def test_the_reason_names_the_rule_and_every_clause_that_did_not_keep() -> None:
    text = "retention: {ci/*: {keep_last: 2, keep_tags: ['v*'], pushed_within: 1d, pulled_within: 7d}}"
    plan = plan_repository("ci/app", parse_policy(text), ci_tags(4), NOW)
    assert plan.doomed[0].why == (
        "rule ci/*: not among the last 2 pushed (#4); matches none of v*; pushed 3d1h ago, not within 1d; "
        "never pulled, not within 7d"
    )


def test_the_plan_is_a_function_of_its_facts() -> None:
    """The dry run and the real run plan from the same facts: they cannot differ."""
    text = "retention: {ci/*: {keep_last: 5, keep_tags: ['v*', latest]}}"
    tags = ci_tags(30) + [TagFacts("v1.0", "sha256:" + "f" * 64, NOW - 50 * DAY, None),
                          TagFacts("latest", "sha256:" + f"{30:064x}", NOW - 3600, None)]
    first = plan_repository("ci/app", parse_policy(text), tags, NOW)
    second = plan_repository("ci/app", parse_policy(text), list(reversed(tags)), NOW)
    assert first == second
    # latest counts among the last 5 pushed (with build-30..27): build-26 goes too
    assert [d.tag for d in first.doomed] == sorted(f"build-{i}" for i in range(1, 27))


@pytest.mark.parametrize(("seconds", "text"), [(59, "0m"), (600, "10m"), (3600, "1h"), (3 * 3600 + 120, "3h2m"),
                                               (DAY, "1d"), (DAY * 2 + 3600, "2d1h")])
def test_ages(seconds: float, text: str) -> None:
    assert age_text(seconds) == text


def test_bytes_count_blobs_no_kept_tag_uses_once() -> None:
    def manifest(*layers: tuple[str, int]) -> dict:
        return {"config": {"digest": "sha256:c" + layers[0][0], "size": 10},
                "layers": [{"digest": d, "size": s} for d, s in layers]}

    documents = {"m1": manifest(("shared", 100), ("only1", 1000)), "m2": manifest(("shared", 100), ("only2", 2000)),
                 "kept": manifest(("shared", 100)), "index": {"manifests": [{"digest": "m1"}, {"digest": "m2"}]}}
    sizes = {"m1": 5, "m2": 5, "kept": 5, "index": 7}
    assert set(blobs_of("index", documents, sizes)) == {"index", "m1", "m2", "sha256:cshared", "shared", "only1", "only2"}
    tags = [TagFacts("a", "m1", NOW - 3 * DAY, None), TagFacts("b", "m1", NOW - 2 * DAY, None),
            TagFacts("c", "m2", NOW - 2 * DAY, None), TagFacts("d", "kept", NOW, None)]
    plan = plan_repository("ci/app", parse_policy("retention: {ci/*: {keep_last: 1}}"), tags, NOW)
    plan = attribute_bytes(plan, {"kept"}, documents, sizes)
    assert [(d.tag, d.freed) for d in plan.doomed] == [("a", 5 + 1000), ("b", 0), ("c", 5 + 2000)]
    assert plan.freed == 3010


def test_a_repository_whose_push_times_are_all_unknown_is_left_alone_saying_why() -> None:
    tags = [TagFacts(t.tag, t.digest, None, None) for t in ci_tags(3)]
    plan = plan_repository("ci/app", parse_policy("retention: {ci/*: {keep_last: 1}}"), tags, NOW)
    assert plan.doomed == () and plan.left_alone is not None and "MREG_REGISTRY_ROOT" in plan.left_alone
