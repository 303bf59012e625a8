"""The report's header and methods paragraph, generated from the saved study config and the results
(never written by hand), so a committee reads what was actually run: which model, how much data,
how each system was trained, which test each metric used and how p-values were corrected."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clinalign.eval.compare import ALPHA, ONPOLICY, metric_names

STAGES = {"sft": "SFT", "dpo": "DPO"}


def model_name(study: Mapping[str, Any]) -> str:
    """The model by name: "default" is the embedded SmolLM2, anything else is the path or name given."""
    model = str(study.get("model", ""))
    if model == "default":
        from clinalign.models.default import DESCRIPTION

        return DESCRIPTION
    return model


def stage_recipe(stage: str, settings: Mapping[str, Any]) -> str:
    """``key=value`` for every setting of a stage, with the epochs and learning rate the trainer falls
    back to when the config leaves them out (train/config.py), so the recipe is complete."""
    from clinalign.train.config import DEFAULT_EPOCHS, DEFAULT_LR

    s = dict(settings)
    if s.get("epochs") is None and s.get("max_steps") is None:
        s["epochs"] = DEFAULT_EPOCHS[stage]
    if s.get("lr") is None:
        s["lr"] = DEFAULT_LR[(stage, bool(s.get("lora", True)))]
    return ", ".join(f"{k}={v}" for k, v in sorted(s.items()))


def task_recipes(study: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """task id -> stage -> recipe, merged per task as the study runner merges them."""
    from clinalign.study.config import merge_settings

    config = study.get("config") or {}
    return {t["id"]: {stage: stage_recipe(stage, merge_settings(config.get(stage) or {}, t.get(stage) or {}))
                      for stage in STAGES} for t in config.get("tasks") or ()}


def methods(results: Mapping[str, Any]) -> list[str]:
    """The methods paragraph as sentences (plain text; the renderers escape it)."""
    study = results.get("study", {})
    config = study.get("config") or {}
    tasks = results.get("tasks", {})
    out: list[str] = []
    sizes = [f"{tid} {s['train']}/{s.get('val', 0)}/{s.get('test', 0)}"
             for tid, t in tasks.items() if "train" in (s := t.get("_split") or {})]
    if sizes:
        out.append("Records per split (train/val/test): " + "; ".join(sizes) + ".")
    dpo_from = study.get("dpo_from", config.get("dpo_from", "sft"))
    out.append(f"Systems: base is the model unchanged; SFT is trained on prompt/completion pairs of the "
               f"training split; DPO on preference pairs, starting from the {'SFT model' if dpo_from == 'sft' else 'base model'}.")
    if any(ONPOLICY in t[m] for t in tasks.values() for m in metric_names(t)):
        out.append("DPO on-policy: the same DPO recipe from the same starting model, on pairs of the model's own "
                   "samples judged by the task (best vs worst, or gold vs its most probable wrong answer), "
                   "round after round; DPO is the off-policy arm (the task's built pairs).")
    for tid, recipe in task_recipes(study).items():
        out.append(f"{tid}: " + "; ".join(f"{STAGES[st]} {r}" for st, r in recipe.items()) + ".")
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
