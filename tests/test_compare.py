"""compare_systems, Holm across a study and the verdict, on a small fake task (no model needed)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from clinalign.errors import DataError, TaskError
from clinalign.eval.compare import (
    EVERY_COMPARISON,
    apply_multiplicity,
    compare_systems,
    fmt_p,
    likert_metric,
    verdict,
)
from clinalign.eval.stats import adjust_pvalues, mcnemar_exact, wilcoxon_paired
from clinalign.synthetic import generate
from clinalign.tasks import metrics as M
from clinalign.tasks.base import Metric, Record, Task


class FakeRecord(Record):
    label: str
    length: int = 3


def _score(record: FakeRecord, pred: str | None) -> float:
    """A Likert-like 1-5 score: 5 when right, else depends on the item."""
    return 5.0 if pred == record.label else float(1 + record.length % 3)


class FakeTask(Task):
    id = "fake_yes_no"
    description = "yes/no"
    record_type = FakeRecord
    choices = ("yes", "no")

    def prompt(self, record: Any) -> str:
        return f"item {record.id}?"

    def answer(self, record: Any) -> str:
        return record.label

    def parse(self, text: str) -> str | None:
        t = text.strip().lower()
        return t if t in self.choices else None

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (
            Metric("f1_yes", "paired_bootstrap", lambda rs, ps: M.f1_for([r.label for r in rs], ps, "yes")),
            Metric("accuracy", "mcnemar", lambda rs, ps: M.accuracy([r.label for r in rs], ps),
                   per_item=lambda r, p: float(p == r.label)),
            Metric("likert", "wilcoxon", lambda rs, ps: float(np.mean([_score(r, p) for r, p in zip(rs, ps, strict=True)])),
                   per_item=_score),
        )

    @property
    def rejected_builders(self):
        return {"wrong_label": lambda r, rng: "no" if r.label == "yes" else "yes"}

    def generate(self, n: int, seed: int) -> list[Any]:
        rng = random.Random(seed)
        return [FakeRecord(id=str(i), label=rng.choice(self.choices), length=rng.randint(1, 9)) for i in range(n)]


TASK = FakeTask()


def _systems(n: int = 120, seed: int = 0):
    """base: 55% right, sft: 75%, dpo: 95% (dpo fixes sft's errors), some base answers unparseable."""
    recs = TASK.generate(n, seed)
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    flip = {"yes": "no", "no": "yes"}
    base = [r.label if x < 0.55 else (None if x > 0.95 else flip[r.label]) for r, x in zip(recs, u, strict=True)]
    sft = [r.label if x < 0.75 else flip[r.label] for r, x in zip(recs, u, strict=True)]
    dpo = [r.label if x < 0.95 else flip[r.label] for r, x in zip(recs, u, strict=True)]
    return recs, {"base": base, "sft": sft, "dpo": dpo}


def test_shape_values_and_tests():
    recs, preds = _systems()
    out = compare_systems(TASK, recs, preds, n_boot=200, seed=0)
    assert out["_primary"] == "f1_yes"
    assert out["_n_items"] == len(recs)
    assert out["_unparseable"] == {"base": sum(p is None for p in preds["base"]), "sft": 0, "dpo": 0}
    assert out["_unparseable"]["base"] > 0
    golds = [r.label for r in recs]
    for name, test in (("f1_yes", "paired bootstrap"), ("accuracy", "McNemar exact"), ("likert", "Wilcoxon signed-rank")):
        e = out[name]
        assert e["test"] == test and e["higher_is_better"] is True
        assert set(e["p_values"]) == {"sft_vs_base", "dpo_vs_base", "dpo_vs_sft"}
        for s in ("base", "sft", "dpo"):
            lo, hi = e[s]["ci"]
            assert lo <= e[s]["value"] <= hi
    for s, ps in preds.items():
        assert out["accuracy"][s]["value"] == pytest.approx(M.accuracy(golds, ps))
        assert out["f1_yes"][s]["value"] == pytest.approx(M.f1_for(golds, ps, "yes"))
    # p-values are the named tests on the paired items
    ok = {s: [p == g for p, g in zip(ps, golds, strict=True)] for s, ps in preds.items()}
    assert out["accuracy"]["p_values"]["dpo_vs_sft"] == pytest.approx(mcnemar_exact(ok["dpo"], ok["sft"]))
    lik = {s: [_score(r, p) for r, p in zip(recs, ps, strict=True)] for s, ps in preds.items()}
    assert out["likert"]["p_values"]["sft_vs_base"] == pytest.approx(wilcoxon_paired(lik["sft"], lik["base"]))
    assert out["f1_yes"]["p_values"]["dpo_vs_base"] < 0.01
    # seeded: the same numbers again
    assert compare_systems(TASK, recs, preds, n_boot=200, seed=0) == out


def test_subset_of_systems_and_identical_systems():
    recs, preds = _systems(60)
    out = compare_systems(TASK, recs, {"sft": preds["sft"], "base": preds["sft"]}, n_boot=200)
    for m in ("f1_yes", "accuracy", "likert"):
        assert set(out[m]["p_values"]) == {"sft_vs_base"}
        assert out[m]["p_values"]["sft_vs_base"] == pytest.approx(1.0)
        assert "dpo" not in out[m]
    single = compare_systems(TASK, recs, {"base": preds["base"]}, n_boot=50)
    assert single["accuracy"]["p_values"] == {}
    assert "No comparison" in verdict(single)


def test_bad_inputs():
    recs, preds = _systems(20)
    with pytest.raises(DataError, match="expected 20"):
        compare_systems(TASK, recs, {"base": preds["base"][:-1]})
    with pytest.raises(DataError):
        compare_systems(TASK, recs, {})

    class NoPerItem(FakeTask):
        @property
        def metrics(self):
            return (Metric("accuracy", "mcnemar", lambda rs, ps: 0.5),)

    with pytest.raises(TaskError, match="per_item"):
        compare_systems(NoPerItem(), recs, {"base": preds["base"]})


def test_apply_holm_over_the_study_and_verdicts():
    recs, preds = _systems(150)
    big = compare_systems(TASK, recs, preds, n_boot=200, seed=0)
    same = compare_systems(TASK, recs, {"base": preds["base"], "sft": preds["base"], "dpo": preds["base"]},
                           n_boot=200, seed=0)
    results = {"tasks": {"a": big, "b": same}}
    apply_multiplicity(results, EVERY_COMPARISON)
    flat = {f"{t}/{m}/{k}": p for t, tr in results["tasks"].items() for m in ("f1_yes", "accuracy", "likert")
            for k, p in tr[m]["p_values"].items()}
    expected = adjust_pvalues(flat)
    assert len(flat) == 18
    for key, p in expected.items():
        t, m, k = key.split("/")
        assert results["tasks"][t][m]["p_values_holm"][k] == pytest.approx(p)
        assert results["tasks"][t][m]["p_values_holm"][k] >= results["tasks"][t][m]["p_values"][k]
    v = verdict(results["tasks"]["a"])
    assert v.startswith("DPO best (f1_yes)") and "Holm" in v
    assert verdict(results["tasks"]["b"]).startswith("No gain (f1_yes): neither SFT")


def _entry(values: dict[str, float], p: dict[str, float]) -> dict[str, Any]:
    e = {s: {"value": v, "ci": [v, v]} for s, v in values.items()}
    e.update(p_values=p, test="paired bootstrap", higher_is_better=True)
    return {"f1": e, "_primary": "f1"}


def test_verdict_cases():
    sft_ok = _entry({"base": 0.5, "sft": 0.8, "dpo": 0.82}, {"sft_vs_base": 0.001, "dpo_vs_base": 0.001,
                                                             "dpo_vs_sft": 0.41})
    assert verdict(sft_ok) == ("SFT sufficient (f1): better than base (p=0.001); "
                               "DPO not significantly better than SFT (p=0.410)")
    dpo_needed = _entry({"base": 0.5, "sft": 0.55, "dpo": 0.7}, {"sft_vs_base": 0.3, "dpo_vs_base": 0.01,
                                                                 "dpo_vs_sft": 0.08})
    assert verdict(dpo_needed).startswith("DPO needed (f1)")
    worse = _entry({"base": 0.8, "sft": 0.5, "dpo": 0.6}, {"sft_vs_base": 0.001, "dpo_vs_base": 0.001,
                                                          "dpo_vs_sft": 0.01})
    assert verdict(worse).startswith("No gain")  # significant, but in the wrong direction
    lower_better = _entry({"base": 0.8, "sft": 0.5}, {"sft_vs_base": 0.001})
    lower_better["f1"]["higher_is_better"] = False
    assert verdict(lower_better).startswith("SFT better than base")


def test_likert_metric_uses_items_every_system_rated():
    per = {"base": {"1": 2, "2": 3, "3": 2, "4": None, "5": 1, "6": 2},
           "sft": {"1": 4, "2": 4, "3": 5, "4": 5, "5": 3, "6": 4},
           "dpo": {"1": 4, "2": 5, "3": 5, "4": 5, "5": 4}}
    out = likert_metric(per, n_boot=200, seed=0)
    assert out["n_items"] == 4  # ids 1, 2, 3, 5
    assert out["base"]["value"] == pytest.approx(2.0)
    assert out["sft"]["value"] == pytest.approx(4.0)
    assert out["test"] == "Wilcoxon signed-rank"
    assert out["p_values"]["sft_vs_base"] == pytest.approx(wilcoxon_paired([4, 4, 5, 3], [2, 3, 2, 1]))
    assert out["base"]["ci"][0] <= 2.0 <= out["base"]["ci"][1]


def test_verdict_flags_a_raw_p_drop_that_holm_leaves_unproven():
    e = _entry({"base": 0.8, "sft": 0.7, "dpo": 0.85}, {"sft_vs_base": 0.017, "dpo_vs_base": 0.3,
                                                        "dpo_vs_sft": 0.2})
    e["f1"]["p_values_holm"] = {"sft_vs_base": 0.051, "dpo_vs_base": 0.6, "dpo_vs_sft": 0.4}
    assert verdict(e).endswith(". SFT worse than base (raw p=0.017, not significant after Holm)")
    e["f1"]["p_values_holm"]["sft_vs_base"] = 0.03
    assert verdict(e).endswith(". SFT significantly worse than base (p=0.030, Holm)")
    e["f1"]["p_values"]["sft_vs_base"] = 0.2  # neither raw nor Holm significant: no flag
    e["f1"]["p_values_holm"]["sft_vs_base"] = 0.6
    assert "worse" not in verdict(e)
    e["f1"]["p_values"]["dpo_vs_base"] = 0.01  # significant raw p, but DPO is better: a gain, not a drop
    assert "worse" not in verdict(e)


class MeanTask(FakeTask):
    """The fake task with accuracy declared a mean of its per-item scores (as the built-in tasks do)."""

    @property
    def metrics(self) -> tuple[Metric, ...]:
        f1, acc, lik = super().metrics
        return (f1, Metric("accuracy", "paired_bootstrap", acc.compute, per_item=acc.per_item, mean=True), lik)


def test_the_study_numbers_are_the_stats_functions_on_the_same_inputs():
    """CIs, paired bootstrap p-values and Holm of compare_systems/apply_multiplicity equal eval/stats' own
    functions called directly: one draw of items serves every system and every pair."""
    from clinalign.eval.compare import pairs
    from clinalign.eval.stats import paired_bootstrap
    from helpers import bootstrap_ci

    recs, preds = _systems(90, seed=3)
    n, n_boot, seed = len(recs), 300, 7
    out = compare_systems(MeanTask(), recs, preds, n_boot=n_boot, seed=seed)

    def f1(ps):
        return lambda idx: M.f1_for([recs[i].label for i in idx], [ps[i] for i in idx], "yes")

    def acc(ps):
        right = np.array([float(p == r.label) for r, p in zip(recs, ps, strict=True)])
        return lambda idx: float(right[idx].mean())

    for name, fn in (("f1_yes", f1), ("accuracy", acc)):
        for s, ps in preds.items():
            assert tuple(out[name][s]["ci"]) == bootstrap_ci(fn(ps), n, n_boot=n_boot, seed=seed)
            assert out[name][s]["value"] == fn(ps)(np.arange(n))
        for a, b in pairs(list(preds)):
            assert out[name]["p_values"][f"{a}_vs_{b}"] == paired_bootstrap(fn(preds[a]), fn(preds[b]), n,
                                                                            n_boot=n_boot, seed=seed)
    results = {"tasks": {"t": out}}
    apply_multiplicity(results, EVERY_COMPARISON)
    flat = {f"{m}/{k}": p for m in ("f1_yes", "accuracy", "likert") for k, p in out[m]["p_values"].items()}
    for key, p in adjust_pvalues(flat).items():
        m, k = key.split("/")
        assert results["tasks"]["t"][m]["p_values_holm"][k] == p


def test_metrics_declared_a_mean_are_the_mean_of_their_per_item_scores():
    """The declaration decides the bootstrap path, so it must be true of every built-in task."""
    from clinalign.tasks import all_tasks

    checked = 0
    for task in all_tasks():
        tid = task.id
        recs = generate(task, 12, seed=1)
        answers = [task.answer(r) for r in recs]
        preds = [task.parse(a) for a in answers[:6]] + [None] * 3 + [task.parse(a) for a in answers[9:]]
        for m in task.metrics:
            if m.mean:
                assert m.per_item is not None
                mean = float(np.mean([m.per_item(r, p) for r, p in zip(recs, preds, strict=True)]))
                assert m.compute(recs, preds) == pytest.approx(mean, rel=1e-12), (tid, m.name)
                checked += 1
    assert checked >= 8  # accuracy of four closed-set tasks (two for triage), the summary rubric's three

def test_verdict_compares_the_two_dpo_arms():
    p = {"sft_vs_base": 0.001, "dpo_vs_base": 0.001, "dpo_vs_sft": 0.41, "dpo_onpolicy_vs_base": 0.001,
         "dpo_onpolicy_vs_sft": 0.02, "dpo_onpolicy_vs_dpo": 0.03}
    better = _entry({"base": 0.5, "sft": 0.8, "dpo": 0.82, "dpo_onpolicy": 0.9}, p)
    line = verdict(better)
    assert line.startswith("SFT sufficient (f1)")  # the base/SFT/DPO sentence is the single-arm one
    assert "On-policy DPO better than off-policy DPO (f1 0.900 vs 0.820, p=0.030)" in line
    worse = _entry({"base": 0.5, "sft": 0.8, "dpo": 0.82, "dpo_onpolicy": 0.7}, p)
    assert "On-policy DPO worse than off-policy DPO (f1 0.700 vs 0.820, p=0.030)" in verdict(worse)
    flat = _entry({"base": 0.5, "sft": 0.8, "dpo": 0.82, "dpo_onpolicy": 0.85}, {**p, "dpo_onpolicy_vs_dpo": 0.4})
    assert "On-policy DPO not significantly different from off-policy DPO (f1 0.850 vs 0.820, p=0.400)" in verdict(flat)
    assert "off-policy" not in verdict(_entry({"base": 0.5, "sft": 0.8, "dpo": 0.82}, p))


def test_pairs_with_both_dpo_arms():
    from clinalign.eval.compare import pairs

    assert pairs(["dpo", "sft", "base"]) == [("sft", "base"), ("dpo", "base"), ("dpo", "sft")]
    assert [f"{a}_vs_{b}" for a, b in pairs(["base", "sft", "dpo", "dpo_onpolicy", "classical"])] == [
        "sft_vs_base", "dpo_vs_base", "dpo_onpolicy_vs_base", "dpo_vs_sft", "dpo_onpolicy_vs_sft",
        "classical_vs_sft", "dpo_onpolicy_vs_dpo", "classical_vs_dpo", "classical_vs_dpo_onpolicy"]


def test_every_comparison_states_its_minimum_detectable_difference():
    """``mde`` sits beside ``p_values`` with the same pairs, computed by each metric's own test."""
    from clinalign.eval.compare import pairs
    from clinalign.eval.stats import bootstrap_systems, mde_bootstrap, mde_mcnemar, mde_wilcoxon

    recs, preds = _systems(90, seed=3)
    n, n_boot, seed = len(recs), 300, 7
    out = compare_systems(TASK, recs, preds, n_boot=n_boot, seed=seed)
    golds = [r.label for r in recs]
    ok = {s: [p == g for p, g in zip(ps, golds, strict=True)] for s, ps in preds.items()}
    lik = {s: [_score(r, p) for r, p in zip(recs, ps, strict=True)] for s, ps in preds.items()}
    f1 = {s: (lambda idx, ps=ps: M.f1_for([golds[i] for i in idx], [ps[i] for i in idx], "yes")) for s, ps in preds.items()}
    boot = bootstrap_systems(f1, n, n_boot, seed)
    for m in ("f1_yes", "accuracy", "likert"):
        assert set(out[m]["mde"]) == set(out[m]["p_values"])
        assert out[m]["mde_at"] == {"alpha": 0.05, "power": 0.8}
    for a, b in pairs(list(preds)):
        k = f"{a}_vs_{b}"
        assert out["accuracy"]["mde"][k] == pytest.approx(mde_mcnemar(ok[a], ok[b]))
        assert out["likert"]["mde"][k] == pytest.approx(mde_wilcoxon(lik[a], lik[b]))
        assert out["f1_yes"]["mde"][k] == pytest.approx(mde_bootstrap(boot[a].samples, boot[b].samples))
        assert 0 < out["f1_yes"]["mde"][k] < 1
    # a stricter level is asked for a larger difference; identical systems have no bootstrap figure
    strict = compare_systems(TASK, recs, preds, n_boot=n_boot, seed=seed, alpha=0.01)
    assert strict["f1_yes"]["mde"]["dpo_vs_sft"] > out["f1_yes"]["mde"]["dpo_vs_sft"]
    same = compare_systems(TASK, recs, {"base": preds["sft"], "sft": preds["sft"]}, n_boot=100)
    assert same["f1_yes"]["mde"] == {"sft_vs_base": None} and same["likert"]["mde"] == {"sft_vs_base": None}
    assert same["accuracy"]["mde"]["sft_vs_base"] == pytest.approx(6 / 90)  # the exact test's floor
    liked = likert_metric({"base": {"1": 2, "2": 3, "3": 2}, "sft": {"1": 4, "2": 4, "3": 5}}, n_boot=50)
    assert liked["mde"]["sft_vs_base"] == pytest.approx(mde_wilcoxon([4, 4, 5], [2, 3, 2]))


def _study(with_arms: bool = False) -> dict[str, Any]:
    """Two tasks: one with clear differences, one where every system is base."""
    recs, preds = _systems(150)
    if with_arms:
        preds = {**preds, "dpo_onpolicy": preds["dpo"], "classical": preds["sft"]}
    same = {s: preds["base"] for s in preds}
    return {"tasks": {"a": compare_systems(TASK, recs, preds, n_boot=200, seed=0),
                      "b": compare_systems(TASK, recs, same, n_boot=200, seed=0)}}


def test_default_family_is_the_primary_metric_and_the_study_questions():
    from clinalign.eval.compare import MultiplicityConfig

    results = _study(with_arms=True)
    family = apply_multiplicity(results)
    asked = ["sft_vs_base", "dpo_vs_base", "dpo_vs_sft", "dpo_onpolicy_vs_dpo"]
    members = {(t, "f1_yes", c): results["tasks"][t]["f1_yes"]["p_values"][c] for t in ("a", "b") for c in asked}
    assert [(x["task"], x["metric"], x["comparison"]) for x in family["members"]] == list(members)
    assert family["n_tests"] == 8 and family["method"] == "holm"
    assert family["metrics"] == "primary" and family["comparisons"] == asked
    expected = adjust_pvalues({"/".join(k): p for k, p in members.items()})
    for t in ("a", "b"):
        f1 = results["tasks"][t]["f1_yes"]
        assert f1["p_values_holm"] == pytest.approx({c: expected[f"{t}/f1_yes/{c}"] for c in asked})
        assert f1["secondary"] == [c for c in f1["p_values"] if c not in asked]
        assert "classical_vs_dpo" in f1["secondary"] and "dpo_onpolicy_vs_base" in f1["secondary"]
        assert f1["correction"] == "holm"
        for m in ("accuracy", "likert"):  # secondary metrics: raw p only
            assert results["tasks"][t][m]["p_values_holm"] == {}
            assert results["tasks"][t][m]["secondary"] == list(results["tasks"][t][m]["p_values"])
    assert family["members"][0]["p_adjusted"] == results["tasks"]["a"]["f1_yes"]["p_values_holm"]["sft_vs_base"]
    # a task with clinician ratings: those decide, so they are its primary metric in the family
    results["tasks"]["b"]["likert_clinician"] = results["tasks"]["b"].pop("likert")
    family = apply_multiplicity(results, MultiplicityConfig())
    assert {(x["task"], x["metric"]) for x in family["members"]} == {("a", "f1_yes"), ("b", "likert_clinician")}


def test_family_of_named_metrics_comparisons_and_method():
    from clinalign.eval.compare import MultiplicityConfig

    results = _study()
    family = apply_multiplicity(results, MultiplicityConfig(metrics=["accuracy", "likert"],
                                                            comparisons=["dpo_vs_sft"], method="bonferroni"))
    assert family["n_tests"] == 4
    for t in ("a", "b"):
        for m in ("accuracy", "likert"):
            e = results["tasks"][t][m]
            assert e["p_values_holm"] == {"dpo_vs_sft": pytest.approx(min(1.0, 4 * e["p_values"]["dpo_vs_sft"]))}
            assert e["secondary"] == ["sft_vs_base", "dpo_vs_base"] and e["correction"] == "bonferroni"
        assert results["tasks"][t]["f1_yes"]["p_values_holm"] == {}
    # every comparison of every metric: the family the study used to correct over
    family = apply_multiplicity(results, EVERY_COMPARISON)
    assert family["n_tests"] == 18 and all(e["secondary"] == [] for t in results["tasks"].values()
                                           for m, e in t.items() if not m.startswith("_"))


def test_a_family_with_a_typo_fails_at_load():
    from pydantic import ValidationError

    from clinalign.eval.compare import MultiplicityConfig

    with pytest.raises(ValidationError, match="unknown comparison 'dpo_vs_stf'; did you mean 'dpo_vs_sft'"):
        MultiplicityConfig(comparisons=["dpo_vs_stf"])
    with pytest.raises(ValidationError, match="empty family"):
        MultiplicityConfig(metrics=[])
    with pytest.raises(ValidationError):
        MultiplicityConfig(method="bh")
    with pytest.raises(ValidationError):
        MultiplicityConfig(family="all")
    assert MultiplicityConfig.model_validate({"comparisons": "all", "method": "fdr_bh"}).comparisons == "all"


def test_verdict_judges_secondary_comparisons_on_raw_p_and_says_so():
    p = {"sft_vs_base": 0.001, "dpo_vs_base": 0.001, "dpo_vs_sft": 0.41, "classical_vs_sft": 0.01,
         "classical_vs_dpo": 0.02}
    e = _entry({"base": 0.5, "sft": 0.8, "dpo": 0.82, "classical": 0.6}, p)
    e["f1"]["p_values_holm"] = {"sft_vs_base": 0.003, "dpo_vs_base": 0.003, "dpo_vs_sft": 0.41}
    e["f1"]["secondary"] = ["classical_vs_sft", "classical_vs_dpo"]
    line = verdict(e)
    assert line.startswith("SFT sufficient (f1): better than base (p=0.003, Holm); "
                           "DPO not significantly better than SFT (p=0.410, Holm)")
    assert line.endswith("Fine-tuning beats the classical baseline (DPO 0.820 vs classical 0.600, "
                         "p=0.020, raw p, secondary)")
    e["f1"]["correction"] = "fdr_bh"
    assert "better than base (p=0.003, Benjamini-Hochberg)" in verdict(e)
    # the same secondary p in a family: judged on its corrected p, which is not significant
    e["f1"]["p_values_holm"]["classical_vs_dpo"] = 0.06
    assert "Fine-tuning not significantly better than the classical baseline (DPO 0.820 vs classical 0.600, " \
           "p=0.060, Benjamini-Hochberg)" in verdict(e)


def test_verdict_states_what_a_non_significant_comparison_could_not_have_seen():
    p = {"sft_vs_base": 0.001, "dpo_vs_base": 0.001, "dpo_vs_sft": 0.352}
    e = _entry({"base": 0.5, "sft": 0.8, "dpo": 0.82}, p)
    e["f1"]["mde"] = {"sft_vs_base": 0.12, "dpo_vs_base": 0.13, "dpo_vs_sft": 0.1412}
    e["_n_items"] = 40
    assert verdict(e) == ("SFT sufficient (f1): better than base (p=0.001); DPO not significantly better than SFT "
                          "(p=0.352); a difference below 0.141 could not have been detected with 80% power on "
                          "40 items")
    nothing = _entry({"base": 0.5, "sft": 0.55, "dpo": 0.52}, {"sft_vs_base": 0.3, "dpo_vs_base": 0.7,
                                                              "dpo_vs_sft": 0.6})
    nothing["f1"]["mde"] = {"sft_vs_base": 0.143, "dpo_vs_base": 0.15, "dpo_vs_sft": 0.1}
    nothing["_n_items"] = 40
    assert verdict(nothing) == ("No gain (f1): neither SFT (p=0.300) nor DPO (p=0.700) significantly better than "
                                "base; differences below 0.143 (SFT vs base) and 0.150 (DPO vs base) could not "
                                "have been detected with 80% power on 40 items")
    # significant in the wrong direction: nothing was missed there, so only SFT's figure is given
    nothing["f1"]["dpo"]["value"] = 0.3
    nothing["f1"]["p_values"]["dpo_vs_base"] = 0.001
    assert "base; a difference below 0.143 could not have been detected" in verdict(nothing)
    nothing["f1"]["mde"]["sft_vs_base"] = None
    assert verdict(nothing).endswith("significantly better than base; no power figure: the paired differences "
                                     "have no spread. DPO significantly worse than base (p=0.001)")


def test_verdict_power_from_compare_systems_output():
    """SFT identical to base (no spread: no figure); DPO a few answers away from base (not significant:
    its figure)."""
    recs, preds = _systems(40, seed=1)
    flip = {"yes": "no", "no": "yes"}
    near = [flip[p] if i < 3 and p else p for i, p in enumerate(preds["sft"])]
    out = compare_systems(TASK, recs, {"base": preds["sft"], "sft": preds["sft"], "dpo": near}, n_boot=200)
    e = out["f1_yes"]
    assert e["mde"]["sft_vs_base"] is None and e["p_values"]["dpo_vs_base"] > 0.05
    assert verdict(out) == (f"No gain (f1_yes): neither SFT (p=1.000) nor DPO ({fmt_p(e['p_values']['dpo_vs_base'])}) "
                            f"significantly better than base; a difference below {e['mde']['dpo_vs_base']:.3f} "
                            "(DPO vs base) could not have been detected with 80% power on 40 items; no power figure "
                            "(SFT vs base): the paired differences have no spread")


def test_collapsed_systems_are_flagged_in_the_verdict():
    from clinalign.eval.compare import Collapse, collapsed

    dist = {"gold": {"A": 10, "B": 10, "C": 10, "D": 10}, "base": {"A": 12, "B": 9, "C": 10, "D": 9},
            "sft": {"A": 36, "B": 4}, "dpo": {"B": 40}, "classical": {"C": 35, "D": 5}}
    assert collapsed(dist) == [Collapse("sft", "A", 36, 40, 10), Collapse("dpo", "B", 40, 40, 10)]
    assert [c.system for c in collapsed(dist, share=0.85)] == ["sft", "dpo", "classical"]
    task = _entry({"base": 0.3, "sft": 0.275, "dpo": 0.25}, {"sft_vs_base": 0.8, "dpo_vs_base": 0.6,
                                                            "dpo_vs_sft": 0.9})
    task["f1"]["higher_is_better"] = True
    task["_label_distribution"] = dist
    line = verdict(task)
    assert line.startswith("No gain (f1)")
    assert line.endswith(". SFT answers 'A' to 36 of 40 items (collapsed): its f1 0.275 reflects that one answer; "
                         "'A' is 10 of 40 gold labels. DPO answers 'B' to 40 of 40 items (collapsed): its "
                         "f1 0.250 reflects that one answer; 'B' is 10 of 40 gold labels")
    assert "collapsed" not in verdict({**task, "_label_distribution": {**dist, "sft": {"A": 35, "B": 5},
                                                                       "dpo": {"A": 20, "B": 20}}})
