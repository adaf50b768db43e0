from __future__ import annotations

import json
import os
from pathlib import Path

from mreg_proxy.web.pushtimes import PushTimes


def event(name: str, repository: str, tag: str, time: str) -> str:
    return json.dumps({"time": time, "event": name, "user": "amy", "repository": repository, "tag": tag}) + "\n"


def test_pushes_are_read_as_the_log_grows(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text(event("manifest_pushed", "team/app", "1", "2026-01-01T00:00:00Z") + '{"time": "x", "event": "login_failed"}\n')
    times = PushTimes(log)
    times.refresh()
    assert times.of("team/app", "1") == "2026-01-01T00:00:00"
    with log.open("a") as handle:
        handle.write(event("manifest_pushed", "team/app", "1", "2026-02-01T00:00:00Z"))
        handle.write(event("manifest_pushed", "team/app", "2", "2026-02-02T00:00:00Z")[:-10])  # being written
    times.refresh()
    assert times.of("team/app", "1") == "2026-02-01T00:00:00" and times.of("team/app", "2") == ""
    with log.open("a") as handle:
        handle.write(event("manifest_pushed", "team/app", "2", "2026-02-02T00:00:00Z")[-10:])
    times.refresh()
    assert times.of("team/app", "2") == "2026-02-02T00:00:00"


def test_a_deleted_tag_loses_its_push_time(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text(event("manifest_pushed", "r", "1", "2026-01-01T00:00:00Z") + event("manifest_deleted", "r", "1", "2026-01-02T00:00:00Z"))
    times = PushTimes(log)
    times.refresh()
    assert times.of("r", "1") == ""


def test_after_a_rotation_both_files_are_read_again(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text(event("manifest_pushed", "r", "old", "2026-01-01T00:00:00Z") * 3)
    times = PushTimes(log)
    times.refresh()
    os.replace(log, tmp_path / "audit.log.1")
    log.write_text(event("manifest_pushed", "r", "new", "2026-01-02T00:00:00Z"))
    times.refresh()
    assert times.of("r", "old") == "2026-01-01T00:00:00" and times.of("r", "new") == "2026-01-02T00:00:00"


def test_no_log_no_times(tmp_path: Path) -> None:
    for times in (PushTimes(None), PushTimes(tmp_path / "missing.log")):
        times.refresh()
        assert times.of("r", "1") == ""
