"""Run the rating app in a child process on loopback, for the load test and the browser tests; and a
seeded ratings database. Test code: the benchmarks put this folder on sys.path to use it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_READY = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@contextmanager
def running_server(db_path: str | Path, timeout: float = 30.0) -> Iterator[tuple[str, list[str]]]:
    """Start ``clinalign rate serve`` on 127.0.0.1 with a free port; yield (base URL, its log lines).

    The child is always stopped on exit; its log is drained by a thread so a chatty server never blocks.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "clinalign.cli", "rate", "serve", "--db", str(db_path), "--host", "127.0.0.1",
         "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    port: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            m = _READY.search(line)
            if m:
                port.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if time.monotonic() > deadline:
                raise RuntimeError("rate server did not start in time:\n" + "\n".join(lines[-20:]))
        if not port:
            raise RuntimeError("rate server exited:\n" + "\n".join(lines[-20:]))
        yield f"http://127.0.0.1:{port[0]}", lines
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def seed_db(db_path: str | Path, likert: list | None = None, pairwise: list | None = None,
            raters: tuple[str, ...] = ("alice", "bob"), admin: str | None = "admin") -> dict[str, str]:
    """A ratings database with a Likert and/or a pairwise campaign and some raters, each assigned to every
    campaign; returns name -> token."""
    from clinalign.rate import db

    con = db.init_db(db_path)
    if likert:
        db.create_campaign(con, "Discharge summaries", "likert", likert)
    if pairwise:
        db.create_campaign(con, "Which answer is better", "pairwise", pairwise)
    tokens = {name: db.add_rater(con, name, campaigns=[c["name"] for c in db.campaigns(con)]) for name in raters}
    if admin:
        tokens[admin] = db.add_rater(con, admin, admin=True)
    con.close()
    return tokens
