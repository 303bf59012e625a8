"""The summary a committee reads first: one line per task (the verdict's answer, the best system by point
estimate, its primary metric with its CI, the best fine-tuned system against base and against the classical baseline with the test's verdict,
its correction and the smallest difference it could have detected, collapse flags) and the study's
caveats (where the data came from, test sizes, how settings were chosen, how often the test split was
used, which comparisons were corrected for multiplicity).

`summary` builds it once from ``results``; report.md, report.html and `clinalign study run`'s closing
lines all render that one object, so the terminal and the page cannot disagree. The per-task data line
the study logs when a task's split is ready comes from here too (`data_line`), in the caveats' words.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinalign.eval.compare import (
    BASELINE,
    CLINICIAN_LIKERT,
    METHOD_NAMES,
    NAMES,
    TUNED,
    collapsed,
    mde_between,
    metric_names,
    ordered_systems,
    p_text,
    primary_metric,
    significantly_better,
)
from clinalign.report.selection import per_fold
from clinalign.report.tables import LABELS
from clinalign.tasks import Task

HEADER = ["Task", "Verdict", "Best (point estimate)", "Primary metric [95% CI]", "Best fine-tuned vs base",
          "Best fine-tuned vs classical", "Flags"]
#: how many test items a generation task shows as examples, and how much of each
EXAMPLES, EXCERPT_CHARS, OUTPUT_CHARS = 3, 300, 400


@dataclass(frozen=True)
class TaskSummary:
    """One task's row: plain text cells (escaped by whoever renders them)."""

    task: str
    verdict: str
    best: str
    metric: str
    vs_base: str
    vs_classical: str
    flags: tuple[str, ...] = ()

    def cells(self) -> list[str]:
        return [self.task, self.verdict, self.best, self.metric, self.vs_base, self.vs_classical, "; ".join(self.flags)]

    def line(self) -> str:
        """The row as one line (the terminal's form)."""
        if self.best == "failed":
            return f"{self.task}: failed: {'; '.join(self.flags)}"
        parts = [f"{self.task}: {self.verdict}", f"best {self.best}, {self.metric}", f"vs base: {self.vs_base}",
                 f"vs classical: {self.vs_classical}"]
        return "; ".join(parts + list(self.flags))


@dataclass(frozen=True)
class Summary:
    tasks: list[TaskSummary]
    caveats: list[str]

    def lines(self) -> list[str]:
        """What `clinalign study run` prints at its end, in order."""
        return ([t.line() for t in self.tasks]
                + (["Caveats:", *(f"- {c}" for c in self.caveats)] if self.caveats else []))


def summary(results: Mapping[str, Any]) -> Summary:
    tasks = results.get("tasks", {})
    return Summary([task_summary(tid, t) for tid, t in tasks.items()], caveats(results))


# -- one task --------------------------------------------------------------------------------------

def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _best(e: Mapping[str, Any], systems: Sequence[str]) -> str | None:
    """The system with the best point estimate (the simpler one on a tie: base, SFT, DPO, ... order)."""
    sign = 1 if e.get("higher_is_better", True) else -1
    best = None
    for s in ordered_systems([s for s in systems if e.get(s, {}).get("value") is not None]):
        if best is None or sign * e[s]["value"] > sign * e[best]["value"]:
            best = s
    return best


def versus(e: Mapping[str, Any], a: str, b: str) -> str:
    """``DPO +0.449 (p<0.001, Holm): significantly better; MDE 0.120``: the difference, its p (corrected
    or raw and secondary), the test's verdict and the smallest difference it could have detected."""
    va, vb = e.get(a, {}).get("value"), e.get(b, {}).get("value")
    if va is None or vb is None:
        return "—"
    if significantly_better(e, a, b):
        word = "significantly better"
    elif significantly_better(e, b, a):
        word = "significantly worse"
    else:
        word = "not significant"
    mde = mde_between(e, a, b)
    return (f"{LABELS.get(a, a)} {va - vb:+.3f} ({p_text(e, a, b)}): {word}"
            + (f"; MDE {mde:.3f}" if mde is not None else ""))


def verdict_head(task_results: Mapping[str, Any]) -> str:
    """The verdict's answer without its evidence: "SFT sufficient", "DPO best", "No gain" (eval/compare.verdict
    opens every sentence with it, the metric and p-values following in parentheses)."""
    return str(task_results.get("_verdict") or "—").split(" (", 1)[0].split(":", 1)[0]


def task_summary(tid: str, t: Mapping[str, Any]) -> TaskSummary:
    if t.get("_error"):
        return TaskSummary(tid, "failed", "failed", "—", "—", "—", (str(t["_error"]),))
    m = primary_metric(t)
    if m is None:
        return TaskSummary(tid, verdict_head(t), "—", "no metric", "—", "—")
    e = t[m]
    present = ordered_systems([k for k in e if isinstance(e[k], Mapping) and "value" in e[k]])
    best = _best(e, present)
    tuned = _best(e, [s for s in present if s in TUNED])
    if best is None:
        return TaskSummary(tid, verdict_head(t), "—", f"{m} n/a", "—", "—")
    lo, hi = (e[best].get("ci") or [None, None])[:2]
    metric = f"{m} {_fmt(e[best]['value'])} [{_fmt(lo)}, {_fmt(hi)}]"
    n = e.get("n_items", t.get("_n_items"))
    if n:
        metric += f", {n} test items"
    name = LABELS.get(best, best)
    if tuned and tuned != best:
        name += f" (best fine-tuned: {LABELS.get(tuned, tuned)})"
    vs_base = versus(e, tuned, "base") if tuned and "base" in e else "—"
    vs_classical = versus(e, tuned, BASELINE) if tuned and BASELINE in e else "—"
    flags = tuple(f"{LABELS.get(c.system, c.system)} answers {c.label!r} to {c.count} of {c.n_items} items (collapsed)"
                  for c in collapsed(t.get("_label_distribution") or {}))
    return TaskSummary(tid, verdict_head(t), name, metric, vs_base, vs_classical, flags)


# -- the study's caveats -----------------------------------------------------------------------------

def grouped(texts: Mapping[str, str]) -> str:
    """Tasks that share a text named together: ``a, b: text one; c: text two``, or ``every task: text``."""
    groups: dict[str, list[str]] = {}
    for tid, text in texts.items():
        groups.setdefault(text, []).append(tid)
    if len(groups) == 1 and len(texts) > 1:
        return f"every task: {next(iter(groups))}"
    return "; ".join(f"{', '.join(tids)}: {text}" for text, tids in groups.items())


def data_source(entry: Any) -> dict[str, Any]:
    """A task's ``_data`` in results.json from its study entry (``data``, ``n``, ``seed``, ``pairs_file``,
    ``likert_csv``): where its records came from (clinalign's synthetic generator, with n and seed, or
    the user's file) and any clinician files it used."""
    out: dict[str, Any] = ({"source": "file", "file": str(entry.data)} if entry.data
                           else {"source": "synthetic", "n": entry.n, "seed": entry.seed})
    if entry.pairs_file:
        out["pairs_file"] = str(entry.pairs_file)
    if entry.likert_csv:
        out["likert_csv"] = str(entry.likert_csv)
    return out


def source_text(source: Mapping[str, Any]) -> str:
    """``synthetic (clinalign's generator, seed 0)`` or ``the user's file uti.jsonl``."""
    if source.get("source") == "synthetic":
        return f"synthetic (clinalign's generator, seed {source.get('seed', 0)})"
    text = f"the user's file {Path(str(source.get('file', '?'))).name}"
    extra = [f"pairs from {Path(str(source['pairs_file'])).name}" if source.get("pairs_file") else "",
             f"clinician ratings from {Path(str(source['likert_csv'])).name}" if source.get("likert_csv") else ""]
    return text + "".join(f"; {x}" for x in extra if x)


def _data_caveat(tasks: Mapping[str, Mapping[str, Any]]) -> str | None:
    sources = {tid: t["_data"] for tid, t in tasks.items() if t.get("_data")}
    sizes = [f"{tid} {t['_n_items']}" for tid, t in tasks.items() if t.get("_n_items")]
    if not sources and not sizes:
        return None
    synthetic = [tid for tid, s in sources.items() if s.get("source") == "synthetic"]
    own = [f"{tid} ({source_text(s)})" for tid, s in sources.items() if s.get("source") != "synthetic"]
    bits = []
    if synthetic and len(synthetic) == len(tasks):
        bits.append("every task's records are synthetic, made by clinalign's generators (no patient data): "
                    "they show what the method does, not how it does on a hospital's own text")
    elif synthetic:
        bits.append(f"synthetic records from clinalign's generators for {', '.join(synthetic)}")
    if own:
        bits.append("the user's own records for " + ", ".join(own))
    text = "Data: " + "; ".join(bits) + "." if bits else ""
    if sizes:
        text += (" " if text else "") + ("Test items: " + ", ".join(sizes)
                                         + " (a small test set detects only large differences: see each MDE).")
    return text


def _arm_selection(arm: Mapping[str, Any]) -> str:
    if "fixed" in arm:
        return str(arm.get("reason") or "fixed in the study file")
    trials = [x for x in arm.get("trials") or [] if x.get("state") == "complete"]
    budget = (arm.get("budget") or {}).get("trials")
    ran = f"{len(arm.get('trials') or [])} trial(s)" + (f" of a budget of {budget}" if budget else "")
    return (f"searched on {arm.get('validation_records', '?')} validation records ({ran}, "
            f"{len(trials)} complete)")


def sentence(text: str) -> str:
    """``text`` as a sentence: its first letter upper case (the rest untouched: "SFT" stays), a full stop."""
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def searched(task_results: Mapping[str, Any]) -> bool:
    """Whether any arm of the task (in any fold) had its settings chosen by a search."""
    return any("trials" in arm for _, sel in per_fold(task_results.get("_selection"))
               for name, arm in sel.items() if name != "fold")


def selection_text(task_results: Mapping[str, Any]) -> str:
    """How one task's settings were chosen, from its ``_selection`` (study/: a search's record, or the
    settings fixed in the study file): ``SFT searched on 40 validation records (8 trial(s) ...); DPO fixed
    in the study file``; without ``_selection``, fixed in the study file. A k-fold study names the first
    fold's search (each fold searches alike, on its own split)."""
    folds = per_fold(task_results.get("_selection"))
    if not folds:
        return "fixed in the study file"
    texts = {arm: _arm_selection(v) for arm, v in folds[0][1].items() if arm != "fold"}
    where = f" (fold {folds[0][1]['fold']} of {len(folds)}; each fold alike)" if len(folds) > 1 else ""
    if len(set(texts.values())) == 1:
        return next(iter(texts.values())) + where
    return ", ".join(f"{LABELS.get(arm, arm)} {text}" for arm, text in texts.items()) + where


def _selection_caveat(tasks: Mapping[str, Mapping[str, Any]]) -> str | None:
    done = {tid: t for tid, t in tasks.items() if not t.get("_error")}
    if not done:
        return None
    if not any(searched(t) for t in done.values()):
        return ("Settings: fixed in the study file before the run (no search on validation data is recorded); "
                "a setting chosen by looking at test results would make every p-value optimistic.")
    return (f"Settings: {grouped({tid: selection_text(t) for tid, t in done.items()})}; no search saw the "
            "test split.")


def n_configurations(task_results: Mapping[str, Any]) -> int | None:
    """The most configurations any of the task's test splits (one per fold) has been scored under, from
    the test-split ledger's record (``_test_uses``); None without one."""
    counts = [uses.get("n_configurations", 1) for _, uses in per_fold(task_results.get("_test_uses"))]
    return max(counts) if counts else None


def _test_uses_caveat(tasks: Mapping[str, Mapping[str, Any]]) -> str | None:
    uses = {tid: n for tid, t in tasks.items() if (n := n_configurations(t))}
    if not uses:
        return None
    reused = {tid: n for tid, n in uses.items() if n > 1}
    if not reused:
        return ("Test split: each task's test split has been scored under one configuration only "
                "(the ledger of test-split uses holds no other).")
    listed = ", ".join(f"{tid} {n}" for tid, n in reused.items())
    return (f"Test split reused: configurations scored on the same test split: {listed}. Their p-values and "
            "CIs are optimistic: when several configurations have seen the test items, keeping the one that "
            "scored best there selects on the test set, and the reported test no longer accounts for that choice.")


def _family_text(fam: Mapping[str, Any]) -> str:
    metrics = fam.get("metrics")
    what = ("each task's primary metric" if metrics == "primary" else "every metric" if metrics == "all"
            else "the metrics " + ", ".join(map(str, metrics or [])))
    comps = fam.get("comparisons")
    which = ("every comparison" if comps == "all" else
             ", ".join(f"{NAMES.get(a, a)} vs {NAMES.get(b, b)}" for a, _, b in
                       (str(c).partition("_vs_") for c in comps or [])))
    return f"{what}; {which}"


def multiplicity_text(results: Mapping[str, Any]) -> str:
    """Which comparisons were corrected together, and how: from ``study.multiplicity`` (what
    eval/compare.apply_multiplicity returned), else read off the metric entries."""
    fam = (results.get("study") or {}).get("multiplicity")
    if fam:
        method = METHOD_NAMES.get(fam.get("method", "holm"), str(fam.get("method")))
        return (f"{method} correction over a family of {fam.get('n_tests', 0)} comparisons declared before the "
                f"run ({_family_text(fam)}); every other comparison shows its raw p and is secondary; significant "
                f"means {method}-adjusted p < 0.05 for a family member, raw p < 0.05 for a secondary one")
    entries = [t[m] for t in results.get("tasks", {}).values() for m in metric_names(t)]
    corrected = [e for e in entries if "p_values_holm" in e]
    if not corrected:
        return "no multiplicity correction: every p-value is raw"
    method = METHOD_NAMES.get(corrected[0].get("correction", "holm"), "Holm")
    n_fam = sum(p is not None for e in corrected for p in e["p_values_holm"].values())
    n_all = sum(p is not None for e in entries for p in e.get("p_values", {}).values())
    if n_fam == n_all:
        return (f"{method} correction across all {n_fam} comparisons of the study; significant means "
                f"{method}-adjusted p < 0.05")
    return (f"{method} correction over {n_fam} of the study's {n_all} comparisons; the others show their raw "
            f"p and are secondary")


def caveats(results: Mapping[str, Any]) -> list[str]:
    tasks = results.get("tasks", {})
    out = [_data_caveat(tasks), _selection_caveat(tasks), _test_uses_caveat(tasks)]
    if any(metric_names(t) for t in tasks.values()):
        out.append("Multiple comparisons: " + multiplicity_text(results) + ".")
    if any(metric_names(t) and "_label_distribution" not in t and CLINICIAN_LIKERT not in t for t in tasks.values()):
        out.append("Free-text outputs are scored by each task's rubric, a deterministic rule, not by clinicians "
                   "(clinician ratings replace it where a task gives likert_csv).")
    return [c for c in out if c]


# -- the data line the study logs when a task's split is ready ----------------------------------------

def records_note(split: Mapping[str, Any], used: int, max_train: int | None) -> str | None:
    """Why a task uses fewer records than it made (``split``: its split.json): max_train cut the training
    split, or the dedupe dropped duplicates; None when all were used."""
    made = split.get("records", used)
    if made <= used:
        return None
    why = [f"max_train: {max_train} training records kept" if max_train else "",
           f"{split['dropped']} dropped as duplicates" if split.get("dropped") else ""]
    why = [w for w in why if w]
    return f"{used} of {made} records used" + (f" ({'; '.join(why)})" if why else "")


def data_line(task: Task, parts: Mapping[str, Sequence[Any]], split: Mapping[str, Any], source: Mapping[str, Any],
              max_train: int | None = None) -> str:
    """``data uti_classification: synthetic (...); train/val/test 112/8/40; labels no 62%, yes 38%; median
    prompt 640 chars``: what a task will train and be tested on, logged before anything trains. Counts and
    lengths only, never record text."""
    records = [r for p in parts.values() for r in p]
    counts = "/".join(str(len(parts.get(k, ()))) for k in ("train", "val", "test"))
    bits = [source_text(source), f"train/val/test {counts}"]
    if task.is_closed_set and records:
        labels = Counter(task.stratum(r) for r in records)
        bits.append("labels " + ", ".join(f"{k} {v / len(records):.0%}" for k, v in labels.most_common(4))
                    + (" ..." if len(labels) > 4 else ""))
    if records:
        chars = sorted(len(task.prompt(r)) for r in records)
        bits.append(f"median prompt {chars[len(chars) // 2]} chars")
    note = records_note(split, len(records), max_train)
    if note:
        bits.append(note)
    return f"data {task.id}: " + "; ".join(bits)


# -- example outputs of a generation task -------------------------------------------------------------

def excerpt(text: str, limit: int) -> str:
    """The first ``limit`` characters, cut at a word and marked, on one line."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " …"


def example_outputs(task: Task, records: Sequence[Any], preds: Mapping[str, Sequence[Mapping[str, Any]]],
                    k: int = EXAMPLES) -> list[dict[str, Any]]:
    """The first ``k`` test items of a generation task: an excerpt of the input, the reference and every
    system's output, shortened. For the report page only (not results.json): on a hospital's data the
    excerpt is patient text, shown on its own machine to the people running the study."""
    out = []
    for i, r in enumerate(records[:k]):
        view = task.baseline_features(r)
        source = view if isinstance(view, str) else task.prompt(r)
        outputs = {LABELS.get(s, s): excerpt(rows[i].get("text") or "", OUTPUT_CHARS) for s, rows in preds.items()
                   if i < len(rows)}
        out.append({"id": str(r.id), "input": excerpt(source, EXCERPT_CHARS),
                    "reference": excerpt(task.answer(r), OUTPUT_CHARS), "outputs": outputs})
    return out
