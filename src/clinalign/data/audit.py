"""Data audit: what can make a fine-tune look better than it is, or harm patients' privacy.

Findings are reported by record id, never by content: the data may hold PHI, and an audit report
is something people share. The PHI scan is a safety net, NOT a de-identification tool: it finds
common patterns (titled names, MRN-like numbers, US social security numbers, phones, e-mails, street
addresses, dates of birth) and will miss others.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clinalign.errors import ClinalignError
from clinalign.tasks.base import Task

NEAR_DUP_THRESHOLD = 0.85  # estimated Jaccard similarity of word 5-gram shingles
NUM_PERM = 64
TRIVIAL_LENGTH_RATIO = 0.25  # a rejected answer under a quarter of the chosen one's length

PHI_PATTERNS: dict[str, re.Pattern[str]] = {
    "name_after_title": re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr|Mx)\.?\s+[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?"),
    "mrn": re.compile(r"\b(?:MRN|medical record(?: number)?|record #)\s*[:#]?\s*\d{5,}\b|\b\d{7,10}\b", re.I),
    "phone": re.compile(r"(?:\+?1[\s.-]?)?\(?\b\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}\b"),
    # SSA's formatted number: area 001-899 except 666, group 01-99, serial 0001-9999. Dates (4-2-2) and
    # phones (3-3-4) have other shapes; an unformatted nine-digit number is caught as an MRN.
    "ssn": re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b|"
                      r"\b(?:SSN|social security(?: number)?)\s*[:#]?\s*\d{3}[\s-]?\d{2}[\s-]?\d{4}\b", re.I),
    "email": re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"),
    "street_address": re.compile(
        r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s+){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct)\b\.?"
    ),
    "date_of_birth": re.compile(
        r"\b(?:DOB|date of birth|born(?: on)?)\s*[:]?\s*(?:\d{1,2}[/-]\d{1,2}[/-]\d{2,4}|\d{4}-\d{2}-\d{2}|"
        r"[A-Z][a-z]+ \d{1,2},? \d{4})",
        re.I,
    ),
}


class LeakageError(ClinalignError):
    """Test items that (nearly) duplicate training items: the scores would be inflated."""


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def _shingles(text: str, k: int = 5) -> set[str]:
    words = normalise(text).split()
    if len(words) <= k:
        return {" ".join(words)}
    return {" ".join(words[i : i + k]) for i in range(len(words) - k + 1)}


def _minhash(text: str) -> Any:
    from datasketch import MinHash

    m = MinHash(num_perm=NUM_PERM, seed=1)
    for s in _shingles(text):
        m.update(s.encode("utf-8"))
    return m


def record_text(task: Task, rec: Any) -> str:
    return task.prompt(rec)


def record_key(task: Task, rec: Any) -> str:
    """Equal keys = the same input (the task's own key where it has one, else the normalised prompt)."""
    key = task.duplicate_key(rec)
    return key if key is not None else normalise(record_text(task, rec))


def duplicates(task: Task, records: Sequence[Any]) -> dict[str, list[list[str]]]:
    """Exact duplicates (same normalised text) and near-duplicates (MinHash LSH), as groups of ids."""
    from datasketch import MinHashLSH

    by_hash: dict[str, list[str]] = defaultdict(list)
    for r in records:
        by_hash[hashlib.sha256(record_key(task, r).encode()).hexdigest()].append(r.id)
    exact = [ids for ids in by_hash.values() if len(ids) > 1]
    exact_ids = {i for g in exact for i in g}
    if not task.near_duplicates:
        return {"exact": exact, "near": []}

    lsh = MinHashLSH(threshold=NEAR_DUP_THRESHOLD, num_perm=NUM_PERM)
    hashes = {}
    near: list[list[str]] = []
    for r in records:
        if r.id in exact_ids:
            continue
        mh = _minhash(record_text(task, r))
        hits = [h for h in lsh.query(mh) if hashes[h].jaccard(mh) >= NEAR_DUP_THRESHOLD]
        if hits:
            near.append(sorted([*hits, r.id]))
        lsh.insert(r.id, mh)
        hashes[r.id] = mh
    return {"exact": exact, "near": near}


def duplicate_groups(task: Task, records: Sequence[Any]) -> list[list[int]]:
    """Indices of records that are the same input, exactly (``record_key``) or nearly (the MinHash rule
    of :func:`leakage`), joined transitively; every record is in exactly one group, in input order.

    The split keeps each group together, so the leakage gate cannot find what the split made.
    """
    from datasketch import MinHashLSH

    parent = list(range(len(records)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    first: dict[str, int] = {}
    for i, r in enumerate(records):
        join(i, first.setdefault(record_key(task, r), i))
    if task.near_duplicates:
        lsh = MinHashLSH(threshold=NEAR_DUP_THRESHOLD, num_perm=NUM_PERM)
        hashes: dict[str, Any] = {}
        for i, r in enumerate(records):
            mh = _minhash(record_text(task, r))
            for h in lsh.query(mh):
                if hashes[h].jaccard(mh) >= NEAR_DUP_THRESHOLD:
                    join(i, int(h))
            lsh.insert(str(i), mh)
            hashes[str(i)] = mh
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(records)):
        groups[root(i)].append(i)
    return sorted(groups.values())


def leakage(task: Task, train: Sequence[Any], test: Sequence[Any]) -> list[dict[str, Any]]:
    """Test records that duplicate or nearly duplicate a training record, by id."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=NEAR_DUP_THRESHOLD, num_perm=NUM_PERM)
    exact: dict[str, str] = {}
    hashes = {}
    for r in train:
        exact.setdefault(record_key(task, r), r.id)
        if task.near_duplicates:
            mh = _minhash(record_text(task, r))
            hashes[r.id] = mh
            lsh.insert(r.id, mh)
    leaks = []
    for r in test:
        key = record_key(task, r)
        if key in exact:
            leaks.append({"test_id": r.id, "train_id": exact[key], "kind": "exact"})
            continue
        if not task.near_duplicates:
            continue
        mh = _minhash(record_text(task, r))
        hits = [(hashes[h].jaccard(mh), h) for h in lsh.query(mh)]
        hits = [h for h in hits if h[0] >= NEAR_DUP_THRESHOLD]
        if hits:
            sim, tid = max(hits)
            leaks.append({"test_id": r.id, "train_id": tid, "kind": "near", "similarity": round(sim, 3)})
    return leaks


def phi_scan(task: Task, records: Sequence[Any], max_ids: int = 5) -> dict[str, dict[str, Any]]:
    """Counts of likely-PHI patterns with a few record ids each; the matched text is never kept."""
    found: dict[str, dict[str, Any]] = {}
    for r in records:
        text = record_text(task, r) + "\n" + task.answer(r)
        for name, pat in PHI_PATTERNS.items():
            n = len(pat.findall(text))
            if n:
                entry = found.setdefault(name, {"matches": 0, "records": 0, "example_ids": []})
                entry["matches"] += n
                entry["records"] += 1
                if len(entry["example_ids"]) < max_ids:
                    entry["example_ids"].append(r.id)
    return found


def pair_checks(pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Preference pairs that teach nothing or teach a shortcut."""
    identical, crossed, trivial = [], [], []
    chosen_by_prompt: dict[str, set[str]] = defaultdict(set)
    for p in pairs:
        chosen_by_prompt[_prompt_key(p)].add(p["chosen"])
    for i, p in enumerate(pairs):
        pid = p.get("id", f"line {i + 1}")
        if p["chosen"] == p["rejected"]:
            identical.append(pid)
        elif p["rejected"] in chosen_by_prompt[_prompt_key(p)]:
            crossed.append(pid)
        if not p["rejected"].strip() or len(p["rejected"]) < TRIVIAL_LENGTH_RATIO * len(p["chosen"]):
            trivial.append(pid)
    strategies = Counter(p.get("strategy", "unknown") for p in pairs)
    return {
        "pairs": len(pairs),
        "chosen_equals_rejected": identical,
        "rejected_is_chosen_elsewhere": crossed,
        "trivially_distinguishable": trivial,
        "strategy_share": {k: round(v / max(len(pairs), 1), 3) for k, v in strategies.most_common()},
    }


def _prompt_key(p: dict[str, Any]) -> str:
    return p["prompt"] if isinstance(p["prompt"], str) else repr(p["prompt"])


def length_stats(task: Task, records: Sequence[Any], tokenizer: Any = None, limit: int | None = None) -> dict[str, Any]:
    """Prompt and answer lengths in tokens (whitespace words when no tokenizer is given)."""

    def count(text: str) -> int:
        return len(tokenizer(text)["input_ids"]) if tokenizer is not None else len(text.split())

    prompts = sorted(count(task.prompt(r)) for r in records)
    answers = sorted(count(task.answer(r)) for r in records)

    def summary(xs: list[int]) -> dict[str, int]:
        return {"min": xs[0], "median": xs[len(xs) // 2], "p95": xs[int(0.95 * (len(xs) - 1))], "max": xs[-1]}

    out = {"unit": "tokens" if tokenizer is not None else "words", "prompt": summary(prompts),
           "answer": summary(answers)}
    if limit:
        out["limit"] = limit
        out["over_limit"] = sum(p + a > limit for p, a in zip(prompts, answers, strict=True))
    return out


def audit(task: Task, records: Sequence[Any], *, pairs: Sequence[dict[str, Any]] | None = None,
          against: Sequence[Any] | None = None, tokenizer: Any = None, limit: int | None = None) -> dict[str, Any]:
    labels = Counter(task.stratum(r) for r in records) if task.is_closed_set else Counter()
    report: dict[str, Any] = {"task": task.id, "records": len(records)}
    if labels:
        counts = dict(labels.most_common())
        report["labels"] = counts
        report["imbalance_ratio"] = round(max(counts.values()) / min(counts.values()), 2)
    report["duplicates"] = duplicates(task, records)
    if against is not None:
        report["leakage"] = leakage(task, records, against)
    report["lengths"] = length_stats(task, records, tokenizer, limit)
    report["phi"] = phi_scan(task, records)
    if pairs is not None:
        report["pairs"] = pair_checks(pairs)
    return report


def check_leakage(task: Task, train_file: Path, test_file: Path, allow: bool, log: Callable[[str], None]) -> None:
    """The study's gate before training: leakage stops the run unless ``allow_leakage`` is set."""
    from clinalign.data.io import read_records

    leaks = leakage(task, read_records(train_file, task.record_type), read_records(test_file, task.record_type))
    if not leaks:
        return
    ids = ", ".join(x["test_id"] for x in leaks[:5]) + (" ..." if len(leaks) > 5 else "")
    msg = f"{task.id}: {len(leaks)} test record(s) duplicate training records ({ids})"
    if not allow:
        raise LeakageError(msg + "; fix the split or set allow_leakage: true in the study file")
    log(f"[yellow]warning[/yellow]: {msg} (allow_leakage is set)")


def render_text(report: dict[str, Any]) -> str:
    lines = [f"audit of {report['task']}: {report['records']} records"]
    if "labels" in report:
        lines.append("  labels: " + ", ".join(f"{k} {v}" for k, v in report["labels"].items())
                     + f" (imbalance {report['imbalance_ratio']}x)")
    d = report["duplicates"]
    lines.append(f"  exact duplicate groups: {len(d['exact'])}" + _ids(d["exact"]))
    lines.append(f"  near-duplicate groups: {len(d['near'])}" + _ids(d["near"]))
    if "leakage" in report:
        leaks = report["leakage"]
        lines.append(f"  train/test leakage: {len(leaks)}"
                     + ("" if not leaks else " (" + ", ".join(f"{x['test_id']}~{x['train_id']}" for x in leaks[:5]) + ")"))
    ln = report["lengths"]
    lines.append(f"  prompt {ln['unit']}: median {ln['prompt']['median']}, p95 {ln['prompt']['p95']}, max "
                 f"{ln['prompt']['max']}; answer median {ln['answer']['median']}"
                 + (f"; over limit {ln['limit']}: {ln['over_limit']}" if "limit" in ln else ""))
    if report["phi"]:
        lines.append("  likely PHI (a safety net, not de-identification; matches not shown):")
        for name, e in report["phi"].items():
            lines.append(f"    {name}: {e['matches']} match(es) in {e['records']} record(s), e.g. ids "
                         + ", ".join(e["example_ids"]))
    else:
        lines.append("  likely PHI: none of the scanned patterns found")
    if "pairs" in report:
        p = report["pairs"]
        lines.append(f"  pairs: {p['pairs']}; chosen==rejected {len(p['chosen_equals_rejected'])}"
                     f"{_ids([p['chosen_equals_rejected']])}; rejected is another pair's chosen "
                     f"{len(p['rejected_is_chosen_elsewhere'])}; trivially distinguishable "
                     f"{len(p['trivially_distinguishable'])}; strategies "
                     + ", ".join(f"{k} {v:.0%}" for k, v in p["strategy_share"].items()))
    return "\n".join(lines)


def render_html(report: dict[str, Any]) -> str:
    """A small escaped HTML section the study report can include."""
    return "<section class='audit'><h3>Data audit: {}</h3><pre>{}</pre></section>".format(
        html.escape(report["task"]), html.escape(render_text(report))
    )


def _ids(groups: list[list[str]], n: int = 3) -> str:
    groups = [g for g in groups if g]
    if not groups:
        return ""
    return " (" + "; ".join(", ".join(g) for g in groups[:n]) + (" ..." if len(groups) > n else "") + ")"
