"""The audit log: one JSON object per line, bounded with one rotated file, readable back."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from mreg_proxy.auth.audit import AuditLog, format_line, read_events, rotated, selected

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


def test_a_line_is_one_json_object_without_raw_line_breaks() -> None:
    line = format_line("login_failed", T0, {"user": "a\nb\u2028c", "address": "10.0.0.1", "skip": None})
    assert line.endswith("\n") and line.count("\n") == 1 and line.isascii()
    assert json.loads(line) == {"time": "2026-01-02T03:04:05Z", "event": "login_failed",
                                "user": "a\nb\u2028c", "address": "10.0.0.1"}


def test_a_huge_field_is_truncated() -> None:
    assert len(format_line("denied", T0, {"user": "x" * 100_000})) < 9000


def test_the_log_rotates_and_never_holds_more_than_twice_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(str(path), max_bytes=4096)
    for i in range(500):
        log.record("denied", user=f"user{i}")
    assert path.stat().st_size <= 4096 and rotated(path).stat().st_size <= 4096
    users = [e["user"] for e in read_events(path)]
    assert users[-1] == "user499" and users == sorted(users)  # oldest first, nothing reordered
    assert len(users) > 40


def test_stdout_target(capsys: pytest.CaptureFixture[str]) -> None:
    AuditLog("-", 4096).record("grant", user="bob")
    assert json.loads(capsys.readouterr().out)["event"] == "grant"


def test_an_unwritable_log_costs_one_log_line_not_the_caller(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    AuditLog(str(tmp_path / "missing" / "audit.log"), 4096).record("grant", user="bob")
    assert "cannot write the audit log" in caplog.text


def test_selection_by_time_and_user(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text(
        format_line("grant", T0, {"user": "bob", "by": "ops"})
        + "not json\n"
        + format_line("token_created", T0 + datetime.timedelta(hours=2), {"token": "ci", "by": "ops"})
        + format_line("denied", T0 + datetime.timedelta(hours=3), {"user": "bob"})
    )
    since = T0 + datetime.timedelta(hours=1)
    assert [e["event"] for e in selected(read_events(path), since, None)] == ["token_created", "denied"]
    assert [e["event"] for e in selected(read_events(path), None, "bob")] == ["grant", "denied"]
    assert [e["event"] for e in selected(read_events(path), None, "ci")] == ["token_created"]
    assert [e["event"] for e in selected(read_events(path), None, "ops")] == ["grant", "token_created"]
