"""``python -m bench --abuse --quick`` runs to the end; its login figures are all there.

No timing is asserted here, ever: the numbers belong to the benchmark's report, not to CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import require_tool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_quick_abuse_benchmark_runs(tmp_path: Path) -> None:
    registry = require_tool("docker-registry", "registry")
    report = tmp_path / "abuse.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--abuse", "--quick", "--registry", registry, "--json", str(report)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    login = json.loads(report.read_text())["abuse"]["login"]
    assert [p["label"].split(" guessing")[0] for p in login["phases"]] == [
        "idle", "50 connections (one address)", "200 connections (one address)", "200 connections (200 addresses)",
    ]
    floods = [p["flood"] for p in login["phases"][1:]]
    assert all(flood["statuses"].get("429", 0) > 0 for flood in floods)  # the throttle answered
    assert login["schedule"]["per_day"] < 1000
    assert "## Password guessing" in result.stdout
