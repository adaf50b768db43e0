"""The benchmark keeps working: ``python -m bench --quick`` runs to the end with every digest right.

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
ROWS = [
    "pull 64 MiB, 1 stream",
    "pull 8 x 8 MiB in parallel",
    "push 32 MiB, monolithic",
    "push 32 MiB, 16 MiB PATCHes",
    "PUT image manifest by tag",
    "PUT referrer manifest by digest",
    "HEAD manifest, 1 conn",
    "HEAD manifest, 1 conn, p50",
    "HEAD manifest, 1 conn, p99",
    "HEAD manifest, 32 conns",
    "HEAD manifest, 32 conns, p50",
    "HEAD manifest, 32 conns, p99",
]


def test_quick_benchmark_runs_correctly(tmp_path: Path) -> None:
    registry = require_tool("docker-registry", "registry")
    require_tool("curl")
    report = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--registry", registry, "--json", str(report)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    # the benchmark checks every digest itself and exits non-zero with "bench: FAILED" otherwise
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert [row["label"] for row in data["rows"]] == ROWS
    assert all(row["direct"] > 0 and row["proxy"] > 0 for row in data["rows"])
    assert set(data["memory_mib"]) == {"rss_idle_mib", "rss_peak_pulls_mib", "rss_peak_pushes_mib", "rss_hwm_mib"}
    for label in ROWS:
        assert f"| {label} (" in result.stdout  # the Markdown table has every row
    # a CI token against a cached password, through mreg, on the same HEADs
    assert [row["label"] for row in data["token_rows"]] == [label for label in ROWS if label.startswith("HEAD")]
    assert all(row["direct"] > 0 and row["proxy"] > 0 for row in data["token_rows"])
    assert "| through mreg | cached password | CI token | token / password |" in result.stdout


def test_quick_abuse_benchmark_runs_every_memory_workload(tmp_path: Path) -> None:
    """``python -m bench --abuse --quick``: every memory workload runs, and each is answered as it
    must be (refused uploads 401, admin uploads 201); the memory figures themselves are not asserted."""
    registry = require_tool("docker-registry", "registry")
    report = tmp_path / "abuse.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--abuse", "--quick", "--registry", registry, "--json", str(report)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(report.read_text())["abuse"]["memory"]["rows"]
    assert [row["workload"] for row in rows] == [
        "50 clients x 7.7 MB of headers", "100 wrong-password 16 MiB uploads",
        "500 idle connections", "20 parallel 4 MiB admin uploads",
    ]
    assert "401" in rows[1]["note"] and rows[3]["note"] == "20 x 201"
    assert all(row["peak_mib"] > 0 for row in rows)
    assert "## Memory" in result.stdout


S3_ROWS = ["pull 32 MiB, 1 stream", "pull 8 x 4 MiB in parallel", "push 16 MiB, monolithic", "2 pushes of 16 MiB in parallel"]


def test_quick_benchmark_with_the_s3_section_runs_correctly(tmp_path: Path) -> None:
    registry = require_tool("docker-registry", "registry")
    for tool in ("curl", "ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool"):
        require_tool(tool)
    report = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--s3", "--registry", registry, "--json", str(report)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(report.read_text())["s3_rows"]
    assert [row["label"] for row in rows] == S3_ROWS
    assert all(row["direct"] > 0 and row["one"] > 0 for row in rows)
    assert [row["two"] is not None for row in rows] == [False, True, False, True]
    for label in S3_ROWS:
        assert f"| {label} |" in result.stdout
