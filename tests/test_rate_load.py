"""The load test from the acceptance criteria, run as a test: 20 raters, 1,000 ratings, loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # the load test
def test_twenty_raters_thousand_ratings(tmp_path):
    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rate_load.py"), "--raters", "20",
                           "--ratings", "1000", "--timeout", "60", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert res["rows"] == 1000 and res["submitted"] == 1000 and res["errors"] == 0
    assert res["rows_per_rater"] == [50]  # each rater's 50 distinct items, none lost or doubled
    assert 0 < res["p95_ms"] < 5000
    print(f"\nrate load: p95 {res['p95_ms']} ms, {res['ratings_per_s']} ratings/s")
