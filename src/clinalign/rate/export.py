"""Exports: clinician Likert scores as CSV for the study report, pairwise picks as DPO pairs.

The pairs file is exactly what ``clinalign train dpo --data`` reads: one ``{"prompt", "chosen",
"rejected"}`` row per item with a clear majority (plus ``id``, systems and vote counts for tracing, which
the trainer ignores). An item yields a pair only when more raters picked one output than picked the other
or "tie": individual ties carry no preference, and a split vote is not one either. An export with nothing
to write (nobody has rated, or no majority yet) writes no file and says why (``NothingToExport``, exit 1).
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from clinalign.data.io import write_jsonl, write_text_atomic
from clinalign.errors import ClinalignError, DataError


class NothingToExport(ClinalignError):
    """An export that would write an empty file: it is not written. Exit code 1, not 2: the command was
    right, the raters have not (yet) given what it asks for; a script stops before training on nothing.
    ``paths``: the files left out (none named when nobody has rated at all)."""

    exit_code = 1

    def __init__(self, reason: str, paths: tuple[str, ...] = ()):
        self.reason, self.paths = reason, paths
        super().__init__(f"{', '.join(paths)}: not written: {reason}" if paths else reason)


def _nothing(con: sqlite3.Connection, path: str | Path, kind: str, what: str) -> NothingToExport:
    """Why ``path`` would be empty, in one line: nobody has rated, no rating of this kind, or (pairs) no
    item with a majority pick."""
    from clinalign.rate.db import all_ratings, db_file

    rows = all_ratings(con)
    if not rows:
        return NothingToExport(f"nobody has rated in {db_file(con)} yet, so there is nothing to export and no "
                               f"file was written (raters need a token and a campaign: `clinalign rate add-rater "
                               f"NAME --campaign CAMPAIGN`, then `clinalign rate serve`)")
    mine = [r for r in rows if r["kind"] == kind]
    if not mine:
        return NothingToExport(f"no {kind} ratings in {db_file(con)} (its {len(rows)} rating(s) are of the other "
                               "kind)", (str(path),))
    items = len({r["item_id"] for r in mine})
    return NothingToExport(f"{what} ({len(mine)} rating(s) of {items} item(s))", (str(path),))


LIKERT_COLUMNS = ["item_id", "system", "rater", "score", "comment", "task", "campaign", "updated_at"]
_FORMULA = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula (OWASP CSV injection)


def safe_cell(value: str) -> str:
    """A text cell a spreadsheet shows as text: NUL bytes dropped, and a quote put before a value that
    starts like a formula (OWASP's advice). Values already starting with quotes before such a character
    get one more, so ``plain_cell`` gives back exactly the original."""
    value = value.replace("\x00", "")
    return "'" + value if value.lstrip("'").startswith(_FORMULA) else value


def plain_cell(value: str) -> str:
    """The inverse of ``safe_cell`` (NULs aside), for reading our own CSV back."""
    return value[1:] if value.startswith("'") and value.lstrip("'").startswith(_FORMULA) else value


def likert_rows(con: sqlite3.Connection) -> list[dict[str, Any]]:
    from clinalign.rate.db import all_ratings, db_file

    rows = []
    for r in all_ratings(con):
        if r["kind"] != "likert" or r["score"] is None:
            continue
        if not isinstance(r["updated_at"], int | float):
            raise DataError([f"{db_file(con)}: ratings row {r['rating_id']}: updated_at: expected a number "
                             f"(seconds since 1970), got {type(r['updated_at']).__name__}"])
        text = {"item_id": r["ext_id"], "system": r["system"], "rater": r["rater"], "comment": r["comment"],
                "task": r["task"] or "", "campaign": r["campaign"]}
        rows.append({**{k: safe_cell(str(v)) for k, v in text.items()}, "score": r["score"],
                     "updated_at": f"{r['updated_at']:.3f}"})
    return rows


def export_likert_csv(con: sqlite3.Connection, path: str | Path) -> int:
    """Write every current Likert rating, one row per (item, rater); returns the row count.

    Text cells go through ``safe_cell``: a comment such as ``=HYPERLINK(...)`` must not run when a
    coordinator opens the file in a spreadsheet."""
    rows = likert_rows(con)
    if not rows:
        raise _nothing(con, path, "likert", "no Likert score")
    buf = io.StringIO(newline="")
    # every cell quoted: with minimal quoting a bare CR in a comment is not quoted and splits the row
    w = csv.DictWriter(buf, fieldnames=LIKERT_COLUMNS, lineterminator="\n", quoting=csv.QUOTE_ALL)
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())
    return len(rows)


def majority_pairs(con: sqlite3.Connection) -> list[dict[str, Any]]:
    """One DPO pair per pairwise item whose raters' plurality is strictly output A or strictly output B."""
    from clinalign.rate.db import all_ratings, parse_payload

    votes: dict[int, Counter[str]] = defaultdict(Counter)
    payloads: dict[int, dict[str, Any]] = {}
    for r in all_ratings(con):
        if r["kind"] == "pairwise" and r["choice"]:
            votes[r["item_id"]][r["choice"]] += 1
            if r["item_id"] not in payloads:
                payloads[r["item_id"]] = parse_payload(con, r["item_id"], r["payload"], "pairwise")
    pairs = []
    for item_id, v in votes.items():
        a, b, tie = v["a"], v["b"], v["tie"]
        if a > max(b, tie):
            win, lose = "a", "b"
        elif b > max(a, tie):
            win, lose = "b", "a"
        else:
            continue
        p = payloads[item_id]
        pairs.append({"prompt": p["prompt"], "chosen": p[f"output_{win}"], "rejected": p[f"output_{lose}"],
                      "id": p["id"], "system_chosen": p[f"system_{win}"], "system_rejected": p[f"system_{lose}"],
                      "votes": {"a": a, "b": b, "tie": tie}})
    return pairs


_NO_MAJORITY = "no pairwise item has a majority pick yet (ties and split votes give no pair)"


def export_pairs(con: sqlite3.Connection, path: str | Path) -> int:
    """Write the majority picks as DPO pairs; NothingToExport (and no file) when there are none."""
    pairs = majority_pairs(con)
    if not pairs:
        raise _nothing(con, path, "pairwise", _NO_MAJORITY)
    return write_jsonl(path, pairs)


def export_kto(con: sqlite3.Connection, path: str | Path) -> int:
    """TRL's unpaired shape for ``loss: kto``: each majority pick as a desirable row (the winner) and an
    undesirable one (the loser); items the raters tied or split on give no row."""
    rows = [{"id": f"{p['id']}:{side}", "prompt": p["prompt"], "completion": p[side], "label": side == "chosen",
             "system": p[f"system_{side}"]} for p in majority_pairs(con) for side in ("chosen", "rejected")]
    if not rows:
        raise _nothing(con, path, "pairwise", _NO_MAJORITY)
    return write_jsonl(path, rows)


def load_likert_csv(path: str | Path) -> dict[tuple[str, str], float]:
    """(item_id, system) -> mean clinician score, from ``clinalign rate export --likert``.

    The study report uses these in place of rubric scores; a bad file is a DataError naming FILE:LINE.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError([f"{path}: file not found"])
    sums: dict[tuple[str, str], list[float]] = defaultdict(list)
    problems = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"item_id", "system", "score"} - set(reader.fieldnames or [])
        if missing:
            raise DataError([f"{path}:1: header: missing column(s) {sorted(missing)}"])
        for row in reader:
            try:
                score = float(row["score"])
                if not 1 <= score <= 5:
                    raise ValueError
            except (TypeError, ValueError):
                problems.append(f"{path}:{reader.line_num}: score: expected a number from 1 to 5, got "
                                f"{row['score']!r}")
                continue
            sums[(plain_cell(row["item_id"]), plain_cell(row["system"]))].append(score)
    if problems:
        raise DataError(problems)
    return {k: sum(v) / len(v) for k, v in sums.items()}
