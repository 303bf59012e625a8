"""The ratings database: SQLite in WAL mode, one connection per request, one transaction per submission.

Durability is the point: a clinician's judgement is written (and fsynced, ``synchronous=FULL``) before
the page moves on, so closing the browser loses nothing. A rater has one current rating per item
(``UNIQUE(rater_id, item_id)``); re-submitting updates it and a trigger copies the old version to
``rating_history``. Tokens are stored only as SHA-256 hashes. Each rater's item order (and which output
of a pair is shown left) comes from a seed recorded in ``orders``, so any screen can be reconstructed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinalign.errors import ConfigError
from clinalign.rate.items import Item, Kind, LikertItem, item_key

DEFAULT_RUBRIC = """\
1 - Unusable: wrong or unsafe content, or misses most key facts.
2 - Poor: major omissions or errors a clinician would have to fix.
3 - Acceptable: the key facts are there, with notable omissions, errors or clutter.
4 - Good: accurate and complete, minor issues only.
5 - Excellent: accurate, complete and concise; ready to use as written."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS raters (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token_hash TEXT NOT NULL UNIQUE,
  is_admin INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS campaigns (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL CHECK (kind IN ('likert','pairwise')),
  rubric TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS items (
  id INTEGER PRIMARY KEY, campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
  ext_id TEXT NOT NULL, system TEXT NOT NULL, task TEXT, payload TEXT NOT NULL,
  UNIQUE (campaign_id, ext_id, system));
CREATE TABLE IF NOT EXISTS orders (
  rater_id INTEGER NOT NULL REFERENCES raters(id), campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
  seed INTEGER NOT NULL, PRIMARY KEY (rater_id, campaign_id));
CREATE TABLE IF NOT EXISTS ratings (
  id INTEGER PRIMARY KEY, rater_id INTEGER NOT NULL REFERENCES raters(id),
  item_id INTEGER NOT NULL REFERENCES items(id),
  score INTEGER CHECK (score BETWEEN 1 AND 5), choice TEXT CHECK (choice IN ('a','b','tie')),
  comment TEXT NOT NULL DEFAULT '', swapped INTEGER NOT NULL DEFAULT 0,
  created_at REAL NOT NULL, updated_at REAL NOT NULL, UNIQUE (rater_id, item_id));
CREATE TABLE IF NOT EXISTS rating_history (
  id INTEGER PRIMARY KEY, rating_id INTEGER NOT NULL, rater_id INTEGER NOT NULL, item_id INTEGER NOT NULL,
  score INTEGER, choice TEXT, comment TEXT NOT NULL, swapped INTEGER NOT NULL, rated_at REAL NOT NULL,
  replaced_at REAL NOT NULL);
CREATE TRIGGER IF NOT EXISTS ratings_keep_history AFTER UPDATE ON ratings BEGIN
  INSERT INTO rating_history (rating_id, rater_id, item_id, score, choice, comment, swapped, rated_at,
                              replaced_at)
  VALUES (OLD.id, OLD.rater_id, OLD.item_id, OLD.score, OLD.choice, OLD.comment, OLD.swapped,
          OLD.updated_at, NEW.updated_at);
END;
"""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# Writers in this process queue on a lock: SQLite's own busy handler retries with sleeps, which turns
# contention into long tail latencies. Other processes (the CLI) still meet the 30 s busy timeout.
_WRITE_LOCK = threading.Lock()


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection that waits for writers instead of failing with 'database is locked' (WAL is set once,
    by init_db, and persists in the file)."""
    con = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA synchronous=FULL")
    con.execute("PRAGMA foreign_keys=ON")
    return con


@contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front so concurrent writers queue, not deadlock."""
    with _WRITE_LOCK:
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")


def init_db(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) a ratings database; the CSRF secret is made once and kept."""
    con = connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(SCHEMA)
    with transaction(con):
        con.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('secret', ?)", (secrets.token_hex(32),))
    return con


def open_db(path: str | Path) -> sqlite3.Connection:
    """Open an existing ratings database (serve/export must not invent an empty one from a typo)."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no ratings database (create one with `clinalign rate create-campaign`)")
    try:
        return init_db(path)
    except sqlite3.DatabaseError as e:
        raise ConfigError(f"{path}: not a ratings database ({e})") from e


def secret(con: sqlite3.Connection) -> str:
    return con.execute("SELECT value FROM meta WHERE key='secret'").fetchone()[0]


def add_rater(con: sqlite3.Connection, name: str, admin: bool = False) -> str:
    """Create a rater (or admin) and return their token; only its hash is stored, so it is shown once."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ConfigError("rater name must be 1-100 characters")
    token = secrets.token_urlsafe(24)
    try:
        with transaction(con):
            con.execute("INSERT INTO raters (name, token_hash, is_admin, created_at) VALUES (?, ?, ?, ?)",
                        (name, hash_token(token), int(admin), time.time()))
    except sqlite3.IntegrityError as e:
        raise ConfigError(f"a rater named {name!r} already exists") from e
    return token


@dataclass(frozen=True)
class Rater:
    id: int
    name: str
    is_admin: bool
    token_hash: str


def rater_for_token(con: sqlite3.Connection, token: str | None) -> Rater | None:
    if not token or len(token) > 200:
        return None
    row = con.execute("SELECT id, name, is_admin, token_hash FROM raters WHERE token_hash = ?",
                      (hash_token(token),)).fetchone()
    return Rater(row["id"], row["name"], bool(row["is_admin"]), row["token_hash"]) if row else None


def csrf_token(con: sqlite3.Connection, rater: Rater) -> str:
    """Per-rater CSRF token: an HMAC of the token hash, so no server-side session is needed."""
    return hmac.new(secret(con).encode(), f"csrf:{rater.token_hash}".encode(), "sha256").hexdigest()


def create_campaign(con: sqlite3.Connection, name: str, kind: Kind, items: list[Item],
                    rubric: str | None = None) -> int:
    """Store a campaign and its items in one transaction; returns its id."""
    if not items:
        raise ConfigError(f"campaign {name!r}: no items")
    wrong = [i.id for i in items if isinstance(i, LikertItem) != (kind == "likert")]
    if wrong:
        raise ConfigError(f"campaign {name!r} is {kind} but item {wrong[0]!r} is not")
    try:
        with transaction(con):
            cid = con.execute("INSERT INTO campaigns (name, kind, rubric, created_at) VALUES (?, ?, ?, ?)",
                              (name, kind, rubric or DEFAULT_RUBRIC, time.time())).lastrowid
            con.executemany(
                "INSERT INTO items (campaign_id, ext_id, system, task, payload) VALUES (?, ?, ?, ?, ?)",
                [(cid, *item_key(i), i.task, i.model_dump_json()) for i in items])
    except sqlite3.IntegrityError as e:
        raise ConfigError(f"a campaign named {name!r} already exists") from e
    assert cid is not None
    return cid


def campaigns(con: sqlite3.Connection) -> list[sqlite3.Row]:
    return con.execute("SELECT c.id, c.name, c.kind, c.rubric, COUNT(i.id) AS n_items FROM campaigns c "
                       "JOIN items i ON i.campaign_id = c.id GROUP BY c.id ORDER BY c.id").fetchall()


def campaign(con: sqlite3.Connection, cid: int) -> sqlite3.Row | None:
    return next((c for c in campaigns(con) if c["id"] == cid), None)


@dataclass(frozen=True)
class Slot:
    """One item as one rater sees it: its place in their order and whether A/B are swapped."""
    position: int  # 1-based
    item_id: int
    swapped: bool


def rater_order(con: sqlite3.Connection, rater_id: int, cid: int) -> list[Slot]:
    """The rater's blinded order for a campaign, drawn once from a recorded seed (reproducible)."""
    row = con.execute("SELECT seed FROM orders WHERE rater_id=? AND campaign_id=?", (rater_id, cid)).fetchone()
    if row is None:
        with transaction(con):
            con.execute("INSERT OR IGNORE INTO orders (rater_id, campaign_id, seed) VALUES (?, ?, ?)",
                        (rater_id, cid, secrets.randbelow(2**31)))
        row = con.execute("SELECT seed FROM orders WHERE rater_id=? AND campaign_id=?",
                          (rater_id, cid)).fetchone()
    ids = [r[0] for r in con.execute("SELECT id FROM items WHERE campaign_id=? ORDER BY id", (cid,))]
    rng = random.Random(row["seed"])
    rng.shuffle(ids)
    return [Slot(n + 1, iid, rng.random() < 0.5) for n, iid in enumerate(ids)]


def item_payload(con: sqlite3.Connection, item_id: int) -> dict[str, Any]:
    return json.loads(con.execute("SELECT payload FROM items WHERE id=?", (item_id,)).fetchone()[0])


def own_ratings(con: sqlite3.Connection, rater_id: int, cid: int) -> dict[int, sqlite3.Row]:
    """item id -> this rater's current rating in a campaign (never anyone else's)."""
    rows = con.execute("SELECT r.* FROM ratings r JOIN items i ON i.id = r.item_id "
                       "WHERE r.rater_id=? AND i.campaign_id=?", (rater_id, cid)).fetchall()
    return {r["item_id"]: r for r in rows}


def save_rating(con: sqlite3.Connection, rater_id: int, slot: Slot, score: int | None, choice: str | None,
                comment: str) -> None:
    """Insert or update the rater's rating of one item in one transaction (the trigger keeps history)."""
    now = time.time()
    with transaction(con):
        con.execute(
            "INSERT INTO ratings (rater_id, item_id, score, choice, comment, swapped, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rater_id, item_id) DO UPDATE SET "
            "score=excluded.score, choice=excluded.choice, comment=excluded.comment, "
            "swapped=excluded.swapped, updated_at=excluded.updated_at",
            (rater_id, slot.item_id, score, choice, comment, int(slot.swapped), now, now))


def all_ratings(con: sqlite3.Connection, cid: int | None = None) -> list[sqlite3.Row]:
    """Every current rating with its item and rater (for admin statistics and exports)."""
    sql = ("SELECT r.score, r.choice, r.comment, r.updated_at, r.item_id, ra.name AS rater, i.ext_id, i.system, "
           "i.task, i.payload, c.name AS campaign, c.kind, c.id AS campaign_id FROM ratings r "
           "JOIN raters ra ON ra.id = r.rater_id JOIN items i ON i.id = r.item_id "
           "JOIN campaigns c ON c.id = i.campaign_id")
    if cid is not None:
        return con.execute(sql + " WHERE c.id = ? ORDER BY r.item_id, ra.name", (cid,)).fetchall()
    return con.execute(sql + " ORDER BY c.id, r.item_id, ra.name").fetchall()
