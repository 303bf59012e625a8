"""Screenshot a study's report.html in headless Chromium and measure whether it fits.

    .venv/bin/python scripts/report_screenshot.py runs/demo/report.html first-screen.png [--full-page]

Writes the first screen (1,280 x 800 by default) as a PNG and prints one JSON line: the page's
``scrollWidth`` and ``clientWidth`` on screen and when printed (print styles, an A4 page's printable
width), so "no sideways scrolling, no clipped columns" is a number, not an impression. Uses Debian's
/usr/bin/chromium through Playwright (scripts/setup-browser.sh installs it; nothing is downloaded).
tests/browser/test_report_browser.py runs this script on a demo-shaped report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
#: an A4 page's printable width in CSS pixels at the report's 12 mm margins (210 - 24 mm at 96 px/inch)
A4_PRINT_WIDTH = 703

MEASURE = "() => ({scrollWidth: document.documentElement.scrollWidth, clientWidth: document.documentElement.clientWidth})"


def measure(report: Path, png: Path, width: int = 1280, height: int = 800, full_page: bool = False) -> dict:
    from playwright.sync_api import sync_playwright

    url = report.resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            screen = page.evaluate(MEASURE)
            png.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(png), full_page=full_page)
            page.emulate_media(media="print")
            page.set_viewport_size({"width": A4_PRINT_WIDTH, "height": height})
            printed = page.evaluate(MEASURE)
        finally:
            browser.close()
    return {"report": str(report), "screenshot": str(png), "width": width, "screen": screen,
            "print": {**printed, "width": A4_PRINT_WIDTH}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="a study's report.html")
    ap.add_argument("png", type=Path, help="where to write the screenshot")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--full-page", action="store_true", help="the whole page, not the first screen")
    args = ap.parse_args(argv)
    if not CHROMIUM.exists():
        print("error: /usr/bin/chromium is missing: run scripts/setup-browser.sh", file=sys.stderr)
        return 2
    if not args.report.is_file():
        print(f"error: {args.report}: no such file", file=sys.stderr)
        return 2
    result = measure(args.report, args.png, args.width, args.height, args.full_page)
    print(json.dumps(result))
    fits = all(m["scrollWidth"] <= m["clientWidth"] for m in (result["screen"], result["print"]))
    return 0 if fits else 1


if __name__ == "__main__":
    raise SystemExit(main())
