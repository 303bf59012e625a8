"""The results table shaped like the paper's: one row per task/metric; Base, SFT, DPO as
``value [CI]``; p-values SFT vs base, DPO vs base, DPO vs SFT as ``raw (Holm)``.

Marks (after Holm, p < 0.05): **bold** = the best system, significantly better than every other
system on that row; ``*`` = significantly better than base.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from typing import Any

from clinalign.eval.compare import SYSTEMS, metric_names, significantly_better

HEADER = ["Task", "Metric", "Test", "Base", "SFT", "DPO", "SFT vs base", "DPO vs base", "DPO vs SFT"]
PAIRS = ("sft_vs_base", "dpo_vs_base", "dpo_vs_sft")
LEGEND = ("Values: estimate [95% bootstrap CI]. p-values: raw (Holm-adjusted across the study). "
          "Bold: best system, significantly better than every other (Holm p < 0.05); "
          "*: significantly better than base (Holm p < 0.05).")


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
        others = [o for o in present if o != s]
        if others and all(significantly_better(entry, s, o) for o in others):
            return s
    return None


def table_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Structured rows shared by the Markdown and HTML renderings (text is raw, not escaped)."""
    rows = []
    for tid, task_results in results.get("tasks", {}).items():
        for m in metric_names(task_results):
            e = task_results[m]
            win = winner(e)
            cells = {}
            for s in SYSTEMS:
                if s not in e:
                    cells[s] = {"text": "—", "bold": False, "star": False}
                    continue
                lo, hi = (e[s].get("ci") or [None, None])[:2]
                text = f"{fmt_value(e[s].get('value'))} [{fmt_value(lo)}, {fmt_value(hi)}]"
                star = s != "base" and "base" in e and significantly_better(e, s, "base")
                cells[s] = {"text": text, "bold": s == win, "star": star}
            raw, adj = e.get("p_values", {}), e.get("p_values_holm", {})
            pv = {}
            for pair in PAIRS:
                if pair not in raw:
                    pv[pair] = "—"
                else:
                    pv[pair] = fmt_pvalue(raw[pair]) + (f" ({fmt_pvalue(adj[pair])})" if pair in adj else "")
            rows.append({"task": tid, "metric": m, "test": e.get("test", ""), "cells": cells, "p": pv})
    return rows


def _cell_md(c: Mapping[str, Any]) -> str:
    text = c["text"] + ("*" if c["star"] else "")
    return f"**{text}**" if c["bold"] else text


def md_escape(text: Any) -> str:
    """User text (task ids, metric names) is escaped: no raw HTML (a ``<`` that could open a tag),
    no broken table cells; ``p<0.001`` stays readable as plain text."""
    text = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", str(text).replace("&", "&amp;"))
    return text.replace("|", "\\|").replace("\n", " ")


def results_table_markdown(results: Mapping[str, Any]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in table_rows(results):
        cells = [md_escape(r["task"]), md_escape(r["metric"]), md_escape(r["test"])]
        cells += [_cell_md(r["cells"][s]) for s in SYSTEMS]
        cells += [r["p"][pair] for pair in PAIRS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_table_html(results: Mapping[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = []
    for r in table_rows(results):
        tds = [f"<td>{html.escape(str(r[k]))}</td>" for k in ("task", "metric", "test")]
        for s in SYSTEMS:
            c = r["cells"][s]
            text = html.escape(c["text"] + ("*" if c["star"] else ""))
            tds.append(f"<td class=\"num\">{'<b>' + text + '</b>' if c['bold'] else text}</td>")
        tds += [f"<td class=\"num\">{html.escape(r['p'][pair])}</td>" for pair in PAIRS]
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"
