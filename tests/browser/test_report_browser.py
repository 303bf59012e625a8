"""The study report in a real headless browser (Debian chromium driven by Playwright, as the rating app's
pages are checked): a demo-shaped report (five tasks, every system, long verdicts) fits a 1,280 px
screen without sideways scrolling and an A4 page's printable width under the print styles, measured by
scripts/report_screenshot.py, the documented command that also screenshots a real study's report."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from clinalign.report import write_report

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="run scripts/setup-browser.sh (Debian chromium)")]


def test_the_demo_shaped_report_fits_1280px_and_an_a4_page(tmp_path):
    from report_fixture import demo_results

    results, extras = demo_results()
    for t in results["tasks"].values():  # verdicts as long as a real study's, no spaces to wrap a few at
        t["_verdict"] += ". " + "Long_unbroken_identifier_" * 10 + " " + t["_verdict"]
    write_report(results, tmp_path / "report", **extras)
    shot = tmp_path / "first-screen.png"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "report_screenshot.py"),
                          str(tmp_path / "report" / "report.html"), str(shot)],
                         capture_output=True, text=True, timeout=300)
    measured = json.loads(res.stdout.strip().splitlines()[-1])
    screen, printed = measured["screen"], measured["print"]
    assert screen["clientWidth"] == 1280 and screen["scrollWidth"] <= screen["clientWidth"], measured
    assert printed["scrollWidth"] <= printed["clientWidth"], measured  # print: no clipped column
    assert res.returncode == 0, res.stderr
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1280, 800)


def test_the_screenshot_command_says_what_is_missing(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "report_screenshot.py"),
                          str(tmp_path / "nope.html"), str(tmp_path / "x.png")], capture_output=True, text=True)
    assert res.returncode == 2 and "nope.html: no such file" in res.stderr and not (tmp_path / "x.png").exists()
