"""manage-policy: each command edits the policy file atomically, refuses bad input, and is audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mreg_proxy.cli.manage_policy import main
from mreg_proxy.policy.rules import read_policy


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MREG_POLICY_FILE", str(tmp_path / "policy.yml"))
    monkeypatch.setenv("MREG_USERS_FILE", str(tmp_path / "users.yml"))
    monkeypatch.setenv("MREG_ACTOR", "ops")
    return tmp_path


def events(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]


def test_retain_sets_and_replaces_the_rule_of_a_pattern(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["retain", "ci/*", "--keep-last", "5", "--keep-tag", "v*", "--keep-tag", "latest"])
    main(["retain", "ci/*", "--keep-last", "3", "--pulled-within", "30d"])
    rule = read_policy(files / "policy.yml").retention_rule("ci/app")
    assert rule is not None and (rule.keep_last, rule.keep_tags, rule.pulled_within) == (3, (), "30d")
    assert [e["event"] for e in events(files)] == ["policy_retain", "policy_retain"]
    assert events(files)[0]["by"] == "ops"


def test_immutable_ls_and_rm(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["immutable", "ci/**", "v*", "release-*"])
    main(["retain", "ci/**", "--keep-last", "2"])
    capsys.readouterr()
    main(["ls"])
    assert capsys.readouterr().out.splitlines() == ["retain ci/** --keep-last 2", "immutable ci/** v* release-*"]
    main(["rm", "ci/**"])
    assert read_policy(files / "policy.yml").immutable == ()
    assert events(files)[-1]["event"] == "policy_removed"


@pytest.mark.parametrize(
    "argv",
    [["retain", "ci/*"], ["retain", "Ci/*", "--keep-last", "1"], ["retain", "ci/*", "--pushed-within", "2y"],
     ["retain", "ci/*", "--keep-tag", "a b"], ["immutable", "ci/*", "v/1"], ["rm", "nothing"]],
)
def test_bad_input_is_refused_and_the_file_left_alone(
    files: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    main(["immutable", "ci/*", "v*"])
    before = (files / "policy.yml").read_bytes()
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code != 0
    assert "manage-policy: error:" in capsys.readouterr().err
    assert (files / "policy.yml").read_bytes() == before


def test_a_broken_file_is_refused_not_overwritten(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (files / "policy.yml").write_text("retention: [")
    with pytest.raises(SystemExit):
        main(["retain", "ci/*", "--keep-last", "1"])
    assert (files / "policy.yml").read_text() == "retention: ["
    assert "not valid YAML" in capsys.readouterr().err
