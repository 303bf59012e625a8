"""Base vs SFT vs DPO on the same test items: each metric with a bootstrap CI, paired tests between
every two systems with the difference each could have detected, a multiplicity correction over a
declared family of comparisons, and the "which method for which task" verdict.

Shape of one task's results (what `compare_systems` returns; ``results["tasks"][TASK]``)::

    {METRIC: {"base": {"value": v, "ci": [lo, hi]}, "sft": {...}, "dpo": {...},
              "p_values": {"sft_vs_base": p, "dpo_vs_base": p, "dpo_vs_sft": p},
              "mde": {"sft_vs_base": d, ...},    # minimum detectable difference, metric units
              "mde_at": {"alpha": 0.05, "power": 0.8},
              "p_values_holm": {...},            # added by apply_multiplicity: family members only,
              "secondary": [pair, ...],          #   the other comparisons (raw p, labelled secondary)
              "correction": "holm",              #   and the method of p_values_holm
              "test": "McNemar exact" | "paired bootstrap" | "Wilcoxon signed-rank",
              "higher_is_better": bool,
              "covers": "..."},                  # what the number counts (tasks/ Metric.covers)
     ...,
     "_primary": METRIC,                      # the task's first metric: the one the verdict uses
     "_n_items": n, "_unparseable": {system: count},
     "_verdict": "..."}                       # added by the study after apply_multiplicity

Metric keys never start with "_"; task-level keys always do (`metric_names` lists the metrics).
Undefined numbers (no items, a metric that cannot be computed) are None, so results.json stays
valid JSON. ``p_values_holm`` keeps its name whichever ``method`` the family uses (``correction``
says which).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from clinalign.errors import DataError, TaskError
from clinalign.eval.stats import (
    ADJUST_METHODS,
    Bootstrapped,
    IndexMetric,
    adjust_pvalues,
    bootstrap_systems,
    mcnemar_exact,
    mde_bootstrap,
    mde_mcnemar,
    mde_wilcoxon,
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
BASELINE = "classical"
NAMES = {"base": "base", "sft": "SFT", "dpo": "DPO", ONPOLICY: "on-policy DPO", BASELINE: "classical"}
SYSTEMS = (*LLM_SYSTEMS, BASELINE)
TEST_NAMES = {"mcnemar": "McNemar exact", "paired_bootstrap": "paired bootstrap", "wilcoxon": "Wilcoxon signed-rank"}
ALPHA = 0.05
#: the power at which each comparison's minimum detectable difference is stated
POWER = 0.8
#: a closed-set system giving one answer to at least this share of the test items has collapsed
COLLAPSE_SHARE = 0.9
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
    alpha: float = ALPHA,
    power: float = POWER,
) -> dict[str, Any]:
    """Every metric of ``task`` for every system with a ``1 - alpha`` CI, and the paired test of every
    two systems with its minimum detectable difference at two-sided ``alpha`` and ``power``
    (eval/stats: nominal alpha, a lower bound once a correction applies).

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
                                           n_boot, seed, alpha, power)
    out["_primary"] = task.metrics[0].name
    out["_n_items"] = n
    out["_unparseable"] = {s: sum(p is None for p in preds[s]) for s in systems}
    return out


def _compare_metric(metric: Metric, records: Sequence[Any], preds: dict[str, list[Prediction]],
                    n_boot: int, seed: int, alpha: float, power: float) -> dict[str, Any]:
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
    entry = _entry(bootstrap_systems(fns, len(records), n_boot, seed, alpha), per_item, metric.test,
                   metric.higher_is_better, alpha, power)
    if metric.covers:  # what the number counts and what not, for the report
        entry["covers"] = metric.covers
    return entry


def _index_metric(metric: Metric, records: Sequence[Any], preds: list[Prediction],
                  per_item: np.ndarray | None) -> IndexMetric:
    """The metric on any resample of the items: a declared mean of per-item scores averages them (each
    item scored once); any other metric is recomputed by the task on the resampled items."""
    if metric.mean:
        assert per_item is not None
        return lambda idx: float(per_item[idx].mean())
    return lambda idx: float(metric.compute([records[i] for i in idx], [preds[i] for i in idx]))


def _entry(boot: Mapping[str, Bootstrapped], per_item: Mapping[str, np.ndarray], test: str,
           higher_is_better: bool, alpha: float, power: float) -> dict[str, Any]:
    """One metric's results entry: each system's value and CI, and the paired test of every pair with
    its minimum detectable difference."""
    result: dict[str, Any] = {s: {"value": _num(b.value), "ci": [_num(x) for x in b.ci]} for s, b in boot.items()}
    tests = {f"{a}_vs_{b}": _paired_test(test, per_item, boot, a, b, alpha, power) for a, b in pairs(list(boot))}
    result["p_values"] = {pair: _num(p) for pair, (p, _) in tests.items()}
    result["mde"] = {pair: _num(d) for pair, (_, d) in tests.items()}
    result["mde_at"] = {"alpha": alpha, "power": power}
    result["test"] = TEST_NAMES[test]
    result["higher_is_better"] = higher_is_better
    return result


def _paired_test(test: str, per_item: Mapping[str, np.ndarray], boot: Mapping[str, Bootstrapped], a: str, b: str,
                 alpha: float, power: float) -> tuple[float, float]:
    """(p, minimum detectable difference) of the a/b comparison under the metric's test."""
    if test == "mcnemar":
        if not per_item[a].size:
            return math.nan, math.nan
        ok_a, ok_b = per_item[a] == 1.0, per_item[b] == 1.0
        return mcnemar_exact(ok_a, ok_b), mde_mcnemar(ok_a, ok_b, alpha, power)
    if test == "wilcoxon":
        return wilcoxon_paired(per_item[a], per_item[b]), mde_wilcoxon(per_item[a], per_item[b], alpha, power)
    return (paired_bootstrap_p(boot[a].samples, boot[b].samples, boot[a].value - boot[b].value),
            mde_bootstrap(boot[a].samples, boot[b].samples, alpha, power))


def likert_metric(per_system: Mapping[str, Mapping[str, float | None]], n_boot: int = 1000,
                  seed: int = 0, alpha: float = ALPHA, power: float = POWER) -> dict[str, Any]:
    """Clinician Likert ratings ``{system: {item id: score or None}}`` as one metric entry: mean with a
    bootstrap CI, Wilcoxon between systems, on the items every system has a rating for (pairing
    needs the same items; the count is under ``n_items``)."""
    systems = ordered_systems(list(per_system))
    first = per_system[systems[0]] if systems else {}
    ids = [i for i in first if all(per_system[s].get(i) is not None for s in systems)]
    scores = {s: np.array([per_system[s][i] for i in ids], dtype=float) for s in systems}
    fns: dict[str, IndexMetric] = {s: (lambda idx, v=scores[s]: float(v[idx].mean())) for s in systems}
    result = _entry(bootstrap_systems(fns, len(ids), n_boot, seed, alpha), scores, "wilcoxon", True, alpha, power)
    result["n_items"] = len(ids)
    result["covers"] = ("mean of the clinicians' 1-5 Likert ratings (clinalign rate) on the items every system "
                        "has a rating for. Not: items some system lacks a rating for")
    return result


#: the comparisons that answer the study's question: does SFT help, does DPO help, does DPO beat SFT,
#: and, where the study trains both DPO arms, does on-policy beat off-policy DPO
PRIMARY_COMPARISONS = ("sft_vs_base", "dpo_vs_base", "dpo_vs_sft", f"{ONPOLICY}_vs_dpo")
#: every comparison a study can make (`pairs` over all systems)
ALL_COMPARISONS = tuple(f"{a}_vs_{b}" for a, b in pairs(SYSTEMS))
#: how verdicts name a correction method
METHOD_NAMES = {"holm": "Holm", "bonferroni": "Bonferroni", "holm-sidak": "Holm-Sidak", "sidak": "Sidak",
                "simes-hochberg": "Hochberg", "hommel": "Hommel", "fdr_bh": "Benjamini-Hochberg",
                "fdr_by": "Benjamini-Yekutieli", "fdr_tsbh": "two-stage Benjamini-Hochberg",
                "fdr_tsbky": "two-stage Benjamini-Krieger-Yekutieli"}

AdjustMethod = Literal["holm", "bonferroni", "holm-sidak", "sidak", "simes-hochberg", "hommel",
                       "fdr_bh", "fdr_by", "fdr_tsbh", "fdr_tsbky"]
assert set(AdjustMethod.__args__) == set(ADJUST_METHODS) == set(METHOD_NAMES)  # type: ignore[attr-defined]


class MultiplicityConfig(BaseModel):
    """The family of comparisons a study corrects for multiplicity, declared before any result is seen.

    Default: each task's primary metric (clinician Likert where rated, else the task's first metric)
    and `PRIMARY_COMPARISONS`, Holm's method: the confirmatory questions of a clinical study, the way
    a trial pre-declares its primary endpoint. Everything else (other metrics; the classical baseline
    against each fine-tuned system; the on-policy arm against base and SFT) is reported with its raw p
    and labelled secondary. The baseline comparisons stay out by default because the one the verdict
    reads (the baseline against the *best* fine-tuned system) is picked by looking at the test
    results, and a family must be fixed in advance; put them in ``comparisons`` to confirm them.

    ``metrics``: ``"primary"``, ``"all"`` or metric names (members wherever a task has them).
    ``comparisons``: ``"all"`` or names such as ``"dpo_vs_sft"`` (`ALL_COMPARISONS`).
    ``method``: a statsmodels ``multipletests`` method. ``EVERY_COMPARISON`` is the family of every
    comparison of every metric of every task.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: Literal["primary", "all"] | tuple[str, ...] = "primary"
    comparisons: Literal["all"] | tuple[str, ...] = PRIMARY_COMPARISONS
    method: AdjustMethod = "holm"

    @field_validator("comparisons")
    @classmethod
    def _known_comparisons(cls, v: Any) -> Any:
        for name in () if v == "all" else v:
            if name not in ALL_COMPARISONS:
                close = difflib.get_close_matches(name, ALL_COMPARISONS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(ALL_COMPARISONS)}"
                raise ValueError(f"unknown comparison {name!r}{hint}")
        return v

    @field_validator("metrics", "comparisons")
    @classmethod
    def _not_empty(cls, v: Any) -> Any:
        if not isinstance(v, str) and not v:
            raise ValueError("an empty family corrects nothing: name at least one, or 'all'")
        return v

    def covers(self, task_results: Mapping[str, Any], metric: str, comparison: str) -> bool:
        """Is this comparison of this metric of this task a member of the family?"""
        if self.metrics == "primary":
            metric_in = metric == primary_metric(task_results)
        else:
            metric_in = self.metrics == "all" or metric in self.metrics
        return metric_in and (self.comparisons == "all" or comparison in self.comparisons)


EVERY_COMPARISON = MultiplicityConfig(metrics="all", comparisons="all")


def apply_multiplicity(results: dict[str, Any], family: MultiplicityConfig = MultiplicityConfig()
                       ) -> dict[str, Any]:
    """Correct the family's p-values together, across all tasks of ``results``, in place.

    Each metric entry gets ``p_values_holm`` (adjusted p of its family members only), ``secondary``
    (its other comparisons: raw p, named secondary in verdicts) and ``correction`` (the method).
    Returns the family as results.json's ``study.multiplicity`` states it: the declaration, its
    ``members`` (task, metric, comparison, raw and adjusted p) and ``n_tests`` (members with a
    defined p: the m the correction divided among).
    """
    members: dict[tuple[str, str, str], float | None] = {}
    for tid, task_results in results["tasks"].items():
        for m in metric_names(task_results):
            for pair, p in task_results[m].get("p_values", {}).items():
                if family.covers(task_results, m, pair):
                    members[(tid, m, pair)] = p
    adjusted = adjust_pvalues(members, family.method)
    for tid, task_results in results["tasks"].items():
        for m in metric_names(task_results):
            entry = task_results[m]
            pvals = entry.get("p_values", {})
            entry["p_values_holm"] = {pair: adjusted[(tid, m, pair)] for pair in pvals if (tid, m, pair) in members}
            entry["secondary"] = [pair for pair in pvals if (tid, m, pair) not in members]
            entry["correction"] = family.method
    return {**family.model_dump(mode="json"),
            "members": [{"task": t, "metric": m, "comparison": c, "p": p, "p_adjusted": adjusted[(t, m, c)]}
                        for (t, m, c), p in members.items()],
            "n_tests": sum(p is not None and not math.isnan(p) for p in members.values())}


def fmt_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "p=n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def significantly_better(entry: Mapping[str, Any], a: str, b: str, alpha: float = ALPHA) -> bool:
    """Is system ``a`` significantly better than ``b`` on this metric? Judged on the corrected p for a
    member of the multiplicity family, on the raw p otherwise (`p_between`)."""
    p = p_between(entry, a, b)
    va, vb = entry.get(a, {}).get("value"), entry.get(b, {}).get("value")
    if p is None or va is None or vb is None or p >= alpha or va == vb:
        return False
    return (va > vb) == bool(entry.get("higher_is_better", True))


def _pair(table: Mapping[str, Any], a: str, b: str) -> str | None:
    """The key of the a/b comparison in ``table``, whichever way it is named."""
    return next((k for k in (f"{a}_vs_{b}", f"{b}_vs_{a}") if k in table), None)


def is_corrected(entry: Mapping[str, Any], a: str, b: str) -> bool:
    """Does the a/b comparison have a multiplicity-corrected p (a member of the family)?"""
    return _pair(entry.get("p_values_holm") or {}, a, b) is not None


def is_secondary(entry: Mapping[str, Any], a: str, b: str) -> bool:
    """A correction ran over the study, and this comparison is outside its family (raw p only)."""
    return "p_values_holm" in entry and not is_corrected(entry, a, b)


def p_between(entry: Mapping[str, Any], a: str, b: str) -> float | None:
    """The p-value of the a/b comparison whichever way it is named: corrected for a family member,
    raw otherwise."""
    adj = entry.get("p_values_holm") or {}
    key = _pair(adj, a, b)
    if key is not None:
        return adj[key]
    raw = entry.get("p_values", {})
    key = _pair(raw, a, b)
    return raw[key] if key is not None else None


def mde_between(entry: Mapping[str, Any], a: str, b: str) -> float | None:
    """The a/b comparison's minimum detectable difference (None when unknown or undefined)."""
    table = entry.get("mde") or {}
    key = _pair(table, a, b)
    return table[key] if key is not None else None


def _method(entry: Mapping[str, Any]) -> str:
    return METHOD_NAMES.get(entry.get("correction", "holm"), str(entry.get("correction")))


def p_text(entry: Mapping[str, Any], a: str, b: str) -> str:
    """``p=0.012, Holm`` for a family member, ``p=0.012, raw p, secondary`` outside the family, plain
    ``p=0.012`` before any correction has run."""
    tag = f", {_method(entry)}" if is_corrected(entry, a, b) else ", raw p, secondary" if is_secondary(entry, a, b) else ""
    return fmt_p(p_between(entry, a, b)) + tag


def power_text(entry: Mapping[str, Any], comparisons: Sequence[tuple[str, str]], n_items: int | None,
               alpha: float = ALPHA) -> str:
    """What the comparisons that found nothing could not have seen: "; a difference below 0.143 could
    not have been detected with 80% power on 40 items" (with several, each figure is named by its
    comparison). Empty for significant or undefined comparisons and for entries without power figures."""
    missed = [(a, b) for a, b in comparisons if "mde" in entry and (p := p_between(entry, a, b)) is not None
              and not math.isnan(p) and p >= alpha]
    named = len(missed) > 1

    def label(a: str, b: str) -> str:
        return f" ({NAMES.get(a, a)} vs {NAMES.get(b, b)})" if named else ""

    sized = [(a, b, d) for a, b in missed if (d := mde_between(entry, a, b)) is not None]
    text = ""
    if sized:
        power = (entry.get("mde_at") or {}).get("power", POWER)
        figures = " and ".join(f"{d:.3f}{label(a, b)}" for a, b, d in sized)
        on = f" on {n_items} items" if n_items else ""
        text = (f"; {'differences' if len(sized) > 1 else 'a difference'} below {figures} could not have "
                f"been detected with {power:.0%} power{on}")
    for a, b in missed:
        if mde_between(entry, a, b) is None:
            text += f"; no power figure{label(a, b)}: the paired differences have no spread"
    return text


def primary_metric(task_results: Mapping[str, Any]) -> str | None:
    """Clinician ratings, where present, decide; otherwise the task's first metric."""
    if CLINICIAN_LIKERT in task_results:
        return CLINICIAN_LIKERT
    names = metric_names(task_results)
    return task_results.get("_primary", names[0] if names else None)


@dataclass(frozen=True)
class Collapse:
    """A system that gave one answer to (nearly) every test item."""

    system: str
    label: str
    count: int
    n_items: int
    gold_count: int


def collapsed(distribution: Mapping[str, Mapping[str, int]], share: float = COLLAPSE_SHARE) -> list[Collapse]:
    """Systems of a closed-set task answering one label to at least ``share`` of the items, from the
    study's ``_label_distribution`` (``{"gold" | system: {label: count}}``). Such a system's score is
    the score of always giving that answer, whatever its paired tests say."""
    gold = distribution.get("gold", {})
    out = []
    for system, counts in distribution.items():
        n = sum(counts.values())
        if system == "gold" or n == 0:
            continue
        label, count = max(counts.items(), key=lambda kv: kv[1])
        if count >= share * n:
            out.append(Collapse(system, label, count, n, int(gold.get(label, 0))))
    return out


def collapse_text(c: Collapse, entry: Mapping[str, Any] | None, metric: str | None) -> str:
    """"DPO answers 'B' to 40 of 40 items (collapsed): its accuracy 0.250 reflects that one answer;
    'B' is 10 of 40 gold labels"."""
    name = "The classical baseline" if c.system == BASELINE else NAMES.get(c.system, c.system)
    line = f"{name} answers {c.label!r} to {c.count} of {c.n_items} items (collapsed)"
    value = (entry or {}).get(c.system, {}).get("value")
    score = f"its {metric} {value:.3f} reflects that one answer; " if value is not None else ""
    return f"{line}: {score}{c.label!r} is {c.gold_count} of {c.n_items} gold labels"


def verdict(task_results: Mapping[str, Any], alpha: float = ALPHA) -> str:
    """"Which method for which task", derived from the primary metric's paired tests (never written
    by hand). "Significant" means p < alpha, on the corrected p for a member of the multiplicity
    family and on the raw p (said so) otherwise; a comparison that finds nothing says how large a
    difference it could have missed; a closed-set system giving one answer to nearly every item is
    flagged."""
    m = primary_metric(task_results)
    if m is None:
        return "No metric: nothing to compare"
    e = task_results[m]
    n = e.get("n_items", task_results.get("_n_items"))
    line = _llm_verdict(e, m, alpha, n)
    if ONPOLICY in e and "dpo" in e:
        line += ". " + _onpolicy_verdict(e, m, alpha, n)
    drops = [d for s in TUNED if s in e and "base" in e and (d := _drop(e, s, alpha))]
    if drops:
        line += ". " + "; ".join(drops)
    if BASELINE in e:
        line += ". " + _baseline_verdict(e, m, alpha, n)
    for c in collapsed(task_results.get("_label_distribution") or {}):
        line += ". " + collapse_text(c, e, m)
    return line


def _onpolicy_verdict(e: Mapping[str, Any], m: str, alpha: float, n: int | None) -> str:
    """On-policy vs off-policy DPO, both from the same model, on the same test items."""
    on, off = e[ONPOLICY].get("value"), e["dpo"].get("value")
    if on is None or off is None:
        return f"No comparison of on- and off-policy DPO ({m})"
    vals = f"{on:.3f} vs {off:.3f}, {p_text(e, ONPOLICY, 'dpo')}"
    if significantly_better(e, ONPOLICY, "dpo", alpha):
        return f"On-policy DPO better than off-policy DPO ({m} {vals})"
    if significantly_better(e, "dpo", ONPOLICY, alpha):
        return f"On-policy DPO worse than off-policy DPO ({m} {vals})"
    return (f"On-policy DPO not significantly different from off-policy DPO ({m} {vals})"
            f"{power_text(e, [(ONPOLICY, 'dpo')], n, alpha)}")


def _drop(e: Mapping[str, Any], s: str, alpha: float) -> str | None:
    """A fine-tuned system worse than base: significant (after correction for a family member), or
    only on the raw p of a corrected comparison (a committee must see a possible harm even when the
    correction leaves it unproven)."""
    if significantly_better(e, "base", s, alpha):
        return f"{NAMES[s]} significantly worse than base ({p_text(e, s, 'base')})"
    raw = {"p_values": e.get("p_values", {}), "base": e["base"], s: e[s],
           "higher_is_better": e.get("higher_is_better", True)}
    if is_corrected(e, s, "base") and significantly_better(raw, "base", s, alpha):
        return (f"{NAMES[s]} worse than base (raw {fmt_p(p_between(raw, s, 'base'))}, "
                f"not significant after {_method(e)})")
    return None


def _baseline_verdict(e: Mapping[str, Any], m: str, alpha: float, n: int | None) -> str:
    """Does the better fine-tuned system beat the classical baseline on the same items?"""
    tuned = [s for s in TUNED if s in e and e[s].get("value") is not None]
    b = e[BASELINE].get("value")
    if not tuned or b is None:
        return "No comparison with the classical baseline"
    sign = 1 if e.get("higher_is_better", True) else -1
    best = max(tuned, key=lambda s: sign * e[s]["value"])
    p = p_text(e, best, BASELINE)
    vals = f"{NAMES[best]} {e[best]['value']:.3f} vs classical {b:.3f}"
    if significantly_better(e, best, BASELINE, alpha):
        return f"Fine-tuning beats the classical baseline ({vals}, {p})"
    if significantly_better(e, BASELINE, best, alpha):
        return f"The classical baseline beats every fine-tuned model ({vals}, {p}): fine-tuning does not pay here"
    power = power_text(e, [(best, BASELINE)], n, alpha)
    if sign * (e[best]["value"] - b) < 0:
        return f"Fine-tuning does not beat the classical baseline ({vals}, {p}){power}"
    return f"Fine-tuning not significantly better than the classical baseline ({vals}, {p}){power}"


def _llm_verdict(e: Mapping[str, Any], m: str, alpha: float, n: int | None) -> str:
    present = [s for s in LLM_SYSTEMS if s in e and s != ONPOLICY]  # the on-policy arm has its own sentence

    def p(a: str, b: str) -> str:
        return p_text(e, a, b)

    def better(a: str, b: str) -> bool:
        return significantly_better(e, a, b, alpha)

    def power(*comparisons: tuple[str, str]) -> str:
        return power_text(e, comparisons, n, alpha)

    if "base" not in present or len(present) < 2:
        return f"No comparison ({m}): only {', '.join(present) or 'no system'} evaluated"
    if present == ["base", "sft"] or present == ["base", "dpo"]:
        s = present[1]
        if better(s, "base"):
            return f"{s.upper()} better than base ({m}, {p(s, 'base')})"
        return f"No gain ({m}): {s.upper()} not significantly better than base ({p(s, 'base')}){power((s, 'base'))}"
    gain_sft, gain_dpo = better("sft", "base"), better("dpo", "base")
    if better("dpo", "sft") and (gain_dpo or gain_sft):
        return f"DPO best ({m}): better than SFT ({p('dpo', 'sft')}) and base ({p('dpo', 'base')})"
    if better("sft", "dpo") and gain_sft:
        return f"SFT best ({m}): better than DPO ({p('sft', 'dpo')}) and base ({p('sft', 'base')})"
    if gain_sft:
        return (f"SFT sufficient ({m}): better than base ({p('sft', 'base')}); "
                f"DPO not significantly better than SFT ({p('dpo', 'sft')}){power(('dpo', 'sft'))}")
    if gain_dpo:
        return (f"DPO needed ({m}): better than base ({p('dpo', 'base')}); "
                f"SFT not significantly better than base ({p('sft', 'base')}){power(('sft', 'base'))}")
    return (f"No gain ({m}): neither SFT ({p('sft', 'base')}) nor DPO ({p('dpo', 'base')}) "
            f"significantly better than base{power(('sft', 'base'), ('dpo', 'base'))}")

