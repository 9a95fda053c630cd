"""`meshfast bench --quick` end to end: real proxies, real load, a results.json and a PNG.

Asserts that the harness works (records present, values sane and non-zero), never how fast
anything is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {
    "scenario",
    "proxy",
    "workers",
    "rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p999_ms",
    "cpu_us_per_req",
    "rss_idle_mib",
    "rss_peak_mib",
    "ready_ms",
    "errors",
    "runs",
}


def test_quick_bench_one_scenario(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "python"), env.get("PYTHONPATH")) if p
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshfast",
            "bench",
            "--quick",
            "--scenario",
            "h1-keepalive",
            "--runs",
            "1",
            "--proxies",
            "meshfast,envoy,direct",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,  # includes installing Envoy (and wrk, matplotlib) the first time
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "h1-keepalive · envoy · run 1/1" in done.stderr  # the progress line
    assert "meshfast/envoy" in done.stdout  # the table with ratios

    results = json.loads((out / "results.json").read_text())
    for key in ("machine", "versions", "commit", "records"):
        assert results[key], key
    assert "envoy" in results["versions"]
    records = {r["proxy"]: r for r in results["records"]}
    assert set(records) == {"meshfast", "envoy", "direct"}
    for proxy, record in records.items():
        assert set(record) >= REQUIRED, proxy
        assert record["scenario"] == "h1-keepalive"
        assert record["workers"] == 1
        assert record["runs"] == 1
        assert record["errors"] == 0, record
        assert record["rps"] > 0
        assert 0 < record["p50_ms"] <= record["p90_ms"] <= record["p99_ms"] <= record["p999_ms"]
    for proxy in ("meshfast", "envoy"):
        record = records[proxy]
        assert record["cpu_us_per_req"] > 0, record
        assert 0 < record["rss_idle_mib"] <= record["rss_peak_mib"], record
        assert record["ready_ms"] > 0
    assert records["direct"]["cpu_us_per_req"] is None  # no proxy: nothing to measure
    (ratio,) = results["ratios"]
    assert ratio["vs"] == "envoy"
    assert ratio["cpu_us_per_req"] > 0

    png = out / "plot.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "RESULTS.md").read_text()
    assert results["commit"] in markdown
    assert "| h1-keepalive | envoy |" in markdown
