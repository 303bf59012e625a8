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
from rate_server import seed_db

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
    from clinalign.rate.admin import admin_summary

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


# ---- issue #15: defects 2, 3, 4, 5 (app side) and 6 ---------------------------------------------------


def _count(path) -> int:
    return db.connect(path).execute("SELECT COUNT(*) FROM ratings").fetchone()[0]


def test_lone_surrogate_in_a_comment_is_a_clear_422(app_db):
    path, tokens = app_db
    c = client(path, tokens["alice"])
    r = c.post("/api/c/1/1", content=b'{"score": 3, "comment": "a\\ud800c"}',
               headers={"content-type": "application/json"})
    assert r.status_code == 422 and "surrogate" in r.json()["error"]
    r = c.post("/api/c/1/1", content=b'{"score": 3, "\\udfff": 1}', headers={"content-type": "application/json"})
    assert r.status_code == 422  # a surrogate in a key: also a 4xx, not a 500
    assert _count(path) == 0
    assert c.post("/api/c/1/1", json={"score": 3, "comment": "a\U0001F600c"}).status_code == 200  # a real emoji


def test_admins_cannot_rate_and_old_admin_rows_count_nowhere(app_db):
    path, tokens = app_db
    admin = client(path, tokens["admin"])
    for url, body in (("/api/c/1/1", {"score": 4}), ("/api/c/2/1", {"choice": "A"})):
        r = admin.post(url, json=body)
        assert r.status_code == 403 and "admin tokens cannot rate" in r.json()["error"]
    c, csrf = sign_in(path, tokens["admin"])
    assert c.post("/c/1/1", data={"score": "4", "csrf": csrf}).status_code == 403
    assert _count(path) == 0
    # a rating an admin left with an older version is in no statistic or export
    con = db.connect(path)
    admin_id = db.rater_for_token(con, tokens["admin"]).id
    alice_id = db.rater_for_token(con, tokens["alice"]).id
    for rid, score in ((admin_id, 1), (alice_id, 5)):
        db.save_rating(con, rid, db.Slot(1, 1, False), score, None, "")
    from clinalign.rate.admin import admin_summary
    from clinalign.rate.export import likert_rows

    assert [(r["rater"], r["score"]) for r in likert_rows(con)] == [("alice", 5)]
    assert [r["rater"] for r in db.all_ratings(con)] == ["alice"]
    assert sum(r["done"] for r in admin_summary(con)[0]["raters"]) == 1


def test_sessions_end_at_logout_expire_and_are_revocable(app_db, capsys):
    path, tokens = app_db
    c, csrf = sign_in(path, tokens["alice"])
    sid = c.cookies.get("clinalign_rate")
    assert sid and sid != tokens["alice"]  # the cookie is a session id, not the token
    _, csrf2 = sign_in(path, tokens["alice"])
    assert csrf2 != csrf  # a new session, a new CSRF token
    assert c.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    replay = client(path)
    replay.cookies.set("clinalign_rate", sid)
    r = replay.post("/c/1/1", data={"score": "3", "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 401 and _count(path) == 0
    assert replay.get("/", follow_redirects=False).headers["location"] == "/login"
    # expiry
    c3, csrf3 = sign_in(path, tokens["bob"])
    db.connect(path).execute("UPDATE sessions SET expires_at = 0")
    assert c3.post("/c/1/1", data={"score": "3", "csrf": csrf3}).status_code == 401
    # revoke-rater ends the sessions and the token at once; the ratings stay
    c4, csrf4 = sign_in(path, tokens["bob"])
    assert c4.post("/c/1/1", data={"score": "3", "csrf": csrf4}, follow_redirects=False).status_code == 303
    from clinalign.cli import run

    assert run(["rate", "revoke-rater", "bob", "--db", str(path)]) == 0
    assert "1 session(s) ended" in capsys.readouterr().out
    assert c4.post("/c/1/2", data={"score": "3", "csrf": csrf4}).status_code == 401
    assert client(path, tokens["bob"]).get("/api/campaigns").status_code == 401
    assert client(path, tokens["alice"]).get("/api/campaigns").status_code == 200
    assert _count(path) == 1
    assert run(["rate", "revoke-rater", "nobody", "--db", str(path)]) == 2
    assert "no rater named 'nobody'" in capsys.readouterr().err


def test_session_cookie_is_secure_over_https(app_db):
    path, tokens = app_db
    for scheme, secure in (("http", False), ("https", True)):
        c = TestClient(create_app(path), base_url=f"{scheme}://127.0.0.1")
        form = c.get("/login")
        assert ("secure" in form.headers["set-cookie"].lower()) == secure
        pre = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        r = c.post("/login", data={"token": tokens["alice"], "csrf": pre}, follow_redirects=False)
        cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and "clinalign_rate=" in v)
        assert ("; secure" in cookie.lower()) == secure and "httponly" in cookie.lower()


def test_a_damaged_item_payload_stops_only_that_item(app_db, caplog):
    path, tokens = app_db
    con = db.connect(path)
    c, bob = client(path, tokens["alice"]), client(path, tokens["bob"])
    assert bob.post("/api/c/2/1", json={"choice": "A"}).status_code == 200
    bob_first = db.rater_order(con, db.rater_for_token(con, tokens["bob"]).id, 2)[0]  # rated, then damaged
    order = db.rater_order(con, db.rater_for_token(con, tokens["alice"]).id, 2)
    first = next(s for s in order if s.item_id != bob_first.item_id)  # damaged, unrated
    second = next(s for s in order if s.item_id not in (first.item_id, bob_first.item_id))  # intact
    con.execute("UPDATE items SET payload = 'not json {' WHERE id = ?", (first.item_id,))
    con.execute("UPDATE items SET payload = '[1, 2]' WHERE id = ?", (bob_first.item_id,))
    with caplog.at_level("ERROR"):
        r = c.get(f"/api/c/2/{first.position}")
        assert r.status_code == 500 and "damaged" in r.json()["error"]
        page = c.get(f"/c/2/{first.position}")
        assert page.status_code == 500 and "the other items can still be rated" in page.text
    assert f"items row {first.item_id}: payload: not JSON" in caplog.text and "Traceback" not in caplog.text
    assert c.get(f"/api/c/2/{second.position}").status_code == 200
    assert c.post(f"/api/c/2/{second.position}", json={"choice": "B"}).status_code == 200
    damaged = {s.position for s in order if s.item_id in (first.item_id, bob_first.item_id)}
    nxt = c.get("/c/2", follow_redirects=False).headers["location"]
    assert nxt.startswith("/c/2/") and int(nxt[5:]) not in damaged | {second.position}  # damaged: passed over
    r = client(path, tokens["admin"]).get("/admin")
    assert r.status_code == 200 and f"Items rows {bob_first.item_id} hold damaged data" in r.text


def test_early_refusals_have_the_security_headers_and_json_under_api(app_db):
    path, tokens = app_db
    c = client(path, tokens["alice"])
    for headers, status, needle in (({"content-length": str(MAX_BODY + 1)}, 413, "too large"),
                                    ({"content-length": "12x"}, 400, "Content-Length")):
        r = c.post("/api/c/1/1", content=b"{}", headers={"content-type": "application/json", **headers})
        assert r.status_code == status and needle in r.json()["error"]
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    r = c.post("/c/1/1", content=b"x", headers={"content-length": str(MAX_BODY + 1)})
    assert r.status_code == 413 and r.headers["content-type"].startswith("text/html")
    assert "x-content-type-options" in r.headers


def test_host_header_must_be_trusted(app_db):
    path, tokens = app_db
    for host, status in (("127.0.0.1:8000", 200), ("localhost", 200), ("[::1]:8000", 200),
                         ("evil.example", 400), ("127.0.0.1.evil.example", 400), ("", 400)):
        r = client(path, tokens["alice"]).get("/api/campaigns", headers={"host": host})
        assert r.status_code == status, host
        if status == 400:
            assert "Host" in r.json()["error"] and "content-security-policy" in r.headers
    proxied = TestClient(create_app(path, allowed_hosts=["ratings.example.org"]), base_url="https://ratings.example.org")
    assert proxied.get("/api/campaigns", headers={"authorization": f"Bearer {tokens['alice']}"}).status_code == 200


def test_a_slow_request_body_is_cut_off(app_db, monkeypatch):
    import asyncio

    from clinalign.rate import app as app_module

    path, tokens = app_db
    monkeypatch.setattr(app_module, "BODY_TIMEOUT", 0.2)
    asgi = create_app(path)
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": b'{"sco', "more_body": True}]

    async def receive():
        if chunks:
            return chunks.pop()
        await asyncio.sleep(60)  # the client stops sending

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/c/1/1", "raw_path": b"/api/c/1/1", "query_string": b"", "root_path": "",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"authorization", f"Bearer {tokens['alice']}".encode())]}

    async def main():
        await asyncio.wait_for(asgi(scope, receive, send), 10)

    asyncio.run(main())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 408 and b"not received within 0.2 s" in body
    assert _count(path) == 0


def test_the_likert_page_shows_the_studys_rubric(app_db):
    """Clinicians rate on the scale the study scores with: a Likert campaign made without a rubric of
    its own shows discharge_summary's RUBRIC, anchor by anchor, on the rating page."""
    import html

    from clinalign.tasks.discharge_summary import RUBRIC

    path, tokens = app_db
    c, _ = sign_in(path, tokens["alice"])
    page = c.get("/c/1/1")
    assert page.status_code == 200
    shown = re.search(r'<div class="rubric">(.*?)</div>', page.text, re.S).group(1)
    assert html.unescape(shown) == RUBRIC
    for score in range(1, 6):
        assert f"{score} = " in shown


# ---- campaign assignment --------------------------------------------------------------------------------


def test_a_rater_reaches_only_assigned_campaigns(app_db, capsys):
    from clinalign.cli import run

    path, tokens = app_db
    assert run(["rate", "unassign", "Which answer is better", "bob", "--db", str(path)]) == 0
    assert "1 rater(s) unassigned" in capsys.readouterr().out
    bob = client(path, tokens["bob"])
    assert [c["id"] for c in bob.get("/api/campaigns").json()["campaigns"]] == [1]
    for method, url, body in (("get", "/api/c/2/1", None), ("post", "/api/c/2/1", {"choice": "A"}),
                              ("post", "/api/c/2/99", {"choice": "A"})):
        r = getattr(bob, method)(url, **({"json": body} if body else {}))
        assert r.status_code == 403 and "not assigned to campaign 2" in r.json()["error"], url
    assert bob.get("/api/c/9/1").status_code == 404  # no such campaign: still a 404
    page, csrf = sign_in(path, tokens["bob"])
    assert "Which answer is better" not in page.get("/").text
    for url in ("/c/2", "/c/2/1"):
        r = page.get(url, follow_redirects=False)
        assert r.status_code == 403 and "not assigned" in r.text, url
    assert page.post("/c/2/1", data={"choice": "A", "csrf": csrf}).status_code == 403
    con = db.connect(path)
    bob_id = db.rater_for_token(con, tokens["bob"]).id
    assert _count(path) == 0  # nothing stored
    assert bob_id not in db.order_seeds(con, 2)  # not even an item order drawn for him
    # alice, still assigned, rates as before; bob assigned again rates too
    assert client(path, tokens["alice"]).post("/api/c/2/1", json={"choice": "A"}).status_code == 200
    assert run(["rate", "assign", "2", "bob", "--db", str(path)]) == 0  # by number, as the admin page shows it
    assert bob.post("/api/c/2/1", json={"choice": "B"}).status_code == 200
    assert _count(path) == 2


def test_new_raters_see_nothing_until_assigned_and_bad_names_change_nothing(app_db, capsys):
    from clinalign.cli import run

    path, _ = app_db
    assert run(["rate", "add-rater", "carol", "--db", str(path)]) == 0
    out = capsys.readouterr()
    assert "no campaign yet" in out.err
    carol = client(path, out.out.strip())
    assert carol.get("/api/campaigns").json()["campaigns"] == []
    assert carol.get("/api/c/1/1").status_code == 403
    c, _ = sign_in(path, out.out.strip())
    assert "No campaigns are assigned to you yet" in c.get("/").text
    assert run(["rate", "add-rater", "dan", "--campaign", "Discharge summaries", "--db", str(path)]) == 0
    dan = client(path, capsys.readouterr().out.strip())
    assert [x["id"] for x in dan.get("/api/campaigns").json()["campaigns"]] == [1]
    items = path.parent / "items.jsonl"
    items.write_text(json.dumps({"id": "x", "source": "note", "output": "summary", "system": "sft"}) + "\n")
    assert run(["rate", "create-campaign", "Cardiology", "--items", str(items), "--rater", "carol",
                "--db", str(path)]) == 0
    assert "assigned to carol" in capsys.readouterr().out
    assert [x["name"] for x in carol.get("/api/campaigns").json()["campaigns"]] == ["Cardiology"]
    # unknown names and admins: one line, exit 2, nothing created or assigned
    con = db.connect(path)
    before = [tuple(r) for r in con.execute("SELECT * FROM assignments ORDER BY 1, 2")]
    for argv, needle in ((["add-rater", "erin", "--campaign", "Cardiolgy"], "no campaign named 'Cardiolgy'"),
                         (["assign", "Cardiology", "carol", "zoe"], "no rater named 'zoe'"),
                         (["assign", "Cardiology", "admin"], "'admin' is an admin"),
                         (["unassign", "Nope", "carol"], "no campaign named 'Nope'"),
                         (["create-campaign", "ED", "--items", str(items), "--rater", "zoe"], "no rater named 'zoe'")):
        assert run(["rate", *argv, "--db", str(path)]) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
    assert [tuple(r) for r in con.execute("SELECT * FROM assignments ORDER BY 1, 2")] == before
    assert con.execute("SELECT COUNT(*) FROM raters WHERE name = 'erin'").fetchone()[0] == 0
    assert con.execute("SELECT COUNT(*) FROM campaigns WHERE name = 'ED'").fetchone()[0] == 0


def test_admin_page_shows_who_is_assigned_and_keeps_unassigned_raters_ratings(app_db):
    path, tokens = app_db
    bob = client(path, tokens["bob"])
    assert bob.post("/api/c/1/1", json={"score": 4}).status_code == 200
    con = db.connect(path)
    db.unassign(con, "Discharge summaries", ["bob"])
    db.unassign(con, "Which answer is better", ["bob"])
    db.add_rater(con, "carol")
    r = client(path, tokens["admin"]).get("/admin")
    assert r.status_code == 200
    first, second = r.text.split('id="campaign-2"')
    assert re.search(r"alice</td><td>0 / 4.*?<td>yes</td>", first, re.S)
    assert re.search(r"bob</td><td>1 / 4.*?<td>no \(ratings kept\)</td>", first, re.S)
    assert "Not assigned: carol." in first
    assert "bob</td>" not in second and "Not assigned: bob, carol." in second
    from clinalign.rate.export import likert_rows

    assert [(x["rater"], x["score"]) for x in likert_rows(con)] == [("bob", 4)]  # his rating still counts


OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE raters (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token_hash TEXT NOT NULL UNIQUE,
  is_admin INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL);
CREATE TABLE campaigns (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL CHECK (kind IN ('likert','pairwise')), rubric TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE items (id INTEGER PRIMARY KEY, campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
  ext_id TEXT NOT NULL, system TEXT NOT NULL, task TEXT, payload TEXT NOT NULL, UNIQUE (campaign_id, ext_id, system));
CREATE TABLE orders (rater_id INTEGER NOT NULL REFERENCES raters(id),
  campaign_id INTEGER NOT NULL REFERENCES campaigns(id), seed INTEGER NOT NULL, PRIMARY KEY (rater_id, campaign_id));
CREATE TABLE ratings (id INTEGER PRIMARY KEY, rater_id INTEGER NOT NULL REFERENCES raters(id),
  item_id INTEGER NOT NULL REFERENCES items(id), score INTEGER CHECK (score BETWEEN 1 AND 5),
  choice TEXT CHECK (choice IN ('a','b','tie')), comment TEXT NOT NULL DEFAULT '', swapped INTEGER NOT NULL DEFAULT 0,
  created_at REAL NOT NULL, updated_at REAL NOT NULL, UNIQUE (rater_id, item_id));
"""


def test_an_old_database_migrates_with_every_rater_assigned_and_ratings_intact(tmp_path):
    """A database written before assignments existed (the schema of that version, rows by plain SQL):
    opened by this version, every rater keeps every campaign and not one rating changes."""
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    tokens = {"ann": "tok-ann-0123456789", "ben": "tok-ben-0123456789", "boss": "tok-boss-0123456789"}
    for i, (name, tok) in enumerate(tokens.items(), 1):
        old.execute("INSERT INTO raters VALUES (?, ?, ?, ?, 0)", (i, name, db.hash_token(tok), int(name == "boss")))
    for cid, (name, kind, items) in enumerate((("notes", "likert", likert_items()), ("pairs", "pairwise", pair_items())), 1):
        old.execute("INSERT INTO campaigns VALUES (?, ?, ?, 'rubric', 0)", (cid, name, kind))
        for item in items:
            old.execute("INSERT INTO items (campaign_id, ext_id, system, task, payload) VALUES (?, ?, ?, ?, ?)",
                        (cid, *db.item_key(item), item.task, item.model_dump_json()))
    old.execute("INSERT INTO orders VALUES (1, 1, 42)")
    old.executemany("INSERT INTO ratings (rater_id, item_id, score, choice, comment, swapped, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, 0, 1, 1)", [(1, 1, 4, None, "ok"), (2, 2, 2, None, ""),
                                                        (1, 5, None, "a", "better"), (2, 6, None, "tie", "")])
    old.commit()
    before = old.execute("SELECT * FROM ratings ORDER BY id").fetchall()
    old.close()

    con = db.open_db(path)
    pairs = sorted(tuple(r) for r in con.execute("SELECT rater_id, campaign_id FROM assignments"))
    assert pairs == [(1, 1), (1, 2), (2, 1), (2, 2)]  # both raters, both campaigns; the admin rates nothing
    assert [tuple(r) for r in con.execute("SELECT * FROM ratings ORDER BY id")] == [tuple(r) for r in before]
    assert db.order_seeds(con, 1) == {1: 42}
    ann = client(path, tokens["ann"])
    assert [c["done"] for c in ann.get("/api/campaigns").json()["campaigns"]] == [1, 1]
    unrated = next(slot.position for slot in db.rater_order(con, 1, 2) if slot.item_id != 5)
    assert ann.post(f"/api/c/2/{unrated}", json={"choice": "B"}).status_code == 200
    # the migration runs once: a rater unassigned afterwards stays unassigned when the file is opened again
    db.unassign(con, "pairs", ["ben"])
    con.close()
    db.open_db(path).close()
    assert client(path, tokens["ben"]).get("/api/c/2/1").status_code == 403
    assert _count(path) == 5


def test_invalid_json_in_an_api_body_says_what_and_where(app_db):
    path, tokens = app_db
    c = client(path, tokens["alice"])
    for body, expected in ((b'{"score": 3 "comment": "x"}', "Expecting ',' delimiter at line 1 column 13"),
                           (b'{"score": 3,\n "comment": x}', "Expecting value at line 2 column 13"),
                           (b'{"score": 3', "Expecting ',' delimiter at line 1 column 12")):
        r = c.post("/api/c/1/1", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422
        assert r.json()["error"] == f"request body is not valid JSON: {expected}"


SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "x-frame-options", "cache-control",
                    "referrer-policy")


def _raw_http(url: str, request: bytes) -> tuple[int, dict[str, str]]:
    """Send bytes no HTTP client would send; the status and headers of the server's reply."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(4096)):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return int(head[0].split()[1]), {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:])}


def test_the_servers_own_400s_carry_the_security_headers(app_db):
    """uvicorn answers requests it cannot parse itself, before the app runs (a malformed request line or
    header, ``Content-Length: abc``): those replies carry the headers too."""
    from rate_server import running_server

    path, tokens = app_db
    with running_server(path) as (url, _):
        for request in (b"GARBAGE\r\n\r\n", b"GET /\x00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                        b"POST /api/c/1/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n{}",
                        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n"):
            status, headers = _raw_http(url, request)
            assert status == 400, request[:40]
            assert all(h in headers for h in SECURITY_HEADERS), (request[:40], headers)
            assert "default-src 'none'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
        status, headers = _raw_http(url, b"GET /api/campaigns HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                                    + tokens["alice"].encode() + b"\r\nConnection: close\r\n\r\n")
        assert status == 200 and all(h in headers for h in SECURITY_HEADERS)


def test_an_unexpected_error_is_a_500_with_the_security_headers(app_db):
    path, tokens = app_db
    app = create_app(path)

    @app.get("/api/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    c = TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)
    r = c.get("/api/boom")
    assert r.status_code == 500 and "internal error" in r.json()["error"]
    assert all(h in r.headers for h in SECURITY_HEADERS), dict(r.headers)
