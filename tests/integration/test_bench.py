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


def run_bench(tmp_path: Path, *args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess[str], dict]:
    """``python -m bench ARGS --json FILE`` from this checkout: its run and its JSON report.

    The benchmark checks every digest and answer itself and exits non-zero ("bench: FAILED")
    otherwise."""
    registry = require_tool("docker-registry", "registry")
    report = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--registry", registry, "--json", str(report)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result, json.loads(report.read_text())


def test_quick_benchmark_runs_correctly(tmp_path: Path) -> None:
    require_tool("curl")
    result, data = run_bench(tmp_path, "--quick", timeout=300)
    assert [row["label"] for row in data["rows"]] == ROWS
    assert all(row["direct"] > 0 and row["proxy"] > 0 for row in data["rows"])
    assert set(data["memory_mib"]) == {"rss_idle_mib", "rss_peak_pulls_mib", "rss_peak_pushes_mib", "rss_hwm_mib"}
    for label in ROWS:
        assert f"| {label} (" in result.stdout  # the Markdown table has every row
    ui = [row["label"] for row in data["ui_rows"]]
    assert ui[:3] == [f"repository page, 100 tags, {order}" for order in ("newest first, cold", "newest first, warm", "by name, warm")]
    assert all(row["value"] > 0 for row in data["ui_rows"]) and "| web page |" in result.stdout
    # a CI token against a cached password, through mreg, on the same HEADs
    assert [row["label"] for row in data["token_rows"]] == [label for label in ROWS if label.startswith("HEAD")]
    assert all(row["direct"] > 0 and row["proxy"] > 0 for row in data["token_rows"])
    assert "| through mreg | cached password | CI token | token / password |" in result.stdout


def test_quick_abuse_benchmark_runs_every_workload(tmp_path: Path) -> None:
    """``python -m bench --abuse --quick``: every password-guessing phase and memory workload runs,
    and each is answered as it must be (the throttle answers 429, refused uploads 401, admin
    uploads 201); the timings and memory figures themselves are not asserted."""
    result, data = run_bench(tmp_path, "--abuse", "--quick")
    login = data["abuse"]["login"]
    assert [p["label"].split(" guessing")[0] for p in login["phases"]] == [
        "idle", "50 connections (one address)", "200 connections (one address)", "200 connections (200 addresses)",
    ]
    floods = [p["flood"] for p in login["phases"][1:]]
    assert all(flood["statuses"].get("429", 0) > 0 for flood in floods)  # the throttle answered
    assert login["schedule"]["per_day"] < 1000
    assert "## Password guessing" in result.stdout
    assert [row["label"] for row in login["by_cost"]] == [
        "wrong password, cost-12 user", "wrong password, cost-10 user", "wrong password, unknown name",
        "right password, cost-12 user", "right password, cost-10 user",
    ]
    assert all(row["median_ms"] > 0 for row in login["by_cost"])
    assert "## Login time by hash cost" in result.stdout
    rows = data["abuse"]["memory"]["rows"]
    assert [row["workload"] for row in rows] == [
        "50 clients x 7.7 MB of headers", "100 wrong-password 16 MiB uploads",
        "500 idle connections", "20 parallel 4 MiB admin uploads",
    ]
    assert "401" in rows[1]["note"] and rows[3]["note"] == "20 x 201"
    assert rows[2]["note"].endswith("a request from another address: answered 200")  # past the cap
    assert all(row["peak_mib"] > 0 for row in rows)
    assert "## Memory" in result.stdout


S3_ROWS = ["pull 32 MiB, 1 stream", "pull 8 x 4 MiB in parallel", "push 16 MiB, monolithic", "2 pushes of 16 MiB in parallel"]


def test_quick_benchmark_with_the_s3_section_runs_correctly(tmp_path: Path) -> None:
    for tool in ("curl", "ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool"):
        require_tool(tool)
    result, data = run_bench(tmp_path, "--quick", "--s3")
    rows = data["s3_rows"]
    assert [row["label"] for row in rows] == S3_ROWS
    assert all(row["direct"] > 0 and row["one"] > 0 for row in rows)
    assert [row["two"] is not None for row in rows] == [False, True, False, True]
    for label in S3_ROWS:
        assert f"| {label} |" in result.stdout


def test_quick_reads_benchmark_runs_correctly(tmp_path: Path) -> None:
    """``--reads``: every column answers every read (digests checked by the bench itself); nginx
    columns only where nginx is installed."""
    require_tool("curl")
    result, data = run_bench(tmp_path, "--reads", "--quick", timeout=300)
    columns = {"registry direct", "mreg (storage)", "mreg (forwarded)", "mreg TLS (storage)"}
    assert columns <= set(data["reads"])
    for column in columns:
        figures = data["reads"][column]
        assert all(figures[key] > 0 for key in ("head1", "head32", "cpu1", "cpu32", "pull1", "pull8")), (column, figures)
    assert data["reads"]["mreg (storage)"]["rss_pull1"] > 0
    assert "| HEAD manifest by tag, 1 conn (req/s) |" in result.stdout
