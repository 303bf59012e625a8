"""Self-contained HTML report: inline CSS, figures as base64 PNG, no external asset of any kind, so
the page opens offline and can be mailed to a committee. The page is the jinja2 template
``templates/report.html.jinja`` with autoescaping on, so all user text is escaped by the template."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template

from clinalign.report.methods import methods, metric_coverage, model_name, settings_table, splits
from clinalign.report.provenance import provenance_line
from clinalign.report.selection import selection_data
from clinalign.report.summary import HEADER, n_configurations, selection_text, sentence, summary
from clinalign.report.tables import (
    COMPARISONS_LEGEND,
    LEGEND,
    columns,
    comparisons_header,
    estimates_header,
    table_rows,
    task_tables,
)


@cache
def _template() -> Template:
    env = Environment(loader=PackageLoader("clinalign.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env.get_template("report.html.jinja")


def render_html(results: Mapping[str, Any], images: Mapping[str, Mapping[str, bytes]],
                examples: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                links: Sequence[tuple[str, str, str]] = ()) -> str:
    """``images[task][kind] = png bytes`` (kind: bars, sft_curves, dpo_curves, calibration, confusion,
    selection); ``examples[task]``: a generation task's example outputs; ``links``: (name, href, what)
    of the files beside the page."""
    study = results.get("study", {})
    digest = summary(results)
    tasks = [{"id": tid, "anchor": f"task-{i}", "verdict": task_results.get("_verdict"),
              "meta": task_meta_line(task_results), "failed": bool(task_results.get("_error")),
              "chosen": sentence(selection_text(task_results)),
              "selection": selection_data(task_results),
              "tables": task_tables(task_results), "examples": (examples or {}).get(tid) or [],
              "images": [(kind, f"{tid} {kind}", base64.b64encode(png).decode("ascii"))
                         for kind, png in images.get(tid, {}).items()]}
             for i, (tid, task_results) in enumerate(results.get("tasks", {}).items())]
    anchors = {t["id"]: t["anchor"] for t in tasks}
    return _template().render(
        title=f"clinalign study: {study.get('name', '')}".rstrip(": "),
        model=model_name(study) if study.get("model") else None,
        provenance=provenance_line(study.get("provenance") or {}),
        summary_head=HEADER, summary_rows=[(anchors.get(t.task), t.cells()) for t in digest.tasks],
        caveats=digest.caveats,
        methods=methods(results), settings=settings_table(results), coverage=metric_coverage(results),
        systems=columns(results)[0], rows=table_rows(results),
        estimates_head=estimates_header(results), comparisons_head=comparisons_header(results),
        legend=LEGEND, comparisons_legend=COMPARISONS_LEGEND, tasks=tasks, links=links)


def task_meta_line(task_results: Mapping[str, Any]) -> str:
    """Test items, split sizes, how often the test split has been scored, unparseable answers per system,
    on-policy rounds, ECE per system where scored, fold spread."""
    bits = [f"{task_results.get('_n_items', '?')} test items"]
    for label, split in splits(task_results):
        where = f" ({label})" if label else ""
        if "train" in split:
            bits.append(f"train/val/test records{where} {split['train']}/{split.get('val', 0)}/{split.get('test', 0)}")
        if split.get("duplicate_groups"):
            bits.append(f"duplicate groups kept in one split{where}: {split['duplicate_groups']} "
                        f"({split['records_in_groups']} records"
                        + (f", {split['dropped']} dropped)" if split.get("dropped") else ")"))
    uses = n_configurations(task_results)
    if uses:  # the ledger of test-split uses (study/ledger.py)
        bits.append(f"test split scored under {uses} configuration(s)"
                    + (": p-values optimistic (see the caveats)" if uses > 1 else ""))
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
