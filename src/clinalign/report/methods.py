"""The report's methods: prose generated from the results (never written by hand) and a compact table of
the training settings each stage actually ran with (``_settings``: read back by the study from every
stage's saved config.yaml), so a committee reads what was run: which model, which data, how each
system was trained and from what, how settings were chosen, what the baseline and the metrics are, which
test each comparison used and how p-values were corrected."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clinalign.eval.compare import ONPOLICY, metric_names, ordered_systems
from clinalign.models.default import describe_model
from clinalign.report.selection import per_fold
from clinalign.report.summary import grouped, multiplicity_text, searched, source_text
from clinalign.report.tables import LABELS, Table


def model_name(study: Mapping[str, Any]) -> str:
    """The model by name (models/default.describe_model): the embedded default with its source, a hub id,
    or the name a local folder's config gives it, never a bare cache path."""
    return describe_model(str(study.get("model", "")))


def splits(task_results: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(label, split.json) of each split a task ran on: its one split unlabelled, or every fold of a
    k-fold study labelled ``fold k``."""
    return per_fold(task_results.get("_split"))


# -- the settings table ------------------------------------------------------------------------------

class _NotSet:
    def __repr__(self) -> str:
        return "NOT_SET"


#: in a task's differences, a setting the common ones have and the task's stage did not set (the
#: trainer's default applied)
NOT_SET = _NotSet()


@dataclass(frozen=True)
class StageSettings:
    """One training stage across the study's tasks: the common settings (each key's value in most of
    the tasks that ran the stage) and, per task, only where it differs (``NOT_SET`` for a common key the
    task's stage lacks); a task that ran with exactly the common settings is not listed. For every task,
    `task_settings` of the two gives back exactly its ``_settings`` entry."""

    stage: str
    common: dict[str, Any]
    per_task: dict[str, dict[str, Any]]

    def task_settings(self, task: str) -> dict[str, Any]:
        merged = {**self.common, **self.per_task.get(task, {})}
        return {k: v for k, v in merged.items() if v is not NOT_SET}


def _common(per: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Each key set in more than half of the tasks, at the value most of them ran with (the first
    task's on a tie)."""
    out: dict[str, Any] = {}
    keys = dict.fromkeys(k for s in per.values() for k in s)
    for k in keys:
        values = [s[k] for s in per.values() if k in s]
        if 2 * len(values) <= len(per) and len(per) > 1:
            continue
        out[k] = max(values, key=lambda v: sum(x == v for x in values))  # max keeps the first of equals
    return out


def stage_settings(results: Mapping[str, Any]) -> list[StageSettings]:
    ran: dict[str, dict[str, dict[str, Any]]] = {}
    for tid, t in results.get("tasks", {}).items():
        for stage, settings in (t.get("_settings") or {}).items():
            ran.setdefault(stage, {})[tid] = dict(settings)
    out = []
    for stage in ordered_systems(list(ran)):
        per = ran[stage]
        common = _common(per)
        diffs = {tid: {**{k: v for k, v in s.items() if k not in common or common[k] != v},
                       **{k: NOT_SET for k in common if k not in s}} for tid, s in per.items()}
        out.append(StageSettings(stage, common, {tid: d for tid, d in diffs.items() if d}))
    return out


def fmt_setting(value: Any) -> str:
    if value is NOT_SET:
        return "(trainer default)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(fmt_setting(v) for v in value)
    return "default" if value is None else str(value)


def _settings_text(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {fmt_setting(v)}" for k, v in sorted(settings.items())) or "—"


def settings_table(results: Mapping[str, Any]) -> Table | None:
    """Stage | common settings | tasks that differ: the whole of every ``_settings``, in few words."""
    stages = stage_settings(results)
    if not stages:
        return None
    rows = [[LABELS.get(s.stage, s.stage), _settings_text(s.common),
             "; ".join(f"{tid}: {_settings_text(d)}" for tid, d in s.per_task.items()) or "—"]
            for s in stages]
    return ["Stage", "Common settings", "Tasks that differ"], rows


# -- the prose ---------------------------------------------------------------------------------------

def _sizes(tasks: Mapping[str, Mapping[str, Any]]) -> str | None:
    sizes = [f"{tid} " + ", ".join(f"{label} {s['train']}/{s.get('val', 0)}/{s.get('test', 0)}".lstrip()
                                   for label, s in parts)
             for tid, t in tasks.items() if (parts := [(lb, s) for lb, s in splits(t) if "train" in s])]
    return "Records per split (train/val/test): " + "; ".join(sizes) + "." if sizes else None


def _data(tasks: Mapping[str, Mapping[str, Any]]) -> str | None:
    where = {tid: source_text(t["_data"]) for tid, t in tasks.items() if t.get("_data")}
    return f"Where the records came from: {grouped(where)}." if where else None


def _systems(results: Mapping[str, Any]) -> list[str]:
    study, tasks = results.get("study", {}), results.get("tasks", {})
    dpo_from = study.get("dpo_from", (study.get("config") or {}).get("dpo_from", "sft"))
    out = [f"Systems: base is the model unchanged; SFT is trained on prompt/completion pairs of the training split; "
           f"DPO on preference pairs, starting from the {'SFT model' if dpo_from == 'sft' else 'base model'}. "
           "DPO's pairs are built from the training split by each task's pair builder (the study file's pairs:, "
           "else the task's default: for closed-set tasks balanced wrong labels, every label chosen as often as "
           "it is rejected; for summaries a reference with a fact omitted, a false fact added or a dose changed), "
           "or read from a clinicians' pairs file where one is given."]
    if any(ONPOLICY in t[m] for t in tasks.values() for m in metric_names(t)):
        out.append("DPO on-policy: the same DPO recipe from the same starting model, on pairs of the model's own "
                   "samples judged by the task (best vs worst, or gold vs its most probable wrong answer), "
                   "round after round; DPO is the off-policy arm (the task's built pairs).")
    out.append("The table below gives what each training stage ran with, read back from the config.yaml it saved "
               "(values the trainer filled in, and an adapter's shape a stage continued, included).")
    return out


def _selection(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    if any(searched(t) for t in tasks.values()):
        return ("How settings were chosen: where the study file has a tune: block, by a search (Optuna) whose "
                "trials train on the training split and are scored on the validation split with the task's "
                "primary metric, the SFT and DPO arms with the same budget; otherwise fixed in the study file. "
                "The test split plays no part in the choice. Each task's section gives the search space, every "
                "trial's validation score and the chosen values.")
    return ("How settings were chosen: fixed in the study file before the run; no search on validation data is "
            "recorded for this study.")


def _baseline(tasks: Mapping[str, Mapping[str, Any]]) -> str | None:
    described = {tid: t["_baseline"] for tid, t in tasks.items() if t.get("_baseline")}
    if not described:
        return None
    return ("Classical baseline (what a statistician would fit in a minute), trained on the same training split and "
            f"tested on the same items with the same metrics and tests: {grouped(described)}.")


def _scoring(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    text = ("Scoring: closed-set answers are ranked by the log-likelihood of each allowed answer (no parse "
            "failures).")
    if any(metric_names(t) and "_label_distribution" not in t for t in tasks.values()):
        text += (" Free-text answers are generated and scored by the task's rubric: a deterministic rule applied "
                 "to the output and the source note, not a clinician and not a language model; clinician ratings "
                 "replace it where a task gives them (likert_clinician).")
    return text


def _tests(results: Mapping[str, Any]) -> list[str]:
    config = results.get("study", {}).get("config") or {}
    tests: dict[str, set[str]] = {}
    mde = False
    for t in results.get("tasks", {}).values():
        for m in metric_names(t):
            tests.setdefault(m, set()).add(str(t[m].get("test", "")) or "n/a")
            mde = mde or bool(t[m].get("mde"))
    if not tests:
        return []
    n_boot = (config.get("eval") or {}).get("n_boot")
    out = ["Tests (paired, on the same test items): "
           + "; ".join(f"{m}: {', '.join(sorted(ts))}" for m, ts in tests.items()) + ". "
           "McNemar's exact test compares per-item right/wrong; the paired bootstrap resamples the items and "
           "recomputes the metric for both systems; Wilcoxon's signed-rank test compares per-item scores.",
           f"Intervals: 95% bootstrap CIs{f' ({n_boot} resamples)' if n_boot else ''}. "
           f"Multiple comparisons: {multiplicity_text(results)}."]
    if mde:
        out.append("Power: each comparison states its minimum detectable difference (MDE), the smallest "
                   "difference its test could have detected with 80% power at α = 0.05 on these items; a "
                   "comparison that finds nothing rules out only differences above it.")
    return out


def methods(results: Mapping[str, Any]) -> list[str]:
    """The methods as paragraphs of plain text (the renderers escape them)."""
    tasks = results.get("tasks", {})
    data = " ".join(x for x in (_sizes(tasks), _data(tasks)) if x)
    paragraphs = [data, " ".join(_systems(results)), _selection(tasks), _baseline(tasks), _scoring(tasks),
                  " ".join(_tests(results))]
    return [p for p in paragraphs if p]


def metric_coverage(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(metric, what it counts and what not) from each metric entry's ``covers`` (tasks/ Metric.covers),
    each (name, text) once; a metric shared by several tasks names them when its text differs."""
    seen: dict[tuple[str, str], list[str]] = {}
    for tid, t in results.get("tasks", {}).items():
        for m in metric_names(t):
            if t[m].get("covers"):
                seen.setdefault((m, t[m]["covers"]), []).append(tid)
    names = [m for m, _ in seen]
    return [(m if names.count(m) == 1 else f"{m} ({', '.join(tids)})", text) for (m, text), tids in seen.items()]
