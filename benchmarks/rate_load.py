"""Load test of the rating app: N concurrent raters submit ratings to a real server on loopback.

Starts ``clinalign rate serve`` on 127.0.0.1 (a free port) over a fresh database with one Likert
campaign, then R rater threads (each with its own token and httpx client) post their share of the
ratings through the JSON API as fast as the server answers. Afterwards the database must hold exactly
the number submitted, with no error responses; the p50/p95/max latency per submission is printed.
Every submission is its own fsynced SQLite transaction (synchronous=FULL), as in production.

Usage:
  python benchmarks/rate_load.py                          # 20 raters, 1,000 ratings
  python benchmarks/rate_load.py --raters 50 --ratings 5000 --json out.json
Exit code 0 only if every check passed. Loopback only; it stops by itself (--timeout).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from clinalign.rate.items import LikertItem

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test helpers that run the app
from rate_server import running_server, seed_db  # noqa: E402


def run_load(raters: int = 20, ratings: int = 1000, timeout: float = 120.0) -> dict:
    if ratings % raters:
        raise SystemExit("--ratings must be a multiple of --raters (each rater rates the same number)")
    per_rater = ratings // raters
    items = [LikertItem(id=f"rec{i}", task="discharge_summary", source=f"Synthetic note {i}. " * 40,
                        output=f"Synthetic summary {i}.", system="sft" if i % 2 else "dpo") for i in range(per_rater)]
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "load.sqlite"
        tokens = seed_db(db_path, likert=items, raters=tuple(f"rater{i:02d}" for i in range(raters)), admin=None)
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        with running_server(db_path) as (url, _log):
            deadline = time.monotonic() + timeout
            barrier = threading.Barrier(raters)

            def rater(token: str, seed: int) -> None:
                rng = np.random.default_rng(seed)
                mine, errs = [], []
                with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=30) as c:
                    barrier.wait()
                    for pos in range(1, per_rater + 1):
                        if time.monotonic() > deadline:
                            errs.append("timed out")
                            break
                        t0 = time.perf_counter()
                        try:
                            r = c.post(f"/api/c/1/{pos}", json={"score": int(rng.integers(1, 6)), "comment": ""})
                            ok = r.status_code == 200
                            if not ok:
                                errs.append(f"{r.status_code} {r.text[:100]}")
                        except httpx.HTTPError as e:
                            errs.append(f"{type(e).__name__}: {e}")
                        mine.append(time.perf_counter() - t0)
                with lock:
                    latencies.extend(mine)
                    errors.extend(errs)

            threads = [threading.Thread(target=rater, args=(t, i)) for i, t in enumerate(tokens.values())]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout + 30)
            wall = time.perf_counter() - t0
        con = sqlite3.connect(db_path)
        rows = con.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]
        per = con.execute("SELECT COUNT(*) FROM ratings GROUP BY rater_id").fetchall()
        con.close()
    lat = np.array(latencies) * 1000
    return {"raters": raters, "submitted": len(latencies), "rows": rows, "errors": len(errors),
            "first_errors": errors[:5], "rows_per_rater": sorted({p[0] for p in per}),
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "p95_ms": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
            "max_ms": round(float(lat.max()), 1) if len(lat) else None,
            "wall_s": round(wall, 2), "ratings_per_s": round(len(latencies) / wall, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raters", type=int, default=20)
    p.add_argument("--ratings", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before raters give up")
    p.add_argument("--json", type=Path, help="also write the result here")
    a = p.parse_args(argv)
    res = run_load(a.raters, a.ratings, a.timeout)
    ok = res["rows"] == a.ratings and res["errors"] == 0 and res["submitted"] == a.ratings
    res["ok"] = ok
    print(f"{res['raters']} raters, {res['submitted']} ratings in {res['wall_s']} s ({res['ratings_per_s']}/s); "
          f"rows in DB: {res['rows']}; errors: {res['errors']}; latency p50 {res['p50_ms']} ms, "
          f"p95 {res['p95_ms']} ms, max {res['max_ms']} ms -> {'OK' if ok else 'FAILED'}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
