"""Self-contained HTML report: inline CSS, figures as base64 PNG, no external asset of any kind, so
the page opens offline and can be mailed to a committee. The page is the jinja2 template
``templates/report.html.jinja`` with autoescaping on, so all user text is escaped by the template."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template

from clinalign.report.methods import methods, model_name, splits
from clinalign.report.selection import selection_data
from clinalign.report.tables import LEGEND, header, table_rows, task_tables


@cache
def _template() -> Template:
    env = Environment(loader=PackageLoader("clinalign.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env.get_template("report.html.jinja")


def render_html(results: Mapping[str, Any], images: Mapping[str, Mapping[str, bytes]]) -> str:
    """``images[task][kind] = png bytes`` (kind: bars, sft_curves, dpo_curves, calibration, confusion)."""
    study = results.get("study", {})
    tasks = [{"id": tid, "verdict": task_results.get("_verdict"), "meta": task_meta_line(task_results),
              "tables": task_tables(task_results), "selection": selection_data(task_results),
              "images": [(f"{tid} {kind}", base64.b64encode(png).decode("ascii"))
                         for kind, png in images.get(tid, {}).items()]}
             for tid, task_results in results.get("tasks", {}).items()]
    return _template().render(
        title=f"clinalign study: {study.get('name', '')}".rstrip(": "),
        model=model_name(study) if study.get("model") else None,
        methods=" ".join(methods(results)),
        results_head=header(results), results_rows=table_rows(results), legend=LEGEND, tasks=tasks,
        study_json=json.dumps(study, indent=2, default=str) if study else None)


def task_meta_line(task_results: Mapping[str, Any]) -> str:
    """Test items, unparseable answers per system, ECE per system where scored."""
    bits = [f"{task_results.get('_n_items', '?')} test items"]
    for label, split in splits(task_results):
        where = f" ({label})" if label else ""
        if "train" in split:
            bits.append(f"train/val/test records{where} {split['train']}/{split.get('val', 0)}/{split.get('test', 0)}")
        if split.get("duplicate_groups"):
            bits.append(f"duplicate groups kept in one split{where}: {split['duplicate_groups']} "
                        f"({split['records_in_groups']} records"
                        + (f", {split['dropped']} dropped)" if split.get("dropped") else ")"))
    unp = task_results.get("_unparseable")
    if unp:
        bits.append("unparseable: " + ", ".join(f"{s} {n}" for s, n in unp.items()))
    if task_results.get("_prompt_truncated"):
        bits.append(f"prompts cut to max_prompt_tokens: {task_results['_prompt_truncated']}")
    for r in task_results.get("_on_policy") or ():  # study/onpolicy.py: per round (and fold) of on-policy DPO
        judged = (f"samples judged correct {r['sample_accuracy']:.2f}" if "sample_accuracy" in r
                  else f"mean judge score {r['mean_score']:.2f}")
        fold = f"fold {r['fold']} " if "fold" in r else ""
        bits.append(f"on-policy {fold}round {r['round']}: {judged} ({r['samples']} samples at {r['samples_per_s']:.1f}/s; "
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
