"""compare_systems, Holm across a study and the verdict, on a small fake task (no model needed)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from clinalign.errors import DataError, TaskError
from clinalign.eval.compare import apply_holm, compare_systems, likert_metric, verdict
from clinalign.eval.stats import holm, mcnemar_exact, wilcoxon_paired
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
    apply_holm(results)
    flat = {f"{t}/{m}/{k}": p for t, tr in results["tasks"].items() for m in ("f1_yes", "accuracy", "likert")
            for k, p in tr[m]["p_values"].items()}
    expected = holm(flat)
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
    """CIs, paired bootstrap p-values and Holm of compare_systems/apply_holm equal eval/stats' own
    functions called directly: one draw of items serves every system and every pair."""
    from clinalign.eval.compare import pairs
    from clinalign.eval.stats import bootstrap_ci, paired_bootstrap

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
    results = apply_holm({"tasks": {"t": out}})
    flat = {f"{m}/{k}": p for m in ("f1_yes", "accuracy", "likert") for k, p in out[m]["p_values"].items()}
    for key, p in holm(flat).items():
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
