"""Who is asking: Bearer tokens (API clients), cookie sessions (browsers), CSRF checks, sign-in and out."""

from __future__ import annotations

import hmac
import secrets
import sqlite3

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from clinalign.rate import db
from clinalign.rate.web import HTTPError, get_con, page

COOKIE = "clinalign_rate"
PRE_COOKIE = "clinalign_rate_pre"  # double-submit CSRF for the sign-in form

router = APIRouter()


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


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
    resp = page(request, None, "login", csrf=pre, error=None)
    resp.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return resp


@router.post("/login")
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


@router.post("/logout")
def logout(request: Request, csrf: str = Form(""), con: sqlite3.Connection = Depends(get_con),
           who: db.Rater = Depends(rater)) -> Response:
    check_csrf(request, csrf)
    if request.state.session is not None:
        db.end_session(con, request.cookies[COOKIE])  # a replayed cookie is worth nothing afterwards
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(COOKIE)
    return resp
