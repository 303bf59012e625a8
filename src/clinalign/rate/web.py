"""What every route of the rating app shares: the per-request connection, the 4xx type, page rendering."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException

from clinalign.rate import db
from clinalign.rate.templates import render

MAX_COMMENT = 4000  # characters


class HTTPError(HTTPException):
    """A 4xx with a message written for the person who sees it."""


def get_con(request: Request) -> Iterator[sqlite3.Connection]:
    """One connection per request to the app's database (``app.state.db_path``), closed afterwards."""
    con = db.connect(request.app.state.db_path)
    try:
        yield con
    finally:
        con.close()


def page(request: Request, who: db.Rater | None, name: str, **ctx: Any) -> HTMLResponse:
    """A server-rendered page with the response's CSP nonce and the session's CSRF token."""
    session = getattr(request.state, "session", None)
    csrf = session.csrf if session else ctx.pop("csrf", "")
    return HTMLResponse(render(name, who=who.name if who else None, csrf=csrf,
                               nonce=request.scope["state"]["nonce"], max_comment=MAX_COMMENT, **ctx))
