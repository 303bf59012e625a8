"""The admin page: per campaign, who is assigned, each rater's progress and order seed, agreement,
unblinded results."""

from __future__ import annotations

import logging
import sqlite3
from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from clinalign.errors import DataError
from clinalign.rate import db
from clinalign.rate.agreement import likert_alpha, pairwise_kappa
from clinalign.rate.auth import rater
from clinalign.rate.web import HTTPError, get_con, page

log = logging.getLogger("clinalign.rate")
router = APIRouter()


@router.get("/admin", response_class=HTMLResponse)
def admin(request: Request, con: sqlite3.Connection = Depends(get_con), who: db.Rater = Depends(rater)) -> HTMLResponse:
    if not who.is_admin:
        raise HTTPError(403, "the admin page needs an admin token")
    return page(request, who, "admin", campaigns=admin_summary(con))


def admin_summary(con: sqlite3.Connection) -> list[dict[str, Any]]:
    """Per campaign: who is assigned, each rater's progress and order seed (a rater unassigned after
    rating is listed with the ratings they gave, which count), agreement, and unblinded per-system
    results."""
    raters = db.raters(con)
    out = []
    for c in db.campaigns(con):
        rows = db.all_ratings(con, c["id"])
        seeds = db.order_seeds(con, c["id"])
        assigned = db.assigned_raters(con, c["id"])
        done: dict[str, int] = defaultdict(int)
        for r in rows:
            done[r["rater"]] += 1
        entry: dict[str, Any] = {
            "id": c["id"], "name": c["name"], "kind": c["kind"], "n_items": c["n_items"],
            "raters": [{"name": r.name, "done": done[r.name], "seed": seeds.get(r.id), "assigned": r.id in assigned}
                       for r in raters if r.id in assigned or done[r.name]],
            "unassigned": [r.name for r in raters if r.id not in assigned and not done[r.name]]}
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
