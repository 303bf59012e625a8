"""The rating app through its HTTP interface (fastapi TestClient): sign-in, blinding, storage, errors."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from fastapi.testclient import TestClient

from clinalign.rate import db
from clinalign.rate.app import MAX_BODY, create_app
from clinalign.rate.items import LikertItem, PairwiseItem
from clinalign.rate.testing import seed_db

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def likert_items(n: int = 4) -> list[LikertItem]:
    return [LikertItem(id=f"rec{i}", task="discharge_summary", source=f"Note {i}: {XSS}" if i == 0 else f"Note {i}",
                       output=f"Summary {i} by {s}", system=s) for i in range(n // 2) for s in ("sft", "dpo")]


def pair_items(n: int = 6) -> list[PairwiseItem]:
    return [PairwiseItem(id=f"p{i}", prompt=f"Prompt {i}", output_a=f"Answer from SFT {i}",
                         output_b=f"Answer from DPO {i}", system_a="sft", system_b="dpo") for i in range(n)]


@pytest.fixture
def app_db(tmp_path):
    path = tmp_path / "r.sqlite"
    tokens = seed_db(path, likert_items(), pair_items())
    return path, tokens


def client(path, token=None) -> TestClient:
    c = TestClient(create_app(path), base_url="http://127.0.0.1")
    if token:
        c.headers["authorization"] = f"Bearer {token}"
    return c


def sign_in(path, token) -> tuple[TestClient, str]:
    """A browser-like client: cookie sign-in through the form; returns it and the page CSRF token."""
    c = client(path)
    form = c.get("/login")
    pre = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    r = c.post("/login", data={"token": token, "csrf": pre}, follow_redirects=False)
    assert r.status_code == 303
    page = c.get("/")
    return c, re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_every_page_and_api_needs_a_token(app_db):
    path, _ = app_db
    c = client(path)
    r = c.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    r = c.get("/api/campaigns")
    assert r.status_code == 401 and "token" in r.json()["error"]
    r = c.post("/api/c/1/1", json={"score": 3})
    assert r.status_code == 401
    assert client(path, "not-a-token").get("/api/c/1/1").status_code == 401


def test_tokens_are_stored_hashed(app_db):
    path, tokens = app_db
    dump = "\n".join(sqlite3.connect(path).iterdump())
    assert all(t not in dump for t in tokens.values())
    assert db.hash_token(tokens["alice"]) in dump


def test_order_is_blinded_per_rater_and_reproducible_from_the_seed(app_db):
    path, tokens = app_db
    con = db.connect(path)
    a = db.rater_for_token(con, tokens["alice"])
    b = db.rater_for_token(con, tokens["bob"])
    order_a, order_b = db.rater_order(con, a.id, 2), db.rater_order(con, b.id, 2)
    assert order_a == db.rater_order(con, a.id, 2)  # drawn once from the recorded seed
    assert sorted(s.item_id for s in order_a) == sorted(s.item_id for s in order_b)
    assert (order_a != order_b)  # 6 items and a random swap each: equal only by a 1 in ~46,000 chance
    seeds = dict(con.execute("SELECT rater_id, seed FROM orders WHERE campaign_id=2").fetchall())
    assert set(seeds) == {a.id, b.id}
    # nothing on the rater's page or API names a system
    c = client(path, tokens["alice"])
    for pos in range(1, 7):
        text = json.dumps(c.get(f"/api/c/2/{pos}").json()).lower()
        assert "sft\"" not in text and "system" not in text and "dpo\"" not in text


def test_likert_submission_is_stored_updated_with_history_and_private(app_db):
    path, tokens = app_db
    alice, bob = client(path, tokens["alice"]), client(path, tokens["bob"])
    r = alice.post("/api/c/1/2", json={"score": 4, "comment": "ok"})
    assert r.status_code == 200 and r.json() == {"ok": True, "done": 1, "total": 4}
    r = alice.post("/api/c/1/2", json={"score": 2, "comment": "missed the dose"})
    assert r.json()["done"] == 1
    assert alice.get("/api/c/1/2").json()["rating"] == {"score": 2, "comment": "missed the dose"}
    assert all(bob.get(f"/api/c/1/{p}").json()["rating"] is None for p in range(1, 5))
    con = db.connect(path)
    assert con.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 1
    hist = con.execute("SELECT score, comment FROM rating_history").fetchall()
    assert [tuple(h) for h in hist] == [(4, "ok")]


def test_pairwise_choice_is_stored_as_the_underlying_output(app_db):
    path, tokens = app_db
    c = client(path, tokens["alice"])
    con = db.connect(path)
    rid = db.rater_for_token(con, tokens["alice"]).id
    for slot in db.rater_order(con, rid, 2):
        shown = c.get(f"/api/c/2/{slot.position}").json()["item"]
        assert c.post(f"/api/c/2/{slot.position}", json={"choice": "A"}).status_code == 200
        stored = con.execute("SELECT choice, swapped FROM ratings WHERE item_id=? AND rater_id=?",
                             (slot.item_id, rid)).fetchone()
        payload = db.item_payload(con, slot.item_id)
        # "A" is whatever was on the left; the stored choice names the output that was there
        assert payload[f"output_{stored['choice']}"] == shown["A"]
        assert stored["swapped"] == int(slot.swapped)
        assert c.get(f"/api/c/2/{slot.position}").json()["rating"]["choice"] == "A"
    assert c.post("/api/c/2/1", json={"choice": "tie"}).status_code == 200


@pytest.mark.parametrize("url,body,status,needle", [
    ("/api/c/1/1", {"score": 6}, 422, "1 to 5"),
    ("/api/c/1/1", {"score": 0}, 422, "1 to 5"),
    ("/api/c/1/1", {}, 422, "score"),
    ("/api/c/1/1", {"score": "abc"}, 422, "score"),
    ("/api/c/1/1", {"score": True}, 422, "score"),
    ("/api/c/1/99", {"score": 3}, 404, "unknown item 99"),
    ("/api/c/9/1", {"score": 3}, 404, "unknown campaign 9"),
    ("/api/c/x/1", {"score": 3}, 422, "cid"),
    ("/api/c/2/1", {"choice": "C"}, 422, "A, B or tie"),
    ("/api/c/1/1", {"score": 3, "comment": "x" * 5000}, 422, "comment"),
    ("/api/c/1/1", {"score": 3, "extra": 1}, 422, "extra"),
])
def test_bad_input_is_a_clear_4xx(app_db, url, body, status, needle):
    path, tokens = app_db
    r = client(path, tokens["alice"]).post(url, json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]
    assert db.connect(path).execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 0


def test_oversized_and_malformed_bodies_are_rejected(app_db):
    path, tokens = app_db
    c = client(path, tokens["alice"])
    r = c.post("/api/c/1/1", content=b'{"score": 3, "comment": "' + b"x" * MAX_BODY + b'"}',
               headers={"content-type": "application/json"})
    assert r.status_code == 413 and "too large" in r.text
    r = c.post("/api/c/1/1", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_forms_need_the_csrf_token(app_db):
    path, tokens = app_db
    c, csrf = sign_in(path, tokens["alice"])
    r = c.post("/c/1/1", data={"score": "3"}, follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.text
    r = c.post("/c/1/1", data={"score": "3", "csrf": "forged"}, follow_redirects=False)
    assert r.status_code == 403
    r = c.post("/c/1/1", data={"score": "3", "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/c/1?after=1"
    assert c.get("/c/1?after=1", follow_redirects=False).headers["location"] == "/c/1/2"
    r = c.post("/c/1/1", data={"score": "9", "csrf": csrf})
    assert r.status_code == 422 and "1 to 5" in r.text
    # the sign-in form has its own double-submit token
    fresh = client(path)
    fresh.get("/login")
    assert fresh.post("/login", data={"token": tokens["alice"], "csrf": "nope"}).status_code == 403
    # another rater's CSRF token does not work for this one
    _, bob_csrf = sign_in(path, tokens["bob"])
    assert c.post("/c/1/2", data={"score": "3", "csrf": bob_csrf}).status_code == 403


def test_wrong_token_on_the_sign_in_form(app_db):
    path, _ = app_db
    c = client(path)
    pre = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
    r = c.post("/login", data={"token": "guess", "csrf": pre})
    assert r.status_code == 401 and "Unknown token" in r.text


def test_note_text_is_escaped_and_headers_lock_the_page_down(app_db):
    path, tokens = app_db
    c, _ = sign_in(path, tokens["alice"])
    con = db.connect(path)
    rid = db.rater_for_token(con, tokens["alice"]).id
    slot = next(s for s in db.rater_order(con, rid, 1) if "<script>" in db.item_payload(con, s.item_id)["source"])
    r = c.get(f"/c/1/{slot.position}")
    assert r.status_code == 200
    assert '<script>alert("x")</script>' not in r.text and "&lt;script&gt;alert(" in r.text
    assert "<img src=x" not in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'nonce-" in csp
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    scripts = re.findall(r"<script([^>]*)>", r.text)
    assert scripts and all(f'nonce="{nonce}"' in s for s in scripts)  # only our own inline script runs
    assert "http://" not in r.text and "https://" not in r.text  # no third-party assets
    assert r.headers["cache-control"] == "no-store"


def test_home_shows_progress_and_done_page(app_db):
    path, tokens = app_db
    c = client(path, tokens["alice"])
    for pos in range(1, 5):
        c.post(f"/api/c/1/{pos}", json={"score": pos})
    campaigns = c.get("/api/campaigns").json()["campaigns"]
    assert [(x["done"], x["total"]) for x in campaigns] == [(4, 4), (0, 6)]
    r = c.get("/c/1")
    assert r.status_code == 200 and "All 4 items" in r.text


def test_admin_page_shows_progress_and_agreement(app_db):
    path, tokens = app_db
    alice, bob = client(path, tokens["alice"]), client(path, tokens["bob"])
    con = db.connect(path)
    ids = {n: db.rater_for_token(con, tokens[n]).id for n in ("alice", "bob")}
    # both raters score the same items 1..4 (by item, not by position) and pick the same outputs
    for name, c in (("alice", alice), ("bob", bob)):
        for slot in db.rater_order(con, ids[name], 1):
            c.post(f"/api/c/1/{slot.position}", json={"score": slot.item_id % 5 + 1})
        for slot in db.rater_order(con, ids[name], 2)[:3]:
            c.post(f"/api/c/2/{slot.position}", json={"choice": "A"})
    assert alice.get("/admin").status_code == 403
    r = client(path, tokens["admin"]).get("/admin")
    assert r.status_code == 200
    assert "Krippendorff" in r.text and "1.000" in r.text  # identical scores: alpha = 1
    assert "Cohen" in r.text
    assert re.search(r"alice</td><td>4 / 4", r.text) and re.search(r"bob</td><td>3 / 6", r.text)
    from clinalign.rate.app import admin_summary

    summary = admin_summary(con)
    assert summary[0]["agreement"] == pytest.approx(1.0) and summary[0]["shared"] == 4
    assert summary[1]["shared"] <= 3


def test_logs_hold_no_note_text(app_db, caplog):
    path, tokens = app_db
    c = client(path, tokens["alice"])
    with caplog.at_level("DEBUG"):
        for pos in range(1, 5):
            c.get(f"/c/1/{pos}")
            c.post(f"/api/c/1/{pos}", json={"score": 9})
    assert "Note " not in caplog.text and "Summary " not in caplog.text
