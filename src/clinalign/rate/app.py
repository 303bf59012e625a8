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

This module holds what wraps every request (the guard middleware, the error pages); the routes live by
concern: auth.py (who is asking, sign-in), pages.py (rating pages), api.py (JSON API), admin.py; the
rules they share in rating.py and web.py; all SQL in db.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from pathlib import Path

import h11
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from clinalign.errors import DataError
from clinalign.rate import admin, api, auth, db, pages
from clinalign.rate.templates import render
from clinalign.rate.web import HTTPError

MAX_BODY = 64 * 1024  # bytes; a score and a comment fit many times over
log = logging.getLogger("clinalign.rate")


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
BODY_TIMEOUT = 30.0  # seconds for a whole request body: a client trickling bytes does not hold a worker


def _host_name(header: bytes | None) -> str:
    """The name in a Host header, without the port (``[::1]:8000`` -> ``::1``)."""
    host = (header or b"").decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def security_headers(nonce: str | None) -> list[tuple[bytes, bytes]]:
    """The headers every response carries: no third-party anything, inline script only with the page's
    nonce (none at all without one), no framing, no sniffing, no referrer, no caching of PHI."""
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    return [(b"content-security-policy",
             f"default-src 'none'; script-src {script}; style-src 'unsafe-inline'; img-src 'self' data:; "
             f"form-action 'self'; frame-ancestors 'none'; base-uri 'none'".encode()),
            (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"), (b"cache-control", b"no-store")]


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 server, whose own reply to a request it cannot parse (a malformed request line
    or header, ``Content-Length: abc``, an unfinished header block over the size limit) carries the
    security headers too: that reply is sent before any app code runs, so the middleware never sees it."""

    def send_400_response(self, msg: str) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close"),
                   *security_headers(None)]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=msg.encode("ascii")), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


class GuardMiddleware:
    """Every response gets the security headers with a CSP nonce, the early replies here and the
    last-resort 500 included (``_GuardedApp`` puts this outside everything). Before the app
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
                msg = {**msg, "headers": [*msg.get("headers", []), *security_headers(nonce)]}
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


class _GuardedApp(FastAPI):
    """FastAPI with the guard outside everything, Starlette's last-resort 500 handler included (a
    middleware added the usual way sits inside that handler, whose reply would miss the headers)."""

    def build_middleware_stack(self) -> ASGIApp:
        return GuardMiddleware(super().build_middleware_stack(), allowed_hosts=self.state.allowed_hosts)


def create_app(db_path: str | Path, allowed_hosts: list[str] | tuple[str, ...] = ()) -> FastAPI:
    """The app for one ratings database (which must exist: campaigns are created from the CLI).

    ``allowed_hosts``: Host header names to answer besides the loopback names (a reverse proxy's name)."""
    db.open_db(db_path).close()
    app = _GuardedApp(title="clinalign rate", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.db_path = db_path
    app.state.allowed_hosts = (*LOOPBACK_HOSTS, *allowed_hosts)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DataError, _damaged)
    app.add_exception_handler(Exception, _unexpected)
    for module in (auth, pages, api, admin):
        app.include_router(module.router)
    return app


# ---- errors: always a clear 4xx, as a page or as JSON -----------------------------------------------
def _error(request: Request, status: int, message: str) -> Response:
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate echoed back
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    titles = {400: "Bad request", 401: "Sign-in needed", 403: "Forbidden", 404: "Not found",
              408: "Too slow", 413: "Too large", 422: "Invalid input", 500: "Damaged data"}
    html = render("error", status=status, title=titles.get(status, "Error"), message=message,
                  nonce=request.scope["state"]["nonce"])
    return HTMLResponse(html, status_code=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 303 and exc.headers:
        return RedirectResponse(exc.headers["location"], status_code=303)
    message = exc.detail if isinstance(exc.detail, str) else "request not understood"
    if exc.status_code == 405:
        message = f"{request.method} is not allowed here"
    return _error(request, exc.status_code, message)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return _error(request, 422, _json_body_error(first, exc.body))
    parts = []
    for e in exc.errors()[:5]:  # the field and what is wrong, never the submitted text
        field = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "path", "query", "form"))[:60]
        parts.append(f"{field or 'body'}: {e.get('msg', 'invalid')}")
    return _error(request, 422, "; ".join(parts))


def _json_body_error(err: dict, doc: object) -> str:
    """What the JSON parser said and where (line and column, as an editor shows them), never the text."""
    pos = err["loc"][-1] if isinstance(err.get("loc", [None])[-1], int) else 0
    text = doc.decode("utf-8", "replace") if isinstance(doc, bytes) else doc if isinstance(doc, str) else ""
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    return f"request body is not valid JSON: {err.get('ctx', {}).get('error', 'cannot be parsed')} at line {line} column {column}"


async def _damaged(request: Request, exc: Exception) -> Response:
    log.error("damaged data: %s", exc)  # names the database row, never its text
    return _error(request, 500, "this item cannot be shown: its stored data is damaged. Tell the study "
                                "administrator (the server log names the row); the other items can still be rated")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return _error(request, 500, "internal error; the administrator can find it in the server log")
