"""The study report: ``report.md``, ``report.html`` (self-contained), ``results.json`` and PNG figures.

Both pages open with the summary a committee reads first (report/summary.py: one line per task and the
study's caveats; `clinalign study run` prints the same lines), then the methods in prose with the
settings each stage ran with (report/methods.py), the results as two tables (estimates; comparisons with
their p-values and minimum detectable differences: report/tables.py), and a section per task (verdict,
how its settings were chosen, label and calibration tables, example outputs of a generation task,
figures). The page ends in links to results.json and predictions/, not in a copy of the JSON.

``results`` layout (results.json; more keys are welcome, these are relied on)::

    {"tasks": {TASK: {METRIC: {"base": {"value": v, "ci": [lo, hi]}, "sft": ..., "dpo": ...,
                               "p_values": {"sft_vs_base": p, "dpo_vs_base": p, "dpo_vs_sft": p},
                               "p_values_holm": {...}, "mde": {...}, "test": "McNemar exact",
                               "higher_is_better": true, "covers": "what the metric counts"},
                      ...,
                      "_primary": METRIC, "_n_items": n, "_unparseable": {system: n},
                      "_verdict": "DPO best (f1_yes): ...",
                      "_split": {"train": n, "val": n, "test": n, ...},  # k folds: [{"fold": k, ...}, ...]
                      "_on_policy": [{"round": r, ...}],                  # k folds: each also names its "fold"
                      "_folds": {METRIC: {system: {"mean", "std", "values"}}},          # k folds only
                      "_settings": {system: {key: value}},   # what each training stage ran with
                      "_selection": {arm: {...}},            # how settings were chosen (report/selection.py); k folds: a list
                      "_test_uses": {"test_hash", "n_configurations", "uses"},  # the test-split ledger; k folds: a list
                      "_data": {"source": "synthetic", "n", "seed"} | {"source": "file", "file"},
                      "_baseline": "TF-IDF ... + logistic regression ...",   # the classical system
                      "_calibration": {system: {"ece": e, "n": n, "bins": [...]}}}},   # written here
     "study": {"name", "model", "config", "multiplicity": {...}, "provenance": {...}, ...}}

So ``results["tasks"][TASK][METRIC]["base"]["value"]`` holds; keys starting with "_" are task-level
information, never metrics (see `clinalign.eval.compare`). Undefined numbers are null.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clinalign.data.io import atomic_path, write_json, write_text_atomic
from clinalign.eval.calibration import calibration_summary
from clinalign.report import plots, selection
from clinalign.report.html import render_html, task_meta_line
from clinalign.report.methods import methods, metric_coverage, model_name, settings_table
from clinalign.report.provenance import provenance_line
from clinalign.report.summary import HEADER, selection_text, sentence, summary
from clinalign.report.tables import md_escape, results_table_markdown, table_markdown, task_tables

#: the files the page links to, beside it in the study's output folder
LINKS = [("results.json", "results.json", "every number, machine-readable"),
         ("predictions/", "predictions/", "each system's answer to every test item"),
         ("data/", "data/", "the train/val/test split each task used"),
         ("report.md", "report.md", "this report as Markdown")]


def safe_name(text: str) -> str:
    """A file-name-safe form of a task id (a task declared by a user may be named anything)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "task"


def _json_clean(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, Mapping):
        return {str(k): _json_clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_clean(v) for v in x]
    return x


def write_report(
    results: Mapping[str, Any],
    out_dir: str | Path,
    *,
    curves: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]] | None = None,
    calibration: Mapping[str, Mapping[str, Sequence[tuple[Mapping[str, float] | None, str]]]] | None = None,
    confusion: Mapping[str, Mapping[str, tuple[Sequence[str], Sequence[str | None]]]] | None = None,
    examples: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> dict[str, Path]:
    """Write every report file into ``out_dir``, each atomically; returns file name -> path.

    ``curves[task][stage]``: the sft / dpo run's metrics.jsonl rows (``step``, ``loss``; DPO also
    ``reward_margin``, ``reward_accuracy``); in a k-fold study every fold's rows, each naming its ``fold``.
    ``calibration[task][system]``: ``(class -> probability, gold)`` per item (scored tasks).
    ``confusion[task][system]``: ``(golds, predictions)``.
    ``examples[task]``: a generation task's example outputs (report/summary.example_outputs), shown on the
    pages only: they quote test records, which results.json never does.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = _json_clean(copy.deepcopy(dict(results)))
    results.setdefault("tasks", {})
    curves, calibration, confusion, examples = curves or {}, calibration or {}, confusion or {}, examples or {}

    images: dict[str, dict[str, bytes]] = {}
    for tid, task_results in results["tasks"].items():
        if calibration.get(tid):
            task_results["_calibration"] = {s: calibration_summary(items) for s, items in calibration[tid].items()}
        stage_rows = curves.get(tid) or {}
        images[tid] = {k: png for k, png in (
            ("bars", plots.bars_png(tid, task_results)),
            *((f"{stage}_curves", plots.curves_png(tid, stage, stage_rows.get(stage) or []))
              for stage in plots.STAGE_TITLES),
            ("calibration", plots.reliability_png(tid, task_results.get("_calibration", {}))),
            ("confusion", plots.confusion_png(tid, confusion[tid]) if confusion.get(tid) else None),
            ("selection", selection.selection_png(tid, task_results)),
        ) if png is not None}
    results = _json_clean(results)

    written: dict[str, Path] = {}
    png_names: dict[str, dict[str, str]] = {}
    for tid, kinds in images.items():
        for kind, png in kinds.items():
            name = f"{safe_name(tid)}_{kind}.png"
            with atomic_path(out / name) as tmp:
                tmp.write_bytes(png)
            written[name] = out / name
            png_names.setdefault(tid, {})[kind] = name

    write_json(out / "results.json", results)
    written["results.json"] = out / "results.json"
    write_text_atomic(out / "report.md", render_markdown(results, png_names, examples))
    written["report.md"] = out / "report.md"
    write_text_atomic(out / "report.html", render_html(results, images, examples, LINKS))
    written["report.html"] = out / "report.html"
    return written


def examples_markdown(items: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["Example outputs (the first test items; input cut short; on your own data this is your patients' "
             "text, kept on this machine):", ""]
    for ex in items:
        lines += [f"- item {md_escape(ex['id'])}: input: {md_escape(ex['input'])}",
                  f"  - reference: {md_escape(ex['reference'])}",
                  *(f"  - {md_escape(s)}: {md_escape(text)}" for s, text in ex["outputs"].items())]
    return [*lines, ""]


def render_markdown(results: Mapping[str, Any], png_names: Mapping[str, Mapping[str, str]],
                    examples: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> str:
    study = results.get("study", {})
    lines = [f"# clinalign study: {md_escape(study.get('name', ''))}", ""]
    if study.get("model"):
        lines += [f"Model: {md_escape(model_name(study))}", ""]
    if study.get("provenance"):
        lines += [md_escape(provenance_line(study["provenance"])), ""]
    digest = summary(results)
    if digest.tasks:
        lines += ["## Summary", "", table_markdown((HEADER, [t.cells() for t in digest.tasks]))]
    if digest.caveats:
        lines += ["Caveats:", "", *(f"- {md_escape(c)}" for c in digest.caveats), ""]
    lines += ["## Methods", ""]
    for paragraph in methods(results):
        lines += [md_escape(paragraph), ""]
    table = settings_table(results)
    if table:
        lines += ["Training settings (what each stage ran with):", "", table_markdown(table)]
    coverage = metric_coverage(results)
    if coverage:
        lines += ["What each metric counts:", "", *(f"- {md_escape(m)}: {md_escape(text)}" for m, text in coverage), ""]
    lines += ["## Results", "", results_table_markdown(results)]
    for tid, task_results in results.get("tasks", {}).items():
        lines += [f"## {md_escape(tid)}", ""]
        if task_results.get("_verdict"):
            lines += [f"**{md_escape(task_results['_verdict'])}**", ""]
        lines += [md_escape(task_meta_line(task_results)), ""]
        if not task_results.get("_error"):
            chosen = selection.selection_lines(task_results) or [sentence(selection_text(task_results))]
            lines += ["How settings were chosen:", "", *[f"- {md_escape(x)}" for x in chosen], ""]
        for caption, head, rows in task_tables(task_results):
            lines += [caption, "", table_markdown((head, rows))]
        if (examples or {}).get(tid):
            lines += examples_markdown(examples[tid])
        for kind, name in png_names.get(tid, {}).items():
            lines += [f"![{md_escape(tid)} {kind}]({name})", ""]
    lines += ["## Files", "", *(f"- [{name}]({href}): {what}" for name, href, what in LINKS), ""]
    return "\n".join(lines)


__all__ = ["render_markdown", "safe_name", "write_report"]
