"""Base vs SFT vs DPO on the same test items: each metric with a bootstrap CI, paired tests between
every two systems, Holm across the study, and the "which method for which task" verdict.

Shape of one task's results (what `compare_systems` returns; ``results["tasks"][TASK]``)::

    {METRIC: {"base": {"value": v, "ci": [lo, hi]}, "sft": {...}, "dpo": {...},
              "p_values": {"sft_vs_base": p, "dpo_vs_base": p, "dpo_vs_sft": p},
              "p_values_holm": {...},            # added by apply_holm, across the whole study
              "test": "McNemar exact" | "paired bootstrap" | "Wilcoxon signed-rank",
              "higher_is_better": bool},
     ...,
     "_primary": METRIC,                      # the task's first metric: the one the verdict uses
     "_n_items": n, "_unparseable": {system: count},
     "_verdict": "..."}                       # added by the study after apply_holm

Metric keys never start with "_"; task-level keys always do (`metric_names` lists the metrics).
Undefined numbers (no items, a metric that cannot be computed) are None, so results.json stays
valid JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from clinalign.errors import DataError, TaskError
from clinalign.eval.stats import (
    Bootstrapped,
    IndexMetric,
    bootstrap_systems,
    holm,
    mcnemar_exact,
    paired_bootstrap_p,
    wilcoxon_paired,
)
from clinalign.tasks.base import Metric, Prediction, Task

#: the LLM systems of a study (dpo_onpolicy only where the study trains both DPO arms,
#: study/onpolicy.py), then its classical baseline (eval/baselines.py)
ONPOLICY = "dpo_onpolicy"
LLM_SYSTEMS = ("base", "sft", "dpo", ONPOLICY)
TUNED = ("sft", "dpo", ONPOLICY)
#: how verdicts name a system
NAMES = {"base": "base", "sft": "SFT", "dpo": "DPO", ONPOLICY: "on-policy DPO"}
BASELINE = "classical"
SYSTEMS = (*LLM_SYSTEMS, BASELINE)
TEST_NAMES = {"mcnemar": "McNemar exact", "paired_bootstrap": "paired bootstrap", "wilcoxon": "Wilcoxon signed-rank"}
ALPHA = 0.05
CLINICIAN_LIKERT = "likert_clinician"


def metric_names(task_results: Mapping[str, Any]) -> list[str]:
    return [k for k in task_results if not k.startswith("_")]


def ordered_systems(names: Sequence[str]) -> list[str]:
    """base, sft, dpo, dpo_onpolicy, classical first (in that order), then any other system as given."""
    return [s for s in SYSTEMS if s in names] + [s for s in names if s not in SYSTEMS]


def pairs(systems: Sequence[str]) -> list[tuple[str, str]]:
    """(later, earlier) pairs, named ``later_vs_earlier``: sft_vs_base, dpo_vs_base, dpo_vs_sft (with both
    DPO arms also dpo_onpolicy_vs_base, _vs_sft and _vs_dpo), and the baseline against each fine-tuned
    system (classical_vs_sft, classical_vs_dpo). Baseline vs base is no question the study asks, and
    under Holm every extra test costs the others power."""
    order = ordered_systems(systems)
    return [(b, a) for a, b in combinations(order, 2) if not (b == BASELINE and a == "base")]


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def compare_systems(
    task: Task,
    records: Sequence[Any],
    preds: Mapping[str, Sequence[Prediction]],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Every metric of ``task`` for every system with a CI, and the paired test of every two systems.

    All systems are bootstrapped on one draw of item indices (eval/stats.bootstrap_systems), so the
    CI draws double as the paired-bootstrap draws.
    """
    if not preds:
        raise DataError(["no predictions to compare: at least one system is needed"])
    n = len(records)
    for system, p in preds.items():
        if len(p) != n:
            raise DataError([f"predictions of {system!r}: {len(p)} items, expected {n} (one per test record)"])
    systems = ordered_systems(list(preds))
    out: dict[str, Any] = {}
    for metric in task.metrics:
        out[metric.name] = _compare_metric(metric, records, {s: list(preds[s]) for s in systems},
                                           n_boot, seed, alpha)
    out["_primary"] = task.metrics[0].name
    out["_n_items"] = n
    out["_unparseable"] = {s: sum(p is None for p in preds[s]) for s in systems}
    return out


def _compare_metric(metric: Metric, records: Sequence[Any], preds: dict[str, list[Prediction]],
                    n_boot: int, seed: int, alpha: float) -> dict[str, Any]:
    per_item: dict[str, np.ndarray] = {}
    if metric.per_item is not None:
        per_item = {s: np.array([metric.per_item(r, p) for r, p in zip(records, ps, strict=True)], dtype=float)
                    for s, ps in preds.items()}
    elif metric.test in ("mcnemar", "wilcoxon") or metric.mean:
        need = "is declared a mean" if metric.mean else f"uses the {TEST_NAMES[metric.test]} test"
        raise TaskError(f"metric {metric.name!r} {need} but has no per_item scores")
    if metric.test == "mcnemar":
        for s, v in per_item.items():
            if not np.isin(v, (0.0, 1.0)).all():
                raise TaskError(f"metric {metric.name!r} uses McNemar's test but {s!r} has per-item scores "
                                "other than 0/1")
    fns = {s: _index_metric(metric, records, ps, per_item.get(s)) for s, ps in preds.items()}
    return _entry(bootstrap_systems(fns, len(records), n_boot, seed, alpha), per_item, metric.test,
                  metric.higher_is_better)


def _index_metric(metric: Metric, records: Sequence[Any], preds: list[Prediction],
                  per_item: np.ndarray | None) -> IndexMetric:
    """The metric on any resample of the items: a declared mean of per-item scores averages them (each
    item scored once); any other metric is recomputed by the task on the resampled items."""
    if metric.mean:
        assert per_item is not None
        return lambda idx: float(per_item[idx].mean())
    return lambda idx: float(metric.compute([records[i] for i in idx], [preds[i] for i in idx]))


def _entry(boot: Mapping[str, Bootstrapped], per_item: Mapping[str, np.ndarray], test: str,
           higher_is_better: bool) -> dict[str, Any]:
    """One metric's results entry: each system's value and CI, and the paired test of every pair."""
    result: dict[str, Any] = {s: {"value": _num(b.value), "ci": [_num(x) for x in b.ci]} for s, b in boot.items()}
    result["p_values"] = {f"{a}_vs_{b}": _num(_paired_p(test, per_item, boot, a, b)) for a, b in pairs(list(boot))}
    result["test"] = TEST_NAMES[test]
    result["higher_is_better"] = higher_is_better
    return result


def _paired_p(test: str, per_item: Mapping[str, np.ndarray], boot: Mapping[str, Bootstrapped], a: str, b: str
              ) -> float:
    if test == "mcnemar":
        return mcnemar_exact(per_item[a] == 1.0, per_item[b] == 1.0) if per_item[a].size else math.nan
    if test == "wilcoxon":
        return wilcoxon_paired(per_item[a], per_item[b])
    return paired_bootstrap_p(boot[a].samples, boot[b].samples, boot[a].value - boot[b].value)


def likert_metric(per_system: Mapping[str, Mapping[str, float | None]], n_boot: int = 1000,
                  seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Clinician Likert ratings ``{system: {item id: score or None}}`` as one metric entry: mean with a
    bootstrap CI, Wilcoxon between systems, on the items every system has a rating for (pairing
    needs the same items; the count is under ``n_items``)."""
    systems = ordered_systems(list(per_system))
    first = per_system[systems[0]] if systems else {}
    ids = [i for i in first if all(per_system[s].get(i) is not None for s in systems)]
    scores = {s: np.array([per_system[s][i] for i in ids], dtype=float) for s in systems}
    fns: dict[str, IndexMetric] = {s: (lambda idx, v=scores[s]: float(v[idx].mean())) for s in systems}
    result = _entry(bootstrap_systems(fns, len(ids), n_boot, seed, alpha), scores, "wilcoxon", True)
    result["n_items"] = len(ids)
    return result


def apply_holm(results: dict[str, Any]) -> dict[str, Any]:
    """Add ``p_values_holm`` to every metric: Holm's correction over every comparison of the study
    (all tasks, metrics and system pairs together). Modifies and returns ``results``."""
    flat: dict[str, float | None] = {}
    for tid, task_results in results["tasks"].items():
        for m in metric_names(task_results):
            for pair, p in task_results[m].get("p_values", {}).items():
                flat[f"{tid}\0{m}\0{pair}"] = p
    adjusted = holm(flat)
    for tid, task_results in results["tasks"].items():
        for m in metric_names(task_results):
            entry = task_results[m]
            entry["p_values_holm"] = {pair: adjusted[f"{tid}\0{m}\0{pair}"] for pair in entry.get("p_values", {})}
    return results


def fmt_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "p=n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def significantly_better(entry: Mapping[str, Any], a: str, b: str, alpha: float = ALPHA) -> bool:
    """Is system ``a`` significantly better than ``b`` on this metric (Holm p where present)?"""
    p = p_between(entry, a, b)
    va, vb = entry.get(a, {}).get("value"), entry.get(b, {}).get("value")
    if p is None or va is None or vb is None or p >= alpha or va == vb:
        return False
    return (va > vb) == bool(entry.get("higher_is_better", True))


def p_between(entry: Mapping[str, Any], a: str, b: str) -> float | None:
    """The p-value of the a/b comparison whichever way it is named; Holm-adjusted where available."""
    table = entry.get("p_values_holm") or entry.get("p_values", {})
    return table.get(f"{a}_vs_{b}", table.get(f"{b}_vs_{a}"))


def primary_metric(task_results: Mapping[str, Any]) -> str | None:
    """Clinician ratings, where present, decide; otherwise the task's first metric."""
    if CLINICIAN_LIKERT in task_results:
        return CLINICIAN_LIKERT
    names = metric_names(task_results)
    return task_results.get("_primary", names[0] if names else None)


def verdict(task_results: Mapping[str, Any], alpha: float = ALPHA) -> str:
    """"Which method for which task", derived from the primary metric's paired tests (never written
    by hand). "Significant" means p < alpha after Holm when apply_holm has run."""
    m = primary_metric(task_results)
    if m is None:
        return "No metric: nothing to compare"
    e = task_results[m]
    line = _llm_verdict(e, m, alpha)
    if ONPOLICY in e and "dpo" in e:
        line += ". " + _onpolicy_verdict(e, m, alpha)
    drops = [d for s in TUNED if s in e and "base" in e and (d := _drop(e, s, alpha))]
    if drops:
        line += ". " + "; ".join(drops)
    if BASELINE in e:
        line += ". " + _baseline_verdict(e, m, alpha)
    return line


def _onpolicy_verdict(e: Mapping[str, Any], m: str, alpha: float) -> str:
    """On-policy vs off-policy DPO, both from the same model, on the same test items."""
    on, off = e[ONPOLICY].get("value"), e["dpo"].get("value")
    if on is None or off is None:
        return f"No comparison of on- and off-policy DPO ({m})"
    vals = f"{on:.3f} vs {off:.3f}, {fmt_p(p_between(e, ONPOLICY, 'dpo'))}{', Holm' if e.get('p_values_holm') else ''}"
    if significantly_better(e, ONPOLICY, "dpo", alpha):
        return f"On-policy DPO better than off-policy DPO ({m} {vals})"
    if significantly_better(e, "dpo", ONPOLICY, alpha):
        return f"On-policy DPO worse than off-policy DPO ({m} {vals})"
    return f"On-policy DPO not significantly different from off-policy DPO ({m} {vals})"


def _drop(e: Mapping[str, Any], s: str, alpha: float) -> str | None:
    """A fine-tuned system worse than base: significant after Holm, or only on the raw p (a committee
    must see a possible harm even when the correction leaves it unproven)."""
    if significantly_better(e, "base", s, alpha):
        return (f"{NAMES[s]} significantly worse than base ({fmt_p(p_between(e, s, 'base'))}"
                f"{', Holm' if e.get('p_values_holm') else ''})")
    raw = {"p_values": e.get("p_values", {}), "base": e["base"], s: e[s],
           "higher_is_better": e.get("higher_is_better", True)}
    if e.get("p_values_holm") and significantly_better(raw, "base", s, alpha):
        return f"{NAMES[s]} worse than base (raw {fmt_p(p_between(raw, s, 'base'))}, not significant after Holm)"
    return None


def _baseline_verdict(e: Mapping[str, Any], m: str, alpha: float) -> str:
    """Does the better fine-tuned system beat the classical baseline on the same items?"""
    tuned = [s for s in TUNED if s in e and e[s].get("value") is not None]
    b = e[BASELINE].get("value")
    if not tuned or b is None:
        return "No comparison with the classical baseline"
    sign = 1 if e.get("higher_is_better", True) else -1
    best = max(tuned, key=lambda s: sign * e[s]["value"])
    tag = ", Holm" if e.get("p_values_holm") else ""
    p = fmt_p(p_between(e, best, BASELINE)) + tag
    vals = f"{NAMES[best]} {e[best]['value']:.3f} vs classical {b:.3f}"
    if significantly_better(e, best, BASELINE, alpha):
        return f"Fine-tuning beats the classical baseline ({vals}, {p})"
    if significantly_better(e, BASELINE, best, alpha):
        return f"The classical baseline beats every fine-tuned model ({vals}, {p}): fine-tuning does not pay here"
    if sign * (e[best]["value"] - b) < 0:
        return f"Fine-tuning does not beat the classical baseline ({vals}, {p})"
    return f"Fine-tuning not significantly better than the classical baseline ({vals}, {p})"


def _llm_verdict(e: Mapping[str, Any], m: str, alpha: float) -> str:
    present = [s for s in LLM_SYSTEMS if s in e and s != ONPOLICY]  # the on-policy arm has its own sentence
    tag = ", Holm" if e.get("p_values_holm") else ""

    def p(a: str, b: str) -> str:
        return fmt_p(p_between(e, a, b)) + tag

    def better(a: str, b: str) -> bool:
        return significantly_better(e, a, b, alpha)

    if "base" not in present or len(present) < 2:
        return f"No comparison ({m}): only {', '.join(present) or 'no system'} evaluated"
    if present == ["base", "sft"] or present == ["base", "dpo"]:
        s = present[1]
        if better(s, "base"):
            return f"{s.upper()} better than base ({m}, {p(s, 'base')})"
        return f"No gain ({m}): {s.upper()} not significantly better than base ({p(s, 'base')})"
    gain_sft, gain_dpo = better("sft", "base"), better("dpo", "base")
    if better("dpo", "sft") and (gain_dpo or gain_sft):
        return f"DPO best ({m}): better than SFT ({p('dpo', 'sft')}) and base ({p('dpo', 'base')})"
    if better("sft", "dpo") and gain_sft:
        return f"SFT best ({m}): better than DPO ({p('sft', 'dpo')}) and base ({p('sft', 'base')})"
    if gain_sft:
        return (f"SFT sufficient ({m}): better than base ({p('sft', 'base')}); "
                f"DPO not significantly better than SFT ({p('dpo', 'sft')})")
    if gain_dpo:
        return (f"DPO needed ({m}): better than base ({p('dpo', 'base')}); "
                f"SFT not significantly better than base ({p('sft', 'base')})")
    return (f"No gain ({m}): neither SFT ({p('sft', 'base')}) nor DPO ({p('dpo', 'base')}) "
            "significantly better than base")
