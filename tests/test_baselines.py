"""The classical baseline (eval/baselines.py): deterministic, its metrics what a hand computation gives,
and each featurisation doing what it is for."""

from __future__ import annotations

import pytest

from clinalign.data.splits import split_records
from clinalign.eval import baselines
from clinalign.synthetic import generate
from clinalign.tasks import get_task

UTI = get_task("uti_classification")


def _uti(i: int, text: str, label: str):
    return UTI.record_type(id=f"u{i}", text=text, label=label, note_type="ED note")


YES = ["dysuria frequency nitrite positive culture grew e coli", "burning urination nitrite positive pyuria",
       "suprapubic pain dysuria culture grew klebsiella", "urgency dysuria leukocyte esterase positive culture"]
NO = ["ankle sprain after a fall ice and rest", "cough and congestion viral infection",
      "ankle swelling after a fall x ray normal", "congestion and sore throat viral"]


def test_tfidf_baseline_is_deterministic_and_its_f1_is_the_hand_computation():
    train = [_uti(i, t, "yes") for i, t in enumerate(YES)] + [_uti(10 + i, t, "no") for i, t in enumerate(NO)]
    test = [_uti(20, "dysuria and nitrite positive", "yes"),       # urinary words -> yes (true positive)
            _uti(21, "culture grew e coli with dysuria", "yes"),   # -> yes (true positive)
            _uti(22, "ankle sprain after a fall", "no"),           # -> no (true negative)
            _uti(23, "viral cough and congestion", "yes"),         # mislabelled on purpose -> no (false negative)
            _uti(24, "burning urination and pyuria", "no")]        # mislabelled on purpose -> yes (false positive)
    rows = baselines.predict(UTI, train, test)
    assert rows == baselines.predict(UTI, train, test)  # same records, same rows
    assert [r["pred"] for r in rows] == ["yes", "yes", "no", "no", "yes"]
    assert all(set(r["probs"]) == {"yes", "no"} and sum(r["probs"].values()) == pytest.approx(1) for r in rows)
    scores = UTI.evaluate(test, [r["pred"] for r in rows])
    tp, fp, fn = 2, 1, 1
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert scores["f1_yes"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert scores["accuracy"] == pytest.approx(3 / 5)


def test_numeric_panels_are_binned_so_the_rule_thresholds_are_learned():
    """Hyponatremia's categories are thresholds on four numbers: scaled + quantile-binned values let a
    linear model place them (text TF-IDF of the same panels reached macro F1 0.48 with 112 records)."""
    task = get_task("hyponatremia_urine")
    parts = split_records(task, generate(task, 160, seed=0), val=0.05, test=0.25, seed=0)
    rows = baselines.predict(task, parts["train"], parts["test"])
    assert task.evaluate(parts["test"], [r["pred"] for r in rows])["accuracy"] >= 0.9
    assert "binned" in baselines.describe(task, parts["test"][0])


def test_options_that_vary_per_record_are_ranked_by_their_words():
    task = get_task("clinical_reasoning")
    recs = generate(task, 150, seed=1)
    rows = baselines.predict(task, recs[:110], recs[110:])
    assert all(set(r["probs"]) == set(rec.options) for r, rec in zip(rows, recs[110:], strict=True))
    acc = task.evaluate(recs[110:], [r["pred"] for r in rows])["accuracy"]
    assert acc >= 0.45  # chance is about 0.22 with 4-5 options; letters alone carry nothing


def test_extractive_summary_copies_the_notes_lists():
    task = get_task("discharge_summary")
    rec = generate(task, 1, seed=5)[0]
    row = baselines.predict(task, [], [rec])[0]
    meds = [f.text for f in rec.facts if f.kind == "medication"]
    assert row["text"].startswith("Admitted for ") and all(m in row["text"] for m in meds)
    assert task.evaluate([rec], [row["pred"]])["fact_recall"] >= 0.6
    assert task.evaluate([rec], [row["pred"]])["false_facts"] == 0.0


def test_a_single_training_label_is_the_prediction():
    train = [_uti(i, t, "no") for i, t in enumerate(NO)]
    rows = baselines.predict(UTI, train, [_uti(30, "dysuria", "yes")])
    assert rows[0]["pred"] == "no" and rows[0]["probs"] == {"no": 1.0}
