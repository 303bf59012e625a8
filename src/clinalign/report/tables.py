"""The results as two tables, so each fits a page: estimates (one row per task/metric; Base, SFT, DPO, and
on-policy DPO and the classical baseline where the study has them, as ``value [CI]``) and comparisons
(the same rows; each paired comparison as ``raw p (corrected p)`` and its minimum detectable difference).

Marks (on the corrected p for a member of the multiplicity family, the raw p otherwise; p < 0.05):
**bold** = the best system, significantly better than every other system on that row; ``*`` =
significantly better than base.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from clinalign.eval.compare import (
    BASELINE,
    ONPOLICY,
    SYSTEMS,
    metric_names,
    p_between,
    pairs,
    significantly_better,
)

LABELS = {"base": "Base", "sft": "SFT", "dpo": "DPO", ONPOLICY: "DPO on-policy", BASELINE: "Classical"}
#: systems shown only where some task of the study has them
OPTIONAL = (ONPOLICY, BASELINE)
PAIR_LABELS = {f"{a}_vs_{b}": f"{LABELS[a]} vs {'base' if b == 'base' else LABELS[b]}" for a, b in pairs(SYSTEMS)}
LEGEND = ("Estimates: value [95% bootstrap CI]; Test: the paired test of the row's comparisons. "
          "Bold: best system, significantly better than every other; *: significantly better than base "
          "(p < 0.05, corrected for a comparison in the multiplicity family, raw otherwise).")
COMPARISONS_LEGEND = ("Comparisons: raw p (corrected p) for a member of the multiplicity family, raw p alone for a "
                      "secondary comparison; MDE: the smallest difference the test could have detected with 80% "
                      "power at α = 0.05 on these items.")


Table = tuple[list[str], list[list[str]]]  # header, rows: plain text, escaped by whoever renders it


def fmt_value(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3f}"


def fmt_pvalue(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def winner(entry: Mapping[str, Any]) -> str | None:
    """The system significantly better than every other present system on this metric, if any."""
    present = [s for s in SYSTEMS if s in entry]
    for s in present:
        others = [o for o in present if o != s and p_between(entry, s, o) is not None]
        if others and all(significantly_better(entry, s, o) for o in others):
            return s
    return None


def columns(results: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The systems and comparisons to show: base, SFT and DPO always, on-policy DPO and the baseline
    where any task has them."""
    entries = [e for t in results.get("tasks", {}).values() for m, e in t.items()
               if not m.startswith("_") and isinstance(e, Mapping)]
    systems = [s for s in SYSTEMS if s not in OPTIONAL or any(s in e for e in entries)]
    return systems, [f"{a}_vs_{b}" for a, b in pairs(systems)]


def estimates_header(results: Mapping[str, Any]) -> list[str]:
    systems, _ = columns(results)
    return ["Task", "Metric", "Test", *(LABELS[s] for s in systems)]


def comparisons_header(results: Mapping[str, Any]) -> list[str]:
    _, comparisons = columns(results)
    return ["Task", "Metric", *(PAIR_LABELS[p] for p in comparisons)]


def table_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Structured rows shared by the Markdown and HTML renderings of both tables (text is raw, not
    escaped): ``cells`` (system -> estimate), ``p`` (comparison -> raw (corrected)) and ``mde``
    (comparison -> the minimum detectable difference, "" when unknown)."""
    systems, comparisons = columns(results)
    rows = []
    for tid, task_results in results.get("tasks", {}).items():
        for m in metric_names(task_results):
            e = task_results[m]
            win = winner(e)
            cells = {}
            for s in systems:
                if s not in e:
                    cells[s] = {"text": "—", "bold": False, "star": False}
                    continue
                lo, hi = (e[s].get("ci") or [None, None])[:2]
                text = f"{fmt_value(e[s].get('value'))} [{fmt_value(lo)}, {fmt_value(hi)}]"
                star = s != "base" and "base" in e and significantly_better(e, s, "base")
                cells[s] = {"text": text, "bold": s == win, "star": star}
            raw, adj, mde = e.get("p_values", {}), e.get("p_values_holm", {}), e.get("mde") or {}
            pv = {}
            for pair in comparisons:
                if pair not in raw:
                    pv[pair] = "—"
                else:
                    pv[pair] = fmt_pvalue(raw[pair]) + (f" ({fmt_pvalue(adj[pair])})" if pair in adj else "")
            mdes = {pair: fmt_value(mde[pair]) if mde.get(pair) is not None else "" for pair in comparisons}
            rows.append({"task": tid, "metric": m, "test": e.get("test", ""), "cells": cells, "p": pv, "mde": mdes})
    return rows


def _cell_md(c: Mapping[str, Any]) -> str:
    text = c["text"] + ("*" if c["star"] else "")
    return f"**{text}**" if c["bold"] else text


def md_escape(text: Any) -> str:
    """User text (task ids, metric names) is escaped: no raw HTML (a ``<`` that could open a tag),
    no broken table cells; ``p<0.001`` stays readable as plain text."""
    text = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", str(text).replace("&", "&amp;"))
    return text.replace("|", "\\|").replace("\n", " ")


def _md_rows(head: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines from cells already escaped (or marked up)."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def comparison_cell(p: str, mde: str) -> str:
    """``0.003 (0.006); MDE 0.120``."""
    return p + (f"; MDE {mde}" if mde else "")


def results_table_markdown(results: Mapping[str, Any]) -> str:
    """Both tables, estimates then comparisons, each under its legend."""
    rows = table_rows(results)
    estimates = [[md_escape(r["task"]), md_escape(r["metric"]), md_escape(r["test"]),
                  *(_cell_md(c) for c in r["cells"].values())] for r in rows]
    comparisons = [[md_escape(r["task"]), md_escape(r["metric"]),
                    *(comparison_cell(p, r["mde"][pair]) for pair, p in r["p"].items())] for r in rows]
    lines = [*_md_rows(estimates_header(results), estimates), "", LEGEND, "",
             *_md_rows(comparisons_header(results), comparisons), "", COMPARISONS_LEGEND]
    return "\n".join(lines) + "\n"


def label_rows(task_results: Mapping[str, Any]) -> Table | None:
    """The predicted-label distribution per system (and the gold one) as a header and rows of counts,
    so a model that gives one answer to every item stands out; None for tasks without labels."""
    dist = task_results.get("_label_distribution")
    if not dist:
        return None
    labels = list(dist.get("gold", {}))
    labels += sorted({x for counts in dist.values() for x in counts} - set(labels))
    head = ["System", *labels]
    rows = [[LABELS.get(s, s) if s != "gold" else "Gold", *(str(counts.get(x, 0)) for x in labels)]
            for s, counts in dist.items()]
    return head, rows


def calibration_rows(task_results: Mapping[str, Any]) -> Table | None:
    """Items per confidence bin and system (bins no system fell in left out): a reliability point from
    2 items must not look as solid as one from 200."""
    cal = task_results.get("_calibration")
    if not cal:
        return None
    systems = {s: v["bins"] for s, v in cal.items() if v.get("n")}
    used = [i for i, b in enumerate(next(iter(systems.values()), [])) if any(bs[i]["count"] for bs in systems.values())]
    if not used:
        return None
    first = next(iter(systems.values()))
    head = ["System", *(f"{first[i]['lo']:.1f}-{first[i]['hi']:.1f}" for i in used)]
    return head, [[LABELS.get(s, s), *(str(bs[i]["count"]) for i in used)] for s, bs in systems.items()]


def table_markdown(table: Table | None) -> str:
    """A table of plain text (summary, settings, label distribution, calibration bins) as escaped Markdown."""
    if table is None:
        return ""
    head, rows = table
    return "\n".join(_md_rows([md_escape(h) for h in head], [[md_escape(c) for c in r] for r in rows])) + "\n"


#: The tables under each task's heading in report.md and report.html, in order: (caption, builder).
#: A builder reads one task's results and gives a header and rows of plain text, or None where it does
#: not apply; both renderings show every entry, so a new per-task table is one function added here.
TASK_TABLES: list[tuple[str, Callable[[Mapping[str, Any]], Table | None]]] = [
    ("Predicted labels on the test items (gold first):", label_rows),
    ("Calibration: test items per confidence bin:", calibration_rows),
]


def task_tables(task_results: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(caption, header, rows) of every `TASK_TABLES` entry that applies to this task."""
    out = []
    for caption, build in TASK_TABLES:
        table = build(task_results)
        if table is not None:
            out.append((caption, *table))
    return out
