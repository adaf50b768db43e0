from __future__ import annotations

from mreg_proxy.web.views import (
    MAX_TEXT, TagRow, clip, human_size, image_size, image_view, natural_key, referrers_by_type, short,
    shown_tags, sort_rows,
)


def test_numbers_in_tags_sort_as_numbers() -> None:
    tags = ["v1.10", "v1.9", "latest", "v1.9.1", "2", "10", "v1.9-rc1"]
    assert sorted(tags, key=natural_key) == ["2", "10", "latest", "v1.9", "v1.9-rc1", "v1.9.1", "v1.10"]


def test_newest_first_puts_rows_without_a_time_last() -> None:
    rows = [TagRow("a", "", "image", created=""), TagRow("b", "", "image", created="2025-01-01T00:00:00Z"),
            TagRow("c", "", "image", created="2026-01-01T00:00:00Z")]
    assert [r.tag for r in sort_rows(rows, "newest")] == ["c", "b", "a"]


def test_referrers_index_tags_are_not_listed() -> None:
    assert shown_tags(["1", "sha256-" + "a" * 64, "sha256-abc"]) == ["1", "sha256-abc"]


def test_clip_and_short() -> None:
    assert clip("x" * (MAX_TEXT + 5)) == "x" * MAX_TEXT + "…"
    assert short("sha256:" + "f" * 64) == "sha256:ffffffffffff"
    assert human_size(999) == "999 B" and human_size(1_500_000) == "1.5 MB"


def test_sizes_ignore_what_is_not_a_size() -> None:
    manifest = {"config": {"size": 10}, "layers": [{"size": 5}, {"size": -3}, {"size": "9"}, "junk"]}
    assert image_size(manifest) == 15


def test_an_image_view_pairs_layers_with_the_history_that_made_them() -> None:
    manifest = {"layers": [{"digest": "sha256:1", "size": 1}, {"digest": "sha256:2", "size": 2}]}
    config = {"history": [{"created_by": "ADD a"}, {"created_by": "ENV x", "empty_layer": True}, {"created_by": "RUN b"}],
              "config": {"Labels": {"k": "v"}, "Cmd": ["sh"], "ExposedPorts": {"80/tcp": {}}}}
    view = image_view(manifest, config)
    assert [layer.history for layer in view.layers] == ["ADD a", "RUN b"]
    assert view.empty_steps == ["ENV x"] and view.labels == [("k", "v")] and view.cmd == '["sh"]'
    assert view.ports == ["80/tcp"]


def test_a_config_of_the_wrong_shapes_gives_an_empty_view() -> None:
    view = image_view({"layers": "no"}, {"config": [], "history": {"a": 1}})
    assert view.layers == [] and view.labels == [] and view.env == []


def test_referrers_are_grouped_by_artifact_type() -> None:
    groups = referrers_by_type([
        {"digest": "sha256:1", "artifactType": "b/sig"}, {"digest": "sha256:2", "artifactType": "a/sbom"},
        {"digest": "sha256:3", "artifactType": "b/sig"}, {"artifactType": "no digest"},
    ])
    assert [(kind, [r.digest for r in items]) for kind, items in groups] == [("a/sbom", ["sha256:2"]), ("b/sig", ["sha256:1", "sha256:3"])]
