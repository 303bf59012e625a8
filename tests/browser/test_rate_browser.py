"""End to end in a real headless browser (Debian chromium driven by Playwright; scripts/setup-browser.sh
installs it): sign in, rate by keyboard, reload and find the work saved, privacy between raters, inert
XSS, and the screenshots shown in the README (docs/rate-likert.png, docs/rate-admin.png): written to a
temporary folder, into docs/ only with CLINALIGN_UPDATE_DOCS=1, so `make test` leaves tracked files alone."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from clinalign.rate.items import LikertItem, PairwiseItem
from rate_server import running_server, seed_db

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="run scripts/setup-browser.sh (Debian chromium)")]

NOTE = ("HOSPITAL COURSE: 67-year-old woman admitted with acute on chronic systolic heart failure "
        "(EF 30%). Diuresed with IV furosemide 40 mg twice daily, net negative 4.2 L; weight 82 -> 78 kg. "
        "Creatinine peaked at 1.6 and returned to 1.2. Metoprolol succinate continued; lisinopril held for "
        "the AKI and restarted at 5 mg on day 4.\n\nDISCHARGE MEDICATIONS: furosemide 40 mg PO daily, "
        "metoprolol succinate 50 mg daily, lisinopril 5 mg daily, atorvastatin 40 mg nightly.\n\n"
        "FOLLOW-UP: cardiology clinic in 1 week; BMP in 3 days; daily weights, call if gain > 1 kg/day.")
SUMMARY = ("Acute on chronic HFrEF (EF 30%), diuresed 4.2 L with IV furosemide; transient AKI (Cr 1.6 -> 1.2). "
           "Discharged on furosemide 40 mg daily, metoprolol succinate 50 mg, lisinopril 5 mg (restarted), "
           "atorvastatin. Cardiology in 1 week, BMP in 3 days, daily weights.")


def _items():
    likert = [LikertItem(id=f"rec{i}", task="discharge_summary",
                         source=NOTE if i else f"Patient note with a payload: {XSS}", output=SUMMARY, system=s)
              for i in range(2) for s in ("sft", "dpo")]
    pairs = [PairwiseItem(id=f"p{i}", prompt=f"Summarise this note:\n{NOTE}", output_a=f"Answer one {i}",
                          output_b=f"Answer two {i}", system_a="sft", system_b="dpo") for i in range(3)]
    return likert, pairs


@pytest.fixture
def server(tmp_path):
    likert, pairs = _items()
    tokens = seed_db(tmp_path / "r.sqlite", likert, pairs, raters=("Dr Alice", "Dr Bob"))
    with running_server(tmp_path / "r.sqlite") as (url, log):
        yield url, tokens, log


@pytest.fixture
def browser(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=ARGS,
            viewport={"width": 1280, "height": 860})
        ctx.set_default_timeout(15_000)
        try:
            yield ctx
        finally:
            ctx.close()


def _sign_in(page, url, token):
    page.goto(url + "/")
    assert page.url.endswith("/login")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def _sign_out(page):
    page.click("text=sign out")
    page.wait_for_url(re.compile(r"/login$"))


def _position(page) -> int:
    return int(re.search(r"/c/\d+/(\d+)$", page.url).group(1))


def _rate_by_keyboard(page, key: str) -> int:
    """Press the key, then Enter; returns the position that was rated once the next page has loaded."""
    pos = _position(page)
    page.keyboard.press(key)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    return pos


def test_rater_flow_privacy_xss_and_screenshots(server, browser, tmp_path):
    url, tokens, log = server
    shots = DOCS if os.environ.get("CLINALIGN_UPDATE_DOCS") == "1" else tmp_path
    page = browser.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    _sign_in(page, url, tokens["Dr Alice"])
    assert "Dr Alice" in page.inner_text("header") and "0 of 4 done" in page.inner_text("main")

    # three Likert items by keyboard: 1-5 then Enter moves on to the next unrated item
    page.click("text=Discharge summaries")
    page.wait_for_url(re.compile(r"/c/1/\d+$"))
    scores = {}
    for key in ("4", "2", "5"):
        scores[_rate_by_keyboard(page, key)] = int(key)
    assert len(scores) == 3 and _position(page) not in scores  # landed on the one item left
    assert "1 left" in page.inner_text("#left")

    # the XSS payload in a note is shown as text and never runs
    for pos in range(1, 5):
        page.goto(f"{url}/c/1/{pos}")
        if "payload" in page.inner_text("#source"):
            assert "<script>window.__xss = 1</script>" in page.inner_text("#source")
            assert page.evaluate("window.__xss") is None and page.locator("#source img").count() == 0
            break
    else:
        pytest.fail("the XSS item was not found")

    # two pairwise picks by keyboard
    page.goto(f"{url}/c/2")
    page.wait_for_url(re.compile(r"/c/2/\d+$"))
    picks = {_rate_by_keyboard(page, "a"): "A", _rate_by_keyboard(page, "t"): "tie"}

    # reload: the work is saved (server side, not in the page)
    for pos, score in scores.items():
        page.goto(f"{url}/c/1/{pos}")
        page.reload()
        assert page.is_checked(f"input[name=score][value='{score}']")
        assert page.inner_text("#saved") == f"saved: {score}"
    for pos, choice in picks.items():
        page.goto(f"{url}/c/2/{pos}")
        assert page.is_checked(f"input[name=choice][value='{choice}']")
    page.goto(url + "/")
    assert "3 of 4 done" in page.inner_text("main") and "2 of 3 done" in page.inner_text("main")

    # the screenshot for the README: a rating page with a score picked
    page.goto(f"{url}/c/1/{next(p for p in scores if scores[p] == 4)}")
    page.evaluate("document.activeElement && document.activeElement.blur()")
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / "rate-likert.png"))

    # a second rater sees none of the first one's work
    _sign_out(page)
    _sign_in(page, url, tokens["Dr Bob"])
    assert "0 of 4 done" in page.inner_text("main") and "0 of 3 done" in page.inner_text("main")
    for pos in range(1, 5):
        page.goto(f"{url}/c/1/{pos}")
        assert page.locator("input[name=score]:checked").count() == 0 and page.locator("#saved").count() == 0
    for pos in range(1, 4):
        page.goto(f"{url}/c/2/{pos}")
        assert page.locator("input[name=choice]:checked").count() == 0

    # Bob rates everything through the API, so the admin page has agreement to show
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {tokens['Dr Bob']}"}) as c:
        for pos in range(1, 5):
            assert c.post(f"/api/c/1/{pos}", json={"score": 5 - pos % 3}).status_code == 200
        for pos in range(1, 4):
            assert c.post(f"/api/c/2/{pos}", json={"choice": "AB"[pos % 2]}).status_code == 200

    _sign_out(page)
    _sign_in(page, url, tokens["admin"])
    assert page.url.endswith("/admin")
    text = page.inner_text("main")
    assert "Krippendorff" in text and "Cohen" in text
    assert re.search(r"Dr Alice\s+3 / 4", text) and re.search(r"Dr Bob\s+4 / 4", text)
    page.screenshot(path=str(shots / "rate-admin.png"), full_page=True)
    assert all((shots / f"rate-{n}.png").read_bytes()[:4] == b"\x89PNG" for n in ("likert", "admin"))

    assert dialogs == []
    assert not any("payload" in line or "HOSPITAL COURSE" in line for line in log)  # no note text in logs
