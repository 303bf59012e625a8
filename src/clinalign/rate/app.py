"""The rating web app: FastAPI, server-rendered pages, a small JSON API, SQLite underneath.

Pages (session cookie, CSRF token on every form):  JSON API (``Authorization: Bearer TOKEN``):
  GET/POST /login, POST /logout                        GET  /api/campaigns
  GET /            the rater's campaigns               GET  /api/c/{campaign}/{position}
  GET /c/{id}      jump to the next unrated item       POST /api/c/{campaign}/{position}
  GET/POST /c/{id}/{position}   rate one item               {"score": 1-5} or {"choice": "A"|"B"|"tie"},
  GET /admin       progress and agreement (admin)           optional "comment"

Items are addressed by their position in the rater's own shuffled order, never by an id or system name,
so nothing on screen or in a URL reveals which model wrote what. Pairwise choices arrive as the
on-screen A/B and are stored as the underlying output (``a``/``b``/``tie``) with the swap recorded.
Bad input is a 4xx with one clear message; logs hold methods, paths and status codes, never note text.
Admin tokens see the admin page but cannot rate. A stored item that is damaged (edited by hand or by
another tool) is a clear error on that item alone, logged with its row; every other item still works.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clinalign.errors import DataError
from clinalign.rate import db
from clinalign.rate.agreement import likert_alpha, pairwise_kappa
from clinalign.rate.templates import render

MAX_BODY = 64 * 1024  # bytes; a score and a comment fit many times over
MAX_COMMENT = 4000  # characters
COOKIE = "clinalign_rate"
PRE_COOKIE = "clinalign_rate_pre"  # double-submit CSRF for the sign-in form
log = logging.getLogger("clinalign.rate")


class HTTPError(HTTPException):
    """A 4xx with a message written for the person who sees it."""


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
BODY_TIMEOUT = 30.0  # seconds for a whole request body: a client trickling bytes does not hold a worker


def _host_name(header: bytes | None) -> str:
    """The name in a Host header, without the port (``[::1]:8000`` -> ``::1``)."""
    host = (header or b"").decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class GuardMiddleware:
    """Every response gets the security headers with a CSP nonce (no third-party anything, inline script
    only with the nonce, no framing, no caching of PHI), the early replies here included. Before the app
    runs: the Host header must name a trusted host (DNS rebinding), bodies over ``MAX_BODY`` are refused
    (413, also when chunked), and a body must arrive within ``BODY_TIMEOUT`` (408)."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS):
        self.app = app
        self.allowed_hosts = {h.strip("[]").lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["nonce"] = nonce

        async def send_with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers", []))
                headers += [
                    (b"content-security-policy",
                     f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; img-src 'self' "
                     f"data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'".encode()),
                    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"), (b"cache-control", b"no-store")]
                msg = {**msg, "headers": headers}
            await send(msg)

        headers = dict(scope["headers"])
        early = None
        length = headers.get(b"content-length")
        if _host_name(headers.get(b"host")) not in self.allowed_hosts:
            early = 400, "unknown Host header: this server answers only to the names it was started with"
        elif length is not None and not length.isdigit():
            early = 400, "bad Content-Length header"
        elif length is not None and int(length) > MAX_BODY:
            early = 413, f"request body too large (limit {MAX_BODY // 1024} KiB)"
        if early is not None:
            await _early_reply(scope, send_with_headers, *early)
            return
        seen, complete = 0, False
        deadline = asyncio.get_running_loop().time() + BODY_TIMEOUT

        async def limited_receive() -> Message:
            nonlocal seen, complete
            if complete:  # after the body only a disconnect can come: no deadline for waiting on it
                return await receive()
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except TimeoutError:
                raise HTTPError(408, f"request body not received within {BODY_TIMEOUT:g} s") from None
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                complete = not msg.get("more_body", False)
                if seen > MAX_BODY:
                    raise HTTPError(413, f"request body too large (limit {MAX_BODY // 1024} KiB)")
            return msg

        await self.app(scope, limited_receive, send_with_headers)


async def _early_reply(scope: Scope, send: Send, status: int, text: str) -> None:
    """A refusal before the app ran, in the app's own error shapes: JSON under /api/, a page elsewhere."""
    if scope["path"].startswith("/api/"):
        kind, body = b"application/json", json.dumps({"error": text}).encode()
    else:
        kind = b"text/html; charset=utf-8"
        body = render("error", status=status, title="Bad request" if status == 400 else "Too large",
                      message=text, nonce=scope["state"]["nonce"]).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RatingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    score: StrictInt | None = None  # strict: true/false or "4" are not scores
    choice: StrictStr | None = None
    comment: StrictStr = ""


def create_app(db_path: str | Path, allowed_hosts: list[str] | tuple[str, ...] = ()) -> FastAPI:
    """The app for one ratings database (which must exist: campaigns are created from the CLI).

    ``allowed_hosts``: Host header names to answer besides the loopback names (a reverse proxy's name)."""
    db.open_db(db_path).close()
    app = FastAPI(title="clinalign rate", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(GuardMiddleware, allowed_hosts=(*LOOPBACK_HOSTS, *allowed_hosts))

    def get_con() -> Iterator[sqlite3.Connection]:
        con = db.connect(db_path)
        try:
            yield con
        finally:
            con.close()

    # ---- errors: always a clear 4xx, as a page or as JSON -------------------------------------------
    def _error(request: Request, status: int, message: str) -> Response:
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate echoed back
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        titles = {400: "Bad request", 401: "Sign-in needed", 403: "Forbidden", 404: "Not found",
                  408: "Too slow", 413: "Too large", 422: "Invalid input", 500: "Damaged data"}
        html = render("error", status=status, title=titles.get(status, "Error"), message=message,
                      nonce=request.scope["state"]["nonce"])
        return HTMLResponse(html, status_code=status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 303 and exc.headers:
            return RedirectResponse(exc.headers["location"], status_code=303)
        message = exc.detail if isinstance(exc.detail, str) else "request not understood"
        if exc.status_code == 405:
            message = f"{request.method} is not allowed here"
        return _error(request, exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for e in exc.errors()[:5]:  # the field and what is wrong, never the submitted text
            field = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "path", "query", "form"))[:60]
            parts.append(f"{field or 'body'}: {e.get('msg', 'invalid')}")
        return _error(request, 422, "; ".join(parts))

    @app.exception_handler(DataError)
    async def _damaged(request: Request, exc: DataError) -> Response:
        log.error("damaged data: %s", exc)  # names the database row, never its text
        return _error(request, 500, "this item cannot be shown: its stored data is damaged. Tell the study "
                                    "administrator (the server log names the row); the other items can still be rated")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return _error(request, 500, "internal error; the administrator can find it in the server log")

    # ---- who is asking ------------------------------------------------------------------------------
    def rater(request: Request, con: sqlite3.Connection = Depends(get_con)) -> db.Rater:
        """A Bearer token (API clients), or a cookie holding a server-side session id (browsers)."""
        auth = request.headers.get("authorization", "")
        request.state.session = None
        if auth.lower().startswith("bearer "):
            r = db.rater_for_token(con, auth[7:].strip())
        else:
            request.state.session = db.session_for_id(con, request.cookies.get(COOKIE))
            r = request.state.session.rater if request.state.session else None
        if r is None:
            if request.method == "GET" and not request.url.path.startswith("/api/"):
                raise HTTPError(303, "sign in first", headers={"location": "/login"})
            raise HTTPError(401, "missing, unknown or expired token or session: sign in with the token your "
                                 "administrator gave you")
        return r

    def rating_rater(who: db.Rater = Depends(rater)) -> db.Rater:
        """Raters rate; admins do not (their judgements would count in exports and agreement unseen)."""
        if who.is_admin:
            raise HTTPError(403, "admin tokens cannot rate; to rate as well, add a rater token for yourself "
                                 "(clinalign rate add-rater)")
        return who

    def check_csrf(request: Request, sent: str | None) -> None:
        """Cookie-authenticated writes need the session's CSRF token; a Bearer header is not sent by
        browsers on their own, so API calls with one are not forgeable."""
        session = request.state.session
        if session is None:
            return
        sent = sent or request.headers.get("x-csrf-token")
        if not sent or not hmac.compare_digest(sent.encode("utf-8", "backslashreplace"), session.csrf.encode()):
            raise HTTPError(403, "form expired or forged (CSRF check failed); reload the page and try again")

    def page(request: Request, who: db.Rater | None, name: str, **ctx: Any) -> HTMLResponse:
        session = getattr(request.state, "session", None)
        csrf = session.csrf if session else ctx.pop("csrf", "")
        return HTMLResponse(render(name, who=who.name if who else None, csrf=csrf,
                                   nonce=request.scope["state"]["nonce"], max_comment=MAX_COMMENT, **ctx))

    def campaign_or_404(con: sqlite3.Connection, cid: int) -> sqlite3.Row:
        c = db.campaign(con, cid)
        if c is None:
            raise HTTPError(404, f"unknown campaign {cid}")
        return c

    def slot_or_404(con: sqlite3.Connection, who: db.Rater, c: sqlite3.Row, pos: int) -> tuple[list[db.Slot], db.Slot]:
        order = db.rater_order(con, who.id, c["id"])
        if not 1 <= pos <= len(order):
            raise HTTPError(404, f"unknown item {pos}: campaign {c['name']!r} has items 1 to {len(order)}")
        return order, order[pos - 1]

    def to_stored(c: sqlite3.Row, slot: db.Slot, score: Any, choice: Any) -> tuple[int | None, str | None]:
        """Validate a submission against the campaign kind; the on-screen A/B becomes the stored a/b."""
        if c["kind"] == "likert":
            try:
                s = int(score)
            except (TypeError, ValueError):
                raise HTTPError(422, "score: choose a score from 1 to 5") from None
            if not 1 <= s <= 5 or str(score).strip() not in {str(s), f"{s}.0"}:
                raise HTTPError(422, f"score: must be a whole number from 1 to 5, got {str(score)[:20]!r}")
            return s, None
        ch = str(choice or "").strip().lower()
        if ch not in {"a", "b", "tie", "t"}:
            raise HTTPError(422, "choice: pick A, B or tie")
        if ch in {"tie", "t"}:
            return None, "tie"
        return None, ({"a": "b", "b": "a"}[ch] if slot.swapped else ch)

    def to_display(slot: db.Slot, stored: str | None) -> str | None:
        if stored in (None, "tie"):
            return stored
        return {"a": "B", "b": "A"}[stored] if slot.swapped else stored.upper()

    def check_comment(comment: str | None) -> str:
        comment = (comment or "").strip()
        try:
            comment.encode("utf-8")
        except UnicodeEncodeError:
            raise HTTPError(422, "comment: not valid text (it holds an unpaired UTF-16 surrogate)") from None
        if len(comment) > MAX_COMMENT:
            raise HTTPError(422, f"comment: at most {MAX_COMMENT} characters (got {len(comment)})")
        return comment

    def progress(con: sqlite3.Connection, who: db.Rater) -> list[dict[str, Any]]:
        out = []
        for c in db.campaigns(con):
            done = len(db.own_ratings(con, who.id, c["id"]))
            out.append({"id": c["id"], "name": c["name"], "kind": c["kind"], "done": done, "total": c["n_items"]})
        return out

    # ---- sign-in ------------------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, con: sqlite3.Connection = Depends(get_con)) -> HTMLResponse:
        pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
        resp = page(request, None, "login", csrf=pre, error=None)
        resp.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return resp

    @app.post("/login")
    def login_post(request: Request, token: str = Form(""), csrf: str = Form(""),
                   con: sqlite3.Connection = Depends(get_con)) -> Response:
        pre = request.cookies.get(PRE_COOKIE, "")
        if not pre or not hmac.compare_digest(pre.encode(), csrf.encode("utf-8", "backslashreplace")):
            raise HTTPError(403, "sign-in form expired (CSRF check failed); reload the page and try again")
        who = db.rater_for_token(con, token.strip())
        if who is None:
            resp = page(request, None, "login", csrf=pre, error="Unknown token. Check it and try again.")
            resp.status_code = 401
            return resp
        resp = RedirectResponse("/admin" if who.is_admin else "/", status_code=303)
        # the cookie holds a random session id, never the token; Secure when the browser came over HTTPS
        # (directly, or through a reverse proxy that sends X-Forwarded-Proto, see the README)
        resp.set_cookie(COOKIE, db.create_session(con, who), httponly=True, samesite="strict",
                        max_age=db.SESSION_TTL, secure=request.url.scheme == "https")
        resp.delete_cookie(PRE_COOKIE)
        return resp

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form(""), con: sqlite3.Connection = Depends(get_con),
               who: db.Rater = Depends(rater)) -> Response:
        check_csrf(request, csrf)
        if request.state.session is not None:
            db.end_session(con, request.cookies[COOKIE])  # a replayed cookie is worth nothing afterwards
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    # ---- rating pages -------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def home(request: Request, con: sqlite3.Connection = Depends(get_con),
             who: db.Rater = Depends(rater)) -> Response:
        if who.is_admin:
            return RedirectResponse("/admin", status_code=303)
        return page(request, who, "home", campaigns=progress(con, who))

    @app.get("/c/{cid}")
    def next_item(request: Request, cid: int, after: int = 0, con: sqlite3.Connection = Depends(get_con),
                  who: db.Rater = Depends(rating_rater)) -> Response:
        c = campaign_or_404(con, cid)
        order = db.rater_order(con, who.id, cid)
        rated = db.own_ratings(con, who.id, cid)
        todo = [s for s in order if s.item_id not in rated]
        if not todo:
            return page(request, who, "done", campaign=c, total=len(order))
        # onwards from where they were, then wrap; an item whose stored data is damaged is passed over
        for s in sorted(todo, key=lambda s: (s.position <= after, s.position)):
            try:
                db.item_payload(con, s.item_id)
            except DataError as e:
                log.error("damaged data: %s", e)
                continue
            return RedirectResponse(f"/c/{cid}/{s.position}", status_code=303)
        return page(request, who, "done", campaign=c, total=len(order))

    @app.get("/c/{cid}/{pos}", response_class=HTMLResponse)
    def item_page(request: Request, cid: int, pos: int, con: sqlite3.Connection = Depends(get_con),
                  who: db.Rater = Depends(rating_rater)) -> HTMLResponse:
        c = campaign_or_404(con, cid)
        order, slot = slot_or_404(con, who, c, pos)
        rated = db.own_ratings(con, who.id, cid)
        item = db.item_payload(con, slot.item_id)
        current = rated.get(slot.item_id)
        ctx: dict[str, Any] = {"campaign": c, "pos": pos, "total": len(order), "done": len(rated),
                               "item": item, "current": current}
        if c["kind"] == "pairwise":
            left, right = (item["output_b"], item["output_a"]) if slot.swapped else (item["output_a"], item["output_b"])
            ctx.update(left=left, right=right, current_display=to_display(slot, current["choice"]) if current else None)
        return page(request, who, c["kind"], **ctx)

    @app.post("/c/{cid}/{pos}")
    def submit_form(request: Request, cid: int, pos: int, score: str | None = Form(None),
                    choice: str | None = Form(None), comment: str | None = Form(None), csrf: str = Form(""),
                    con: sqlite3.Connection = Depends(get_con), who: db.Rater = Depends(rating_rater)) -> Response:
        check_csrf(request, csrf)
        c = campaign_or_404(con, cid)
        _, slot = slot_or_404(con, who, c, pos)
        s, ch = to_stored(c, slot, score, choice)
        db.save_rating(con, who.id, slot, s, ch, check_comment(comment))
        return RedirectResponse(f"/c/{cid}?after={pos}", status_code=303)

    # ---- JSON API -----------------------------------------------------------------------------------
    @app.get("/api/campaigns")
    def api_campaigns(con: sqlite3.Connection = Depends(get_con), who: db.Rater = Depends(rater)) -> Any:
        return {"rater": who.name, "campaigns": progress(con, who)}

    @app.get("/api/c/{cid}/{pos}")
    def api_item(cid: int, pos: int, con: sqlite3.Connection = Depends(get_con),
                 who: db.Rater = Depends(rating_rater)) -> Any:
        c = campaign_or_404(con, cid)
        order, slot = slot_or_404(con, who, c, pos)
        item = db.item_payload(con, slot.item_id)
        cur = db.own_ratings(con, who.id, cid).get(slot.item_id)
        if c["kind"] == "likert":
            shown = {"source": item["source"], "output": item["output"]}
            mine = {"score": cur["score"], "comment": cur["comment"]} if cur else None
        else:
            a, b = (item["output_b"], item["output_a"]) if slot.swapped else (item["output_a"], item["output_b"])
            shown = {"prompt": item["prompt"], "A": a, "B": b}
            mine = {"choice": to_display(slot, cur["choice"]), "comment": cur["comment"]} if cur else None
        return {"campaign": cid, "kind": c["kind"], "position": pos, "total": len(order), "item": shown,
                "rating": mine}

    @app.post("/api/c/{cid}/{pos}")
    def api_submit(request: Request, cid: int, pos: int, body: RatingIn, con: sqlite3.Connection = Depends(get_con),
                   who: db.Rater = Depends(rating_rater)) -> Any:
        check_csrf(request, None)
        c = campaign_or_404(con, cid)
        _, slot = slot_or_404(con, who, c, pos)
        s, ch = to_stored(c, slot, body.score, body.choice)
        db.save_rating(con, who.id, slot, s, ch, check_comment(body.comment))
        return {"ok": True, "done": len(db.own_ratings(con, who.id, cid)), "total": c["n_items"]}

    # ---- admin --------------------------------------------------------------------------------------
    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request, con: sqlite3.Connection = Depends(get_con),
              who: db.Rater = Depends(rater)) -> HTMLResponse:
        if not who.is_admin:
            raise HTTPError(403, "the admin page needs an admin token")
        return page(request, who, "admin", campaigns=admin_summary(con))

    return app


def admin_summary(con: sqlite3.Connection) -> list[dict[str, Any]]:
    """Per campaign: each rater's progress and order seed, agreement, and unblinded per-system results."""
    raters = con.execute("SELECT id, name FROM raters WHERE is_admin = 0 ORDER BY name").fetchall()
    out = []
    for c in db.campaigns(con):
        rows = db.all_ratings(con, c["id"])
        seeds = {r[0]: r[1] for r in con.execute("SELECT rater_id, seed FROM orders WHERE campaign_id=?", (c["id"],))}
        done: dict[str, int] = defaultdict(int)
        for r in rows:
            done[r["rater"]] += 1
        entry: dict[str, Any] = {
            "name": c["name"], "kind": c["kind"], "n_items": c["n_items"],
            "raters": [{"name": r["name"], "done": done[r["name"]], "seed": seeds.get(r["id"])} for r in raters]}
        per_system: dict[str, list[float]] = defaultdict(list)
        damaged: set[int] = set()
        if c["kind"] == "likert":
            entry["agreement"], entry["shared"] = likert_alpha([(r["rater"], r["item_id"], r["score"]) for r in rows])
            entry["agreement_name"] = "Krippendorff's alpha (ordinal)"
            for r in rows:
                per_system[r["system"]].append(r["score"])
            entry["system_header"] = ["ratings", "mean score"]
            entry["systems"] = [[s, len(v), f"{sum(v) / len(v):.2f}"] for s, v in sorted(per_system.items())]
        else:
            entry["agreement"], entry["shared"] = pairwise_kappa([(r["rater"], r["item_id"], r["choice"]) for r in rows])
            entry["agreement_name"] = "Cohen's kappa (mean over rater pairs)"
            wins: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
            for r in rows:
                try:
                    p = db.parse_payload(con, r["item_id"], r["payload"], "pairwise")
                except DataError as e:
                    log.error("damaged data: %s", e)
                    damaged.add(r["item_id"])
                    continue
                for side in ("a", "b"):
                    w = wins[p[f"system_{side}"]]
                    w[0 if r["choice"] == side else 2 if r["choice"] == "tie" else 1] += 1
            entry["system_header"] = ["picked", "not picked", "tie"]
            entry["systems"] = [[s, *v] for s, v in sorted(wins.items())]
        entry["damaged"] = sorted(damaged)
        out.append(entry)
    return out
