"""The rater's pages: their campaigns, the next unrated item, one item to rate (form posts)."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from clinalign.errors import DataError
from clinalign.rate import db
from clinalign.rate.auth import check_csrf, rater, rating_rater
from clinalign.rate.rating import assigned_campaign, progress, shown_pair, slot_or_404, submit, to_display
from clinalign.rate.web import get_con, page

log = logging.getLogger("clinalign.rate")
router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def home(request: Request, con: sqlite3.Connection = Depends(get_con), who: db.Rater = Depends(rater)) -> Response:
    if who.is_admin:
        return RedirectResponse("/admin", status_code=303)
    return page(request, who, "home", campaigns=progress(con, who))


@router.get("/c/{cid}")
def next_item(request: Request, cid: int, after: int = 0, con: sqlite3.Connection = Depends(get_con),
              who: db.Rater = Depends(rating_rater)) -> Response:
    c = assigned_campaign(con, who, cid)
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


@router.get("/c/{cid}/{pos}", response_class=HTMLResponse)
def item_page(request: Request, cid: int, pos: int, con: sqlite3.Connection = Depends(get_con),
              who: db.Rater = Depends(rating_rater)) -> HTMLResponse:
    c = assigned_campaign(con, who, cid)
    order, slot = slot_or_404(con, who, c, pos)
    rated = db.own_ratings(con, who.id, cid)
    item = db.item_payload(con, slot.item_id)
    current = rated.get(slot.item_id)
    ctx: dict[str, Any] = {"campaign": c, "pos": pos, "total": len(order), "done": len(rated),
                           "item": item, "current": current}
    if c["kind"] == "pairwise":
        left, right = shown_pair(slot, item)
        ctx.update(left=left, right=right, current_display=to_display(slot, current["choice"]) if current else None)
    return page(request, who, c["kind"], **ctx)


@router.post("/c/{cid}/{pos}")
def submit_form(request: Request, cid: int, pos: int, score: str | None = Form(None),
                choice: str | None = Form(None), comment: str | None = Form(None), csrf: str = Form(""),
                con: sqlite3.Connection = Depends(get_con), who: db.Rater = Depends(rating_rater)) -> Response:
    check_csrf(request, csrf)
    submit(con, who, cid, pos, score, choice, comment)
    return RedirectResponse(f"/c/{cid}?after={pos}", status_code=303)
