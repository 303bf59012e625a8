"""The rating app's JSON and form endpoints under arbitrary input (issue #15): any unicode (lone
surrogates included), nesting, numbers, bodies and paths give a 4xx with one clear message, never a 5xx.
The TestClient re-raises any exception the app did not turn into a response, so a crash fails too."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clinalign.rate.app import create_app
from clinalign.rate.items import LikertItem, PairwiseItem
from rate_server import seed_db

# any code point, lone surrogates and control characters included, plus a few known to have broken things
ANY_TEXT = (st.text(st.characters(exclude_categories=()), max_size=40)
            | st.sampled_from(["a\ud800c", "\udfff", "x\x00y", '=HYPERLINK("x")', "\u202e", " "]))
NUMBERS = (st.integers(-(10**30), 10**30) | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from([0, 1, 3, 5, 6, -1, 3.0, 3.5, 1e308]))
SCALARS = st.none() | st.booleans() | NUMBERS | ANY_TEXT | st.sampled_from(["A", "b", "tie", "T", "3", " 4 "])
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(ANY_TEXT, inner, max_size=4), max_leaves=12)
PLAUSIBLE = (st.fixed_dictionaries({"score": st.integers(1, 5), "comment": ANY_TEXT})
             | st.fixed_dictionaries({"choice": st.sampled_from(["A", "B", "tie"]), "comment": ANY_TEXT}))
BODIES = PLAUSIBLE | st.dictionaries(st.sampled_from(["score", "choice", "comment"]) | ANY_TEXT, JSON, max_size=4) | JSON
CAMPAIGN = st.sampled_from(["1", "2"])
POSITION = st.integers(1, 6).map(str)
SEGMENT = (st.integers(-5, 12).map(str) | st.integers(-(10**25), 10**25).map(str)
           | ANY_TEXT.map(lambda t: quote(t.encode("utf-8", "surrogatepass"), safe="")))
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "r.sqlite"
    likert = [LikertItem(id=f"r{i}", source=f"note {i}", output="s", system=s) for i in range(2) for s in ("a", "b")]
    pairs = [PairwiseItem(id=f"p{i}", prompt="q", output_a="x", output_b="y", system_a="a", system_b="b")
             for i in range(3)]
    tokens = seed_db(path, likert, pairs)
    api = TestClient(create_app(path), base_url="http://127.0.0.1")
    api.headers["authorization"] = f"Bearer {tokens['alice']}"
    browser = TestClient(create_app(path), base_url="http://127.0.0.1")
    pre = re.search(r'name="csrf" value="([^"]+)"', browser.get("/login").text).group(1)
    assert browser.post("/login", data={"token": tokens["bob"], "csrf": pre}, follow_redirects=False).status_code == 303
    csrf = re.search(r'name="csrf" value="([^"]+)"', browser.get("/").text).group(1)
    return api, browser, csrf


def _clear_4xx(r, api: bool) -> None:
    assert r.status_code < 500, r.text[:300]
    if api and r.status_code >= 400:
        assert isinstance(r.json()["error"], str) and r.json()["error"]


@FUZZ
@given(cid=CAMPAIGN | SEGMENT, pos=POSITION | SEGMENT, body=BODIES, ascii_only=st.booleans())
def test_json_api_never_answers_5xx(app, cid, pos, body, ascii_only):
    api, _, _ = app
    raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")  # NaN/Infinity too
    r = api.post(f"/api/c/{cid}/{pos}", content=raw, headers={"content-type": "application/json"})
    _clear_4xx(r, api=True)
    _clear_4xx(api.get(f"/api/c/{cid}/{pos}"), api=True)


@FUZZ
@given(cid=CAMPAIGN, pos=POSITION, body=PLAUSIBLE, ascii_only=st.booleans())
def test_well_formed_submissions_with_hostile_text_never_answer_5xx(app, cid, pos, body, ascii_only):
    api, _, _ = app
    raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    r = api.post(f"/api/c/{cid}/{pos}", content=raw, headers={"content-type": "application/json"})
    _clear_4xx(r, api=True)
    if r.status_code == 200:  # what was stored comes back as it was sent
        assert api.get(f"/api/c/{cid}/{pos}").json()["rating"]["comment"] == body["comment"].strip()


@FUZZ
@given(cid=CAMPAIGN | SEGMENT, pos=POSITION | SEGMENT, raw=st.binary(max_size=200),
       kind=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain",
                             "multipart/form-data; boundary=x"]))
def test_arbitrary_bytes_never_answer_5xx(app, cid, pos, raw, kind):
    api, browser, _ = app
    _clear_4xx(api.post(f"/api/c/{cid}/{pos}", content=raw, headers={"content-type": kind}), api=True)
    _clear_4xx(browser.post(f"/c/{cid}/{pos}", content=raw, headers={"content-type": kind}), api=False)


@FUZZ
@given(cid=CAMPAIGN | SEGMENT, pos=POSITION | SEGMENT,
       fields=st.dictionaries(st.sampled_from(["score", "choice", "comment", "csrf"]) | ANY_TEXT,
                              ANY_TEXT | NUMBERS.map(str), max_size=4),
       real_csrf=st.booleans())
def test_forms_never_answer_5xx(app, cid, pos, fields, real_csrf):
    _, browser, csrf = app
    if real_csrf:
        fields = {**fields, "csrf": csrf}
    form = "&".join(f"{quote(str(k).encode('utf-8', 'surrogatepass'))}={quote(str(v).encode('utf-8', 'surrogatepass'))}"
                    for k, v in fields.items())
    headers = {"content-type": "application/x-www-form-urlencoded"}
    r = browser.post(f"/c/{cid}/{pos}", content=form.encode(), headers=headers, follow_redirects=False)
    _clear_4xx(r, api=False)
    _clear_4xx(browser.post("/login", content=form.encode(), headers=headers, follow_redirects=False), api=False)
    _clear_4xx(browser.get(f"/c/{cid}/{pos}", follow_redirects=False), api=False)
