"""Paging a tag list by the OCI spec: pure functions."""

import pytest

from mreg_proxy.oci.tags import PagingError, next_link, page, paging_params

TAGS = ["b", "a", "c10", "c2", "d", "c1"]


def test_no_limit_gives_every_tag_in_lexical_order() -> None:
    assert page(TAGS, None, None) == (["a", "b", "c1", "c10", "c2", "d"], None)


def test_n_limits_and_names_the_next_last() -> None:
    assert page(TAGS, 2, None) == (["a", "b"], "b")


def test_last_starts_after_it() -> None:
    assert page(TAGS, 2, "b") == (["c1", "c10"], "c10")


def test_last_need_not_be_a_tag() -> None:
    assert page(TAGS, None, "c") == (["c1", "c10", "c2", "d"], None)


def test_exactly_n_left_is_the_last_page() -> None:
    assert page(TAGS, 2, "c10") == (["c2", "d"], None)


def test_nothing_after_last() -> None:
    assert page(TAGS, 5, "z") == ([], None)


def test_n_zero_is_empty_with_no_next_page() -> None:
    assert page(TAGS, 0, None) == ([], None)


def test_duplicates_are_listed_once() -> None:
    assert page(["a", "a", "b"], None, None) == (["a", "b"], None)


def test_link_is_relative_and_encodes_last() -> None:
    assert next_link("team/app", "v1+b", 10) == '</v2/team/app/tags/list?last=v1%2Bb&n=10>; rel="next"'


@pytest.mark.parametrize(
    "query,expected",
    [({}, (None, None)), ({"n": "5"}, (5, None)), ({"n": "0", "last": "x"}, (0, "x")), ({"n": "", "last": ""}, (None, None))],
)
def test_paging_params(query: dict[str, str], expected: tuple[int | None, str | None]) -> None:
    assert paging_params(query) == expected


@pytest.mark.parametrize("n", ["-1", "abc", "1.5", "²"])
def test_bad_n_is_refused(n: str) -> None:
    with pytest.raises(PagingError):
        paging_params({"n": n})
