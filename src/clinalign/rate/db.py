"""The ratings database: SQLite in WAL mode, one connection per request, one transaction per submission.

Durability is the point: a clinician's judgement is written (and fsynced, ``synchronous=FULL``) before
the page moves on, so closing the browser loses nothing. A rater has one current rating per item
(``UNIQUE(rater_id, item_id)``); re-submitting updates it and a trigger copies the old version to
``rating_history``. Tokens are stored only as SHA-256 hashes; a browser sign-in is a row in
``sessions`` (the hash of a random id, its own CSRF token, an expiry), deleted at sign-out or revocation. Each rater's item order (and which output
of a pair is shown left) comes from a seed recorded in ``orders``, so any screen can be reconstructed.

A rater sees and rates only the campaigns an admin assigned them to (``assignments``); a new rater has
none until assigned, and unassigning stops further rating but keeps the ratings already given. A
database from before assignments existed gets every rater assigned to every campaign when it is first
opened, so nobody loses access to what they could rate.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clinalign.errors import ConfigError, DataError
from clinalign.rate.items import Item, Kind, LikertItem, PairwiseItem, item_key
from clinalign.tasks.discharge_summary.scoring import RUBRIC

#: a Likert campaign created without a rubric of its own shows the study's: one scale for clinicians and
#: the rubric scorer, so their scores can sit side by side in the report
DEFAULT_RUBRIC = RUBRIC

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
CREATE TABLE IF NOT EXISTS sessions (
  id_hash TEXT PRIMARY KEY, rater_id INTEGER NOT NULL REFERENCES raters(id), csrf TEXT NOT NULL,
  created_at REAL NOT NULL, expires_at REAL NOT NULL);
"""
ASSIGNMENTS = """
CREATE TABLE assignments (
  rater_id INTEGER NOT NULL REFERENCES raters(id), campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
  assigned_at REAL NOT NULL, PRIMARY KEY (rater_id, campaign_id));
"""
SESSION_TTL = 12 * 3600  # seconds; a sign-in lasts a working day, then the token is asked for again
_TABLES = {"meta", "raters", "campaigns", "items", "ratings"}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()  # any text a client sends


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
    """Open a ratings database, creating it when no file is there yet (an existing file must already be
    one: an empty or foreign file is never turned into a database)."""
    path = Path(path)
    if path.exists():
        return open_db(path)
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: folder {path.parent} does not exist; create it first")
    return _setup(path)


def open_db(path: str | Path) -> sqlite3.Connection:
    """Open an existing ratings database (serve/export must not invent an empty one from a typo, nor turn
    an empty or foreign file into one)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a ratings database")
    if not path.is_file():
        raise ConfigError(f"{path}: no ratings database (create one with `clinalign rate create-campaign`)")
    if path.stat().st_size == 0:
        raise ConfigError(f"{path}: empty file, not a ratings database")
    try:
        con = connect(path)
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        raise ConfigError(f"{path}: not a ratings database ({e})") from None
    con.close()
    if not _TABLES <= tables:
        raise ConfigError(f"{path}: not a ratings database (no {', '.join(sorted(_TABLES - tables))} table)")
    return _setup(path)  # adds what newer versions use (the sessions table) to an older database


def _setup(path: Path) -> sqlite3.Connection:
    """WAL mode and the schema (idempotent: an older database gets the tables added since)."""
    try:
        con = connect(path)
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(SCHEMA)
        _add_assignments(con)
    except sqlite3.DatabaseError as e:  # read-only file or folder, a full disk
        raise ConfigError(f"{path}: cannot open the ratings database for writing ({e})") from None
    return con


def _add_assignments(con: sqlite3.Connection) -> None:
    """The assignments table, in the transaction that fills it: in a database made before it existed,
    every rater is assigned every campaign (what they could rate then), so nothing is lost; in a new
    database there is no one to assign yet."""
    with transaction(con):
        if con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='assignments'").fetchone():
            return
        con.execute(ASSIGNMENTS)
        con.execute("INSERT INTO assignments (rater_id, campaign_id, assigned_at) SELECT r.id, c.id, ? "
                    "FROM raters r, campaigns c WHERE r.is_admin = 0", (time.time(),))


def add_rater(con: sqlite3.Connection, name: str, admin: bool = False, campaigns: Sequence[str] = ()) -> str:
    """Create a rater (or admin) and return their token; only its hash is stored, so it is shown once.
    ``campaigns`` (names) are assigned in the same transaction: an unknown one creates nobody."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ConfigError("rater name must be 1-100 characters")
    if admin and campaigns:
        raise ConfigError("admins do not rate, so they are not assigned campaigns")
    token = secrets.token_urlsafe(24)
    try:
        with transaction(con):
            rid = con.execute("INSERT INTO raters (name, token_hash, is_admin, created_at) VALUES (?, ?, ?, ?)",
                              (name, hash_token(token), int(admin), time.time())).lastrowid
            for cid in [_campaign_id(con, c) for c in campaigns]:
                con.execute("INSERT OR IGNORE INTO assignments (rater_id, campaign_id, assigned_at) VALUES (?, ?, ?)",
                            (rid, cid, time.time()))
    except sqlite3.IntegrityError as e:
        raise ConfigError(f"a rater named {name!r} already exists") from e
    return token


def _campaign_id(con: sqlite3.Connection, name: str) -> int:
    """A campaign by its name (or, failing that, by its number, as the admin page shows both)."""
    row = con.execute("SELECT id FROM campaigns WHERE name = ?", (name,)).fetchone()
    if row is None and name.isdigit():
        row = con.execute("SELECT id FROM campaigns WHERE id = ?", (int(name),)).fetchone()
    if row is None:
        names = [r[0] for r in con.execute("SELECT name FROM campaigns ORDER BY id")]
        raise ConfigError(f"no campaign named {name!r} (campaigns: {', '.join(map(repr, names)) or 'none yet'})")
    return row[0]


def _rater_ids(con: sqlite3.Connection, names: Sequence[str]) -> list[int]:
    """Raters who rate, by name; an unknown name or an admin is a ConfigError naming it."""
    ids = []
    for name in names:
        row = con.execute("SELECT id, is_admin FROM raters WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ConfigError(f"no rater named {name!r} (add one with `clinalign rate add-rater`)")
        if row["is_admin"]:
            raise ConfigError(f"{name!r} is an admin; admins do not rate, so they are not assigned campaigns")
        ids.append(row["id"])
    return ids


def assign(con: sqlite3.Connection, campaign_name: str, names: Sequence[str]) -> int:
    """Let raters see and rate a campaign; returns how many were not assigned to it before."""
    with transaction(con):
        cid, ids = _campaign_id(con, campaign_name), _rater_ids(con, names)
        return sum(con.execute("INSERT OR IGNORE INTO assignments (rater_id, campaign_id, assigned_at) "
                               "VALUES (?, ?, ?)", (rid, cid, time.time())).rowcount for rid in ids)


def unassign(con: sqlite3.Connection, campaign_name: str, names: Sequence[str]) -> int:
    """Stop raters seeing a campaign; the ratings they gave stay (and are exported). Returns how many
    were assigned."""
    with transaction(con):
        cid, ids = _campaign_id(con, campaign_name), _rater_ids(con, names)
        return sum(con.execute("DELETE FROM assignments WHERE rater_id = ? AND campaign_id = ?",
                               (rid, cid)).rowcount for rid in ids)


def is_assigned(con: sqlite3.Connection, rater_id: int, cid: int) -> bool:
    return con.execute("SELECT 1 FROM assignments WHERE rater_id = ? AND campaign_id = ?",
                       (rater_id, cid)).fetchone() is not None


def assigned_raters(con: sqlite3.Connection, cid: int) -> set[int]:
    return {r[0] for r in con.execute("SELECT rater_id FROM assignments WHERE campaign_id = ?", (cid,))}


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


def raters(con: sqlite3.Connection) -> list[Rater]:
    """Every rater who rates (admins left out), by name."""
    rows = con.execute("SELECT id, name, is_admin, token_hash FROM raters WHERE is_admin = 0 ORDER BY name")
    return [Rater(r["id"], r["name"], bool(r["is_admin"]), r["token_hash"]) for r in rows]


def revoke_rater(con: sqlite3.Connection, name: str) -> int:
    """Make a rater's token useless and end their sessions; their ratings stay. Returns sessions ended."""
    with transaction(con):
        row = con.execute("SELECT id FROM raters WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ConfigError(f"no rater named {name!r}")
        # token_hash is NOT NULL UNIQUE: a value no SHA-256 hex digest can equal
        con.execute("UPDATE raters SET token_hash = ? WHERE id = ?", (f"revoked:{secrets.token_hex(16)}", row[0]))
        return con.execute("DELETE FROM sessions WHERE rater_id = ?", (row[0],)).rowcount


@dataclass(frozen=True)
class Session:
    rater: Rater
    csrf: str  # random per session: a new sign-in gets a new one, a logout kills it with the session


def create_session(con: sqlite3.Connection, rater: Rater) -> str:
    """A server-side session for a cookie sign-in; returns its random id (only its hash is stored)."""
    sid, now = secrets.token_urlsafe(32), time.time()
    with transaction(con):
        con.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
        con.execute("INSERT INTO sessions (id_hash, rater_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                    (hash_token(sid), rater.id, secrets.token_urlsafe(32), now, now + SESSION_TTL))
    return sid


def session_for_id(con: sqlite3.Connection, sid: str | None) -> Session | None:
    if not sid or len(sid) > 200:
        return None
    row = con.execute("SELECT r.id, r.name, r.is_admin, r.token_hash, s.csrf FROM sessions s "
                      "JOIN raters r ON r.id = s.rater_id WHERE s.id_hash = ? AND s.expires_at > ?",
                      (hash_token(sid), time.time())).fetchone()
    if row is None:
        return None
    return Session(Rater(row["id"], row["name"], bool(row["is_admin"]), row["token_hash"]), row["csrf"])


def end_session(con: sqlite3.Connection, sid: str) -> None:
    with transaction(con):
        con.execute("DELETE FROM sessions WHERE id_hash = ?", (hash_token(sid),))


def create_campaign(con: sqlite3.Connection, name: str, kind: Kind, items: list[Item],
                    rubric: str | None = None, raters: Sequence[str] = ()) -> int:
    """Store a campaign and its items, and assign ``raters`` (names) to it, in one transaction; returns
    its id. Nobody else sees it until assigned."""
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
            con.executemany("INSERT OR IGNORE INTO assignments (rater_id, campaign_id, assigned_at) VALUES (?, ?, ?)",
                            [(rid, cid, time.time()) for rid in _rater_ids(con, raters)])
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


def order_seeds(con: sqlite3.Connection, cid: int) -> dict[int, int]:
    """rater id -> the seed of their order in a campaign (raters who have not started have none)."""
    return {r[0]: r[1] for r in con.execute("SELECT rater_id, seed FROM orders WHERE campaign_id=?", (cid,))}


def db_file(con: sqlite3.Connection) -> str:
    return con.execute("PRAGMA database_list").fetchone()["file"]


def parse_payload(con: sqlite3.Connection, item_id: int, raw: Any, kind: str) -> dict[str, Any]:
    """An item's stored payload checked against its campaign's kind. A row damaged by hand or by another
    tool is a DataError naming the database and row (never its text), so one bad row stops nothing else."""
    where = f"{db_file(con)}: items row {item_id}: payload"
    try:
        obj = json.loads(raw)
    except (TypeError, ValueError):
        raise DataError([f"{where}: not JSON"]) from None
    if not isinstance(obj, dict):
        raise DataError([f"{where}: expected a JSON object, got {type(obj).__name__}"])
    try:
        return (LikertItem if kind == "likert" else PairwiseItem).model_validate(obj).model_dump()
    except ValidationError as e:
        err = e.errors()[0]
        raise DataError([f"{where}: {'.'.join(map(str, err['loc'])) or 'record'}: {err['msg'].lower()}"]) from None


def item_payload(con: sqlite3.Connection, item_id: int) -> dict[str, Any]:
    row = con.execute("SELECT i.payload, c.kind FROM items i JOIN campaigns c ON c.id = i.campaign_id "
                      "WHERE i.id=?", (item_id,)).fetchone()
    return parse_payload(con, item_id, row["payload"], row["kind"])


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
    """Every current rating by a (non-admin) rater with its item (for admin statistics and exports).

    Admin tokens cannot rate; rows an admin left before that rule (older versions) count nowhere."""
    sql = ("SELECT r.id AS rating_id, r.score, r.choice, r.comment, r.updated_at, r.item_id, ra.name AS rater, "
           "i.ext_id, i.system, i.task, i.payload, c.name AS campaign, c.kind, c.id AS campaign_id FROM ratings r "
           "JOIN raters ra ON ra.id = r.rater_id JOIN items i ON i.id = r.item_id "
           "JOIN campaigns c ON c.id = i.campaign_id WHERE ra.is_admin = 0")
    if cid is not None:
        return con.execute(sql + " AND c.id = ? ORDER BY r.item_id, ra.name", (cid,)).fetchall()
    return con.execute(sql + " ORDER BY c.id, r.item_id, ra.name").fetchall()
