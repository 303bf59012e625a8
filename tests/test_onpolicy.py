"""On-policy pairs (study/onpolicy_pairs.py) and the task judges they rank samples by."""

from __future__ import annotations

import json

import pytest

from clinalign.cli import run
from clinalign.data.pairs import preference_pairs
from clinalign.errors import ConfigError
from clinalign.study.onpolicy_pairs import load_policy, sample_pairs
from clinalign.synthetic import generate
from clinalign.tasks import get_task


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(str(tiny_model_dir))


def test_closed_set_judge_is_exact_label():
    task = get_task("uti_classification")
    rec = generate(task, 1, seed=0)[0]
    gold = task.answer(rec)
    wrong = next(c for c in task.choices if c != gold)
    assert task.judge(rec, gold) == 1.0 and task.judge(rec, f"  {gold}.") == 1.0
    assert task.judge(rec, wrong) == 0.0 and task.judge(rec, "unsure") == 0.0


def test_discharge_judge_ranks_the_gold_summary_above_every_perturbation():
    task = get_task("discharge_summary")
    for rec in generate(task, 5, seed=1):
        gold = task.judge(rec, task.answer(rec))
        assert gold >= 5.0  # Likert 5 plus a tenth of its recall
        for pair in preference_pairs(task, [rec], strategy="all"):
            assert task.judge(rec, pair["rejected"]) < gold, pair["strategy"]


def test_closed_set_pairs_are_deterministic_and_reject_a_wrong_answer(policy):
    model, tok, fp = policy
    task = get_task("uti_classification")
    recs = generate(task, 6, seed=4)
    a, stats = sample_pairs(task, model, tok, recs, samples=3, temperature=1.0, seed=7, fingerprint=fp)
    b, _ = sample_pairs(task, model, tok, recs, samples=3, temperature=1.0, seed=7, fingerprint=fp)
    assert a == b and len(a) == 6
    for rec, p in zip(recs, a, strict=True):
        assert p["chosen"] == task.answer(rec) != p["rejected"]
        assert task.judge(rec, p["rejected"]) == 0.0 and p["provenance"]["rejected_score"] == 0.0
        assert p["provenance"]["model"] == fp and len(p["provenance"]["sample_scores"]) == 3
    assert stats["samples"] == 18 and 0.0 <= stats["sample_accuracy"] <= 1.0
    flat = [s for p in a for s in p["provenance"]["sample_scores"]]
    assert stats["sample_accuracy"] == pytest.approx(sum(flat) / len(flat))


class _ByLength:
    """A generation task whose judge prefers longer answers (and ties everything when ``flat``)."""

    def __init__(self, flat: bool = False):
        self.inner, self.flat = get_task("discharge_summary"), flat

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def judge(self, record, answer):
        return 0.0 if self.flat else float(len(answer))


def test_generation_pairs_are_best_vs_worst_sample_and_ties_give_no_pair(policy):
    model, tok, fp = policy
    task = _ByLength()
    recs = generate(task.inner, 3, seed=2)
    pairs, stats = sample_pairs(task, model, tok, recs, samples=4, seed=3, max_new_tokens=12, fingerprint=fp)
    again, _ = sample_pairs(task, model, tok, recs, samples=4, seed=3, max_new_tokens=12, fingerprint=fp)
    other, _ = sample_pairs(task, model, tok, recs, samples=4, seed=4, max_new_tokens=12, fingerprint=fp)
    assert pairs == again and pairs != other
    assert len(pairs) + stats["ties_skipped"] == 3 and pairs
    for p in pairs:
        scores = p["provenance"]["sample_scores"]
        assert p["chosen"] != p["rejected"]
        assert (p["provenance"]["chosen_score"], p["provenance"]["rejected_score"]) == (max(scores), min(scores))
        assert len(p["chosen"]) > len(p["rejected"])
    none, st = sample_pairs(_ByLength(flat=True), model, tok, recs, samples=4, seed=3, max_new_tokens=12)
    assert none == [] and st["ties_skipped"] == 3
    with pytest.raises(ConfigError, match="best vs worst"):
        sample_pairs(task, model, tok, recs, samples=1)


def test_cli_from_model_writes_judged_pairs(tiny_model_dir, tmp_path):
    task = get_task("hyponatremia_urine")
    data = tmp_path / "h.jsonl"
    data.write_text("".join(json.dumps(r.model_dump()) + "\n" for r in generate(task, 5, seed=0)))
    out = tmp_path / "pairs.jsonl"
    args = ["data", "pairs", "hyponatremia_urine", str(data), "--from-model", str(tiny_model_dir), "--samples", "2",
            "--temperature", "0.7", "--seed", "1", "--out", str(out)]
    assert run(args) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    first = out.read_text()
    assert run(args) == 0 and out.read_text() == first
    recs = {r.id: r for r in generate(task, 5, seed=0)}
    assert len(rows) == 5
    for row in rows:
        rec = recs[row["id"].split(":")[0]]
        assert row["strategy"] == "on_policy" and row["chosen"] == task.answer(rec) != row["rejected"]
        assert task.judge(rec, row["rejected"]) == 0.0


def test_declared_generation_judge_is_mean_of_rouge_l_and_fact_recall():
    from pathlib import Path

    task = get_task(str(Path(__file__).resolve().parents[1] / "configs" / "tasks" / "example_generation.yaml"))
    rec = task.record_type(id="1", findings="Right lower lobe opacity. No effusion.",
                           impression="Right lower lobe pneumonia. No pleural effusion.",
                           key_findings=["right lower lobe pneumonia", "no pleural effusion"])
    f = 2 * (3 / 6) * (3 / 7) / (3 / 6 + 3 / 7)  # ROUGE-L as in test_task_declared; fact recall 0
    assert task.judge(rec, "Pneumonia in the right lower lobe.") == pytest.approx(f / 2)
    assert task.judge(rec, rec.impression) == pytest.approx(1.0)
    assert task.judge(rec, "RIGHT lower lobe pneumonia") > task.judge(rec, "Pneumonia in the right lower lobe.")
