"""The JSON API (``Authorization: Bearer TOKEN``): the rater's campaigns, one item, one submission."""

from __future__ import annotations

import sqlite3
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from clinalign.rate import db
from clinalign.rate.auth import check_csrf, rater, rating_rater
from clinalign.rate.rating import assigned_campaign, progress, shown_pair, slot_or_404, submit, to_display
from clinalign.rate.web import get_con

router = APIRouter(prefix="/api")


class RatingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    score: StrictInt | None = None  # strict: true/false or "4" are not scores
    choice: StrictStr | None = None
    comment: StrictStr = ""


@router.get("/campaigns")
def api_campaigns(con: sqlite3.Connection = Depends(get_con), who: db.Rater = Depends(rater)) -> Any:
    return {"rater": who.name, "campaigns": progress(con, who)}


@router.get("/c/{cid}/{pos}")
def api_item(cid: int, pos: int, con: sqlite3.Connection = Depends(get_con),
             who: db.Rater = Depends(rating_rater)) -> Any:
    c = assigned_campaign(con, who, cid)
    order, slot = slot_or_404(con, who, c, pos)
    item = db.item_payload(con, slot.item_id)
    cur = db.own_ratings(con, who.id, cid).get(slot.item_id)
    if c["kind"] == "likert":
        shown = {"source": item["source"], "output": item["output"]}
        mine = {"score": cur["score"], "comment": cur["comment"]} if cur else None
    else:
        a, b = shown_pair(slot, item)
        shown = {"prompt": item["prompt"], "A": a, "B": b}
        mine = {"choice": to_display(slot, cur["choice"]), "comment": cur["comment"]} if cur else None
    return {"campaign": cid, "kind": c["kind"], "position": pos, "total": len(order), "item": shown,
            "rating": mine}


@router.post("/c/{cid}/{pos}")
def api_submit(request: Request, cid: int, pos: int, body: RatingIn, con: sqlite3.Connection = Depends(get_con),
               who: db.Rater = Depends(rating_rater)) -> Any:
    check_csrf(request, None)
    c = submit(con, who, cid, pos, body.score, body.choice, body.comment)
    return {"ok": True, "done": len(db.own_ratings(con, who.id, cid)), "total": c["n_items"]}
