"""The report's header and methods paragraph, generated from the saved study config and the results
(never written by hand), so a committee reads what was actually run: which model, how much data,
how each system was trained, which test each metric used and how p-values were corrected."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clinalign.eval.compare import ALPHA, ONPOLICY, metric_names
from clinalign.report.tables import LABELS


def model_name(study: Mapping[str, Any]) -> str:
    """The model by name: "default" is the embedded SmolLM2, anything else is the path or name given."""
    model = str(study.get("model", ""))
    if model == "default":
        from clinalign.models.default import DESCRIPTION

        return DESCRIPTION
    return model


def splits(task_results: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(label, split.json) of each split a task ran on: its one split unlabelled, or every fold of a
    k-fold study labelled ``fold k``."""
    split = task_results.get("_split") or {}
    if isinstance(split, Mapping):
        return [("", split)] if split else []
    return [(f"fold {s['fold']}", s) for s in split]


def stage_recipe(settings: Mapping[str, Any]) -> str:
    """``key=value`` for every setting of a training stage."""
    return ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))


def task_recipes(results: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """task id -> system -> recipe, from each task's ``_settings``: what its training stages ran with,
    as the study runner read it back from their saved configs."""
    return {tid: {system: stage_recipe(s) for system, s in t["_settings"].items()}
            for tid, t in results.get("tasks", {}).items() if t.get("_settings")}


def methods(results: Mapping[str, Any]) -> list[str]:
    """The methods paragraph as sentences (plain text; the renderers escape it)."""
    study = results.get("study", {})
    config = study.get("config") or {}
    tasks = results.get("tasks", {})
    out: list[str] = []
    sizes = [f"{tid} " + ", ".join(f"{label} {s['train']}/{s.get('val', 0)}/{s.get('test', 0)}".lstrip()
                                   for label, s in parts)
             for tid, t in tasks.items() if (parts := [(lb, s) for lb, s in splits(t) if "train" in s])]
    if sizes:
        out.append("Records per split (train/val/test): " + "; ".join(sizes) + ".")
    dpo_from = study.get("dpo_from", config.get("dpo_from", "sft"))
    out.append(f"Systems: base is the model unchanged; SFT is trained on prompt/completion pairs of the "
               f"training split; DPO on preference pairs, starting from the {'SFT model' if dpo_from == 'sft' else 'base model'}.")
    if any(ONPOLICY in t[m] for t in tasks.values() for m in metric_names(t)):
        out.append("DPO on-policy: the same DPO recipe from the same starting model, on pairs of the model's own "
                   "samples judged by the task (best vs worst, or gold vs its most probable wrong answer), "
                   "round after round; DPO is the off-policy arm (the task's built pairs).")
    for tid, recipe in task_recipes(results).items():
        out.append(f"{tid}: " + "; ".join(f"{LABELS.get(system, system)} {r}" for system, r in recipe.items()) + ".")
    tests: dict[str, set[str]] = {}
    n_tests = 0
    for t in tasks.values():
        for m in metric_names(t):
            tests.setdefault(m, set()).add(str(t[m].get("test", "")) or "n/a")
            n_tests += sum(p is not None for p in t[m].get("p_values", {}).values())
    if tests:
        out.append("Tests (paired, on the same test items): "
                   + "; ".join(f"{m}: {', '.join(sorted(ts))}" for m, ts in tests.items()) + ".")
    n_boot = (config.get("eval") or {}).get("n_boot")
    out.append(f"Intervals: 95% bootstrap CIs{f' ({n_boot} resamples)' if n_boot else ''}. "
               f"Multiple comparisons: Holm correction across all {n_tests} comparisons of the study; "
               f"significant means Holm-adjusted p < {ALPHA}.")
    return out
