"""The rules a rating follows, shared by the pages and the JSON API: which campaign and item a URL
names, what a valid submission is, and how the on-screen A/B maps to the stored output."""

from __future__ import annotations

import sqlite3
from typing import Any

from clinalign.rate import db
from clinalign.rate.web import MAX_COMMENT, HTTPError


def assigned_campaign(con: sqlite3.Connection, who: db.Rater, cid: int) -> sqlite3.Row:
    """The campaign a URL names, if this rater is assigned to it: 404 when there is none, 403 when it is
    someone else's (a rater reaches only their own campaigns, whatever number they type)."""
    c = db.campaign(con, cid)
    if c is None:
        raise HTTPError(404, f"unknown campaign {cid}")
    if not db.is_assigned(con, who.id, cid):
        raise HTTPError(403, f"you are not assigned to campaign {cid}; ask the study administrator")
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


def shown_pair(slot: db.Slot, item: dict[str, Any]) -> tuple[str, str]:
    """The two outputs of a pairwise item as this rater sees them: (left / A, right / B)."""
    return (item["output_b"], item["output_a"]) if slot.swapped else (item["output_a"], item["output_b"])


def check_comment(comment: str | None) -> str:
    comment = (comment or "").strip()
    try:
        comment.encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPError(422, "comment: not valid text (it holds an unpaired UTF-16 surrogate)") from None
    if len(comment) > MAX_COMMENT:
        raise HTTPError(422, f"comment: at most {MAX_COMMENT} characters (got {len(comment)})")
    return comment


def submit(con: sqlite3.Connection, who: db.Rater, cid: int, pos: int, score: Any, choice: Any,
           comment: str | None) -> sqlite3.Row:
    """Validate and store one rating (form or API alike); returns the campaign."""
    c = assigned_campaign(con, who, cid)
    _, slot = slot_or_404(con, who, c, pos)
    s, ch = to_stored(c, slot, score, choice)
    db.save_rating(con, who.id, slot, s, ch, check_comment(comment))
    return c


def progress(con: sqlite3.Connection, who: db.Rater) -> list[dict[str, Any]]:
    """The rater's own progress in each campaign they are assigned to."""
    out = []
    for c in db.campaigns(con):
        if not db.is_assigned(con, who.id, c["id"]):
            continue
        done = len(db.own_ratings(con, who.id, c["id"]))
        out.append({"id": c["id"], "name": c["name"], "kind": c["kind"], "done": done, "total": c["n_items"]})
    return out
