"""Self-contained HTML report: inline CSS, figures as base64 PNG, no external asset of any kind, so
the page opens offline and can be mailed to a committee. All user text is escaped."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from typing import Any

from clinalign.report.methods import methods, model_name
from clinalign.report.tables import LEGEND, calibration_rows, label_rows, results_table_html, table_html

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:75rem;
color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:1rem 0}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left}th{background:#f3f3f3}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.verdict{background:#f6f8fa;border-left:4px solid #4c78a8;padding:.4rem .8rem}
.legend,.meta{color:#555;font-size:.85rem}img{max-width:100%;margin:.5rem 0}
pre{background:#f6f8fa;padding:.6rem;font-size:.75rem;overflow-x:auto}
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_html(results: Mapping[str, Any], images: Mapping[str, Mapping[str, bytes]]) -> str:
    """``images[task][kind] = png bytes`` (kind: bars, sft_curves, dpo_curves, calibration, confusion)."""
    study = results.get("study", {})
    title = f"clinalign study: {study.get('name', '')}".rstrip(": ")
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if study.get("model"):
        parts.append(f'<p class="meta">Model: {e(model_name(study))}</p>')
    parts += ["<h2>Methods</h2>", f'<p class="methods">{e(" ".join(methods(results)))}</p>']
    parts += ["<h2>Results</h2>", results_table_html(results), f'<p class="legend">{e(LEGEND)}</p>']
    for tid, task_results in results.get("tasks", {}).items():
        parts.append(f"<h2>{e(tid)}</h2>")
        if task_results.get("_verdict"):
            parts.append(f'<p class="verdict">{e(task_results["_verdict"])}</p>')
        parts.append(f'<p class="meta">{e(task_meta_line(task_results))}</p>')
        if task_results.get("_label_distribution"):
            parts += ['<p class="meta">Predicted labels on the test items (gold first):</p>',
                      table_html(label_rows(task_results))]
        if calibration_rows(task_results):
            parts += ['<p class="meta">Calibration: test items per confidence bin:</p>',
                      table_html(calibration_rows(task_results))]
        for kind, png in images.get(tid, {}).items():
            parts.append(_img(png, f"{tid} {kind}"))
    if study:
        parts += ["<h2>Study</h2>", f"<pre>{e(json.dumps(study, indent=2, default=str))}</pre>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def task_meta_line(task_results: Mapping[str, Any]) -> str:
    """Test items, unparseable answers per system, ECE per system where scored."""
    bits = [f"{task_results.get('_n_items', '?')} test items"]
    split = task_results.get("_split") or {}
    if "train" in split:
        bits.append(f"train/val/test records {split['train']}/{split.get('val', 0)}/{split.get('test', 0)}")
    if split.get("duplicate_groups"):
        bits.append(f"duplicate groups kept in one split: {split['duplicate_groups']} "
                    f"({split['records_in_groups']} records" + (f", {split['dropped']} dropped)" if split.get("dropped") else ")"))
    unp = task_results.get("_unparseable")
    if unp:
        bits.append("unparseable: " + ", ".join(f"{s} {n}" for s, n in unp.items()))
    if task_results.get("_prompt_truncated"):
        bits.append(f"prompts cut to max_prompt_tokens: {task_results['_prompt_truncated']}")
    for r in task_results.get("_on_policy") or ():  # study/onpolicy.py: per round of on-policy DPO
        judged = (f"samples judged correct {r['sample_accuracy']:.2f}" if "sample_accuracy" in r
                  else f"mean judge score {r['mean_score']:.2f}")
        bits.append(f"on-policy round {r['round']}: {judged} ({r['samples']} samples at {r['samples_per_s']:.1f}/s; "
                    f"{r['pairs']} pairs, {r['ties_skipped']} tied prompts skipped)")
    cal = task_results.get("_calibration")
    if cal:
        eces = [f"{s} {v['ece']:.3f}" for s, v in cal.items() if v.get("ece") is not None]
        if eces:
            bits.append("ECE: " + ", ".join(eces))
    folds = task_results.get("_folds")
    if folds:  # k-fold: mean and spread of each metric over folds
        for metric, per_system in folds.items():
            k = len(next(iter(per_system.values()))["values"])
            bits.append(f"{metric} over {k} folds: " + ", ".join(
                f"{s} {v['mean']:.3f} ± {v['std']:.3f}" for s, v in per_system.items()))
    return "; ".join(bits)
