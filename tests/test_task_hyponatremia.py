"""hyponatremia_urine: the rule at every boundary, impossible input, schema, parser, metrics, builders,
generator. Plain data, no model."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from clinalign.data.io import read_records
from clinalign.errors import DataError, InputError
from clinalign.synthetic import generate
from clinalign.tasks import get_task
from clinalign.tasks.hyponatremia_urine import CATEGORIES, HyponatremiaRecord, classify, near_miss_categories

TASK = get_task("hyponatremia_urine")


@pytest.mark.parametrize("args, expected", [
    # serum osmolality bands: > 295 hypertonic, 275..295 inclusive pseudohyponatremia
    ((120, 295.1, 500, 50, "euvolemic"), "hypertonic"),
    ((120, 330, 500, 50, "hypovolemic"), "hypertonic"),
    ((120, 295, 500, 50, "euvolemic"), "pseudohyponatremia"),
    ((120, 275, 500, 50, "hypervolemic"), "pseudohyponatremia"),
    ((120, 274.9, 500, 50, "euvolemic"), "siadh"),
    # hypotonic: urine osmolality < 100 -> low solute / polydipsia, whatever the volume status
    ((120, 250, 99, 20, "euvolemic"), "low_solute_or_polydipsia"),
    ((120, 250, 99, 40, "hypervolemic"), "low_solute_or_polydipsia"),
    ((120, 250, 99.9, 20, "hypovolemic"), "low_solute_or_polydipsia"),
    # urine osmolality >= 100, urine Na < 30
    ((120, 250, 100, 29, "hypervolemic"), "edematous_state"),
    ((120, 250, 100, 29, "euvolemic"), "extrarenal_sodium_loss"),
    ((120, 250, 100, 29.9, "hypovolemic"), "extrarenal_sodium_loss"),
    # urine Na >= 30: one category per volume status
    ((120, 250, 100, 30, "hypovolemic"), "renal_sodium_loss"),
    ((120, 250, 100, 30, "euvolemic"), "siadh"),
    ((120, 250, 100, 30, "hypervolemic"), "renal_failure"),
    ((134.9, 280, 400, 60, "euvolemic"), "pseudohyponatremia"),
])
def test_classify_every_branch_and_boundary(args, expected):
    assert classify(*args) == expected


@pytest.mark.parametrize("args, message", [
    ((135, 260, 400, 30, "euvolemic"), r"serum_sodium: 135 mmol/L is not hyponatremia"),
    ((142, 290, 400, 30, "euvolemic"), r"serum_sodium: 142 mmol/L is not hyponatremia"),
    ((-120, 260, 400, 30, "euvolemic"), r"serum_sodium: negative value -120"),
    ((120, -1, 400, 30, "euvolemic"), r"serum_osmolality: negative value -1"),
    ((120, 260, -5, 30, "euvolemic"), r"urine_osmolality: negative value -5"),
    ((120, 260, 400, -3, "euvolemic"), r"urine_sodium: negative value -3"),
    ((89, 200, 400, 30, "euvolemic"), r"serum_sodium: 89 is outside the plausible range 90-135"),
    ((120, 2500, 400, 30, "euvolemic"), r"serum_osmolality: 2500 is outside the plausible range 150-450"),
    ((120, 260, 1500, 30, "euvolemic"), r"urine_osmolality: 1500 is outside the plausible range 30-1400"),
    ((120, 260, 400, 350, "euvolemic"), r"urine_sodium: 350 is outside the plausible range 0-300"),
    ((130, 220, 400, 30, "euvolemic"), r"serum_osmolality: 220 mOsm/kg is impossibly low for serum sodium 130"),
    ((120, 250, 80, 60, "euvolemic"), r"urine_sodium: 60 mmol/L is impossibly high for urine osmolality 80"),
    ((120, 260, 400, 30, "dry"), r"volume_status: unknown 'dry'"),
    ((120, 260, 400, 30, "Euvolemic"), r"volume_status: unknown 'Euvolemic'"),
    ((120, float("nan"), 400, 30, "euvolemic"), r"serum_osmolality: not a number"),
    (("120", 260, 400, 30, "euvolemic"), r"serum_sodium: expected a number, got str"),
])
def test_classify_rejects_impossible_input(args, message):
    with pytest.raises(InputError, match=message):
        classify(*args)


def test_consistency_margins_are_inclusive():
    assert classify(130, 230, 400, 30, "euvolemic") == "siadh"  # 2 x 130 - 30 = 230: allowed
    assert classify(120, 250, 100, 60, "euvolemic") == "siadh"  # 2 x 60 = 100 + 20: allowed
    with pytest.raises(InputError):
        classify(120, 250, 100, 60.5, "euvolemic")


def _row(**over) -> dict:
    row = {"id": "p1", "serum_sodium": 124, "serum_osmolality": 258, "urine_osmolality": 480,
           "urine_sodium": 62, "volume_status": "euvolemic", "label": "siadh"}
    return row | over


@pytest.mark.parametrize("over, field, message", [
    ({"serum_sodium": 138}, "serum_sodium", "not hyponatremia"),
    ({"urine_sodium": -4}, "urine_sodium", "negative value -4"),
    ({"serum_osmolality": 3000}, "serum_osmolality", "outside the plausible range"),
    ({"serum_osmolality": 200}, "serum_osmolality", "impossibly low for serum sodium 124"),
    ({"urine_osmolality": 90, "urine_sodium": 70}, "urine_sodium", "impossibly high"),
    ({"volume_status": "dry"}, "volume_status", "hypovolemic"),
    ({"label": "hyponatremia"}, "label", "siadh"),
    ({"serum_sodium": "low"}, "serum_sodium", "number"),
])
def test_schema_reports_file_line_field(tmp_path: Path, over, field, message):
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(_row(id="ok")) + "\n" + json.dumps(_row(**over)) + "\n")
    with pytest.raises(DataError) as e:
        read_records(path, HyponatremiaRecord)
    assert len(e.value.problems) == 1
    assert e.value.problems[0].startswith(f"{path}:2: {field}: ")
    assert message in e.value.problems[0]


def test_schema_keeps_a_label_that_disagrees_with_the_rule(tmp_path: Path):
    path = tmp_path / "h.csv"
    path.write_text("id,serum_sodium,serum_osmolality,urine_osmolality,urine_sodium,volume_status,label\n"
                    "a,124,258,480,62,euvolemic,renal_sodium_loss\n")
    (rec,) = read_records(path, HyponatremiaRecord)
    assert rec.label == "renal_sodium_loss" and rec.serum_sodium == 124.0
    assert TASK.answer(rec) == "renal_sodium_loss"


def test_generator_labels_follow_the_rule_and_are_balanced_unique_deterministic():
    recs = generate(TASK, 2000, seed=11)
    for r in recs:
        assert r.label == classify(r.serum_sodium, r.serum_osmolality, r.urine_osmolality, r.urine_sodium,
                                   r.volume_status)
        assert 105 <= r.serum_sodium < 135
    counts = Counter(r.label for r in recs)
    assert set(counts) == set(CATEGORIES) and max(counts.values()) - min(counts.values()) <= 8
    keys = {(r.serum_sodium, r.serum_osmolality, r.urine_osmolality, r.urine_sodium, r.volume_status) for r in recs}
    assert len(keys) == 2000 and len({r.id for r in recs}) == 2000
    assert len({TASK.prompt(r) for r in recs}) == 2000
    again = generate(TASK, 300, seed=11)
    assert [r.model_dump() for r in again] == [r.model_dump() for r in recs[:300]]
    other = generate(TASK, 300, seed=12)
    assert [r.model_dump() for r in other] != [r.model_dump() for r in again]
    # realism: hypotonic serum osmolality tracks 2 x Na; SIADH urine is not maximally dilute
    for r in recs:
        if r.serum_osmolality < 275:
            assert 2 * r.serum_sodium <= r.serum_osmolality <= 2 * r.serum_sodium + 17
        assert 2 * r.urine_sodium <= r.urine_osmolality


def test_prompt_shows_values_exactly_and_lists_every_category():
    rec = HyponatremiaRecord.model_validate(_row(serum_osmolality=295.1, serum_sodium=126.5, label="hypertonic"))
    p = TASK.prompt(rec)
    assert "295.1" in p and "126.5" in p and "480" in p and "62" in p
    assert "euvolemic" in p
    assert all(c in p for c in CATEGORIES)
    assert TASK.prompt(rec) == p  # stable across calls
    formats = {TASK.prompt(r).splitlines()[2].split()[0] for r in generate(TASK, 100, 0)}
    assert len(formats) >= 4  # several panel layouts


@pytest.mark.parametrize("text, expected", [
    ("siadh", "siadh"),
    ("SIADH", "siadh"),
    ("  The answer is SIADH.", "siadh"),
    ("Syndrome of inappropriate antidiuretic hormone secretion", "siadh"),
    ("primary polydipsia", "low_solute_or_polydipsia"),
    ("Low solute or polydipsia", "low_solute_or_polydipsia"),
    ("beer potomania", "low_solute_or_polydipsia"),
    ("renal_sodium_loss", "renal_sodium_loss"),
    ("Renal sodium loss (diuretics)", "renal_sodium_loss"),
    ("thiazide diuretics", "renal_sodium_loss"),
    ("extrarenal_sodium_loss", "extrarenal_sodium_loss"),
    ("EXTRARENAL SODIUM LOSS", "extrarenal_sodium_loss"),
    ("Edematous-state", "edematous_state"),
    ("decompensated heart failure", "edematous_state"),
    ("**renal failure**", "renal_failure"),
    ("pseudo-hyponatremia", "pseudohyponatremia"),
    ("Hypertonic", "hypertonic"),
    ("SIADH; treat with hypertonic saline if symptomatic", "siadh"),
    ("siadh or renal_failure", None),
    ("either heart failure or diuretic use", None),
    ("hyponatremia", None),
    ("renal", None),
    ("", None),
])
def test_parser(text, expected):
    assert TASK.parse(text) == expected


def test_metrics_on_hand_made_predictions():
    recs = [HyponatremiaRecord.model_validate(_row(id=str(i), label=lab))
            for i, lab in enumerate(["siadh", "siadh", "renal_failure", "hypertonic"])]
    preds = ["siadh", "renal_failure", "renal_failure", None]
    scores = TASK.evaluate(recs, preds)
    assert scores["accuracy"] == pytest.approx(0.5)
    # siadh F1 = 2*1/(2+1) = 2/3; renal_failure = 2*1/(1+2) = 2/3; hypertonic = 0 -> mean 4/9
    assert scores["macro_f1"] == pytest.approx(4 / 9)
    acc = next(m for m in TASK.metrics if m.name == "accuracy")
    f1 = next(m for m in TASK.metrics if m.name == "macro_f1")
    assert (acc.test, f1.test) == ("mcnemar", "paired_bootstrap")
    assert [acc.per_item(r, p) for r, p in zip(recs, preds, strict=True)] == [1.0, 0.0, 1.0, 0.0]
    assert TASK.evaluate(recs, [r.label for r in recs]) == {"macro_f1": 1.0, "accuracy": 1.0}


def test_builders_give_a_different_valid_category():
    recs = generate(TASK, 400, seed=5)
    rng = random.Random(0)
    for name, build in TASK.rejected_builders.items():
        got = [build(r, rng) for r in recs]
        assert all(g in CATEGORIES and g != r.label for g, r in zip(got, recs, strict=True)), name
    assert set(TASK.rejected_builders) == {"plausible_wrong_category", "wrong_label"}
    assert TASK.default_strategy == "plausible_wrong_category"


@pytest.mark.parametrize("label, plausible", [
    ("siadh", {"renal_sodium_loss", "renal_failure", "extrarenal_sodium_loss"}),
    ("renal_failure", {"edematous_state", "renal_sodium_loss", "siadh"}),
    ("edematous_state", {"renal_failure", "extrarenal_sodium_loss"}),
    ("hypertonic", {"pseudohyponatremia", "siadh", "renal_sodium_loss", "extrarenal_sodium_loss",
                    "edematous_state", "renal_failure", "low_solute_or_polydipsia"}),
])
def test_plausible_wrong_category_is_one_rule_step_away(label, plausible):
    recs = [r for r in generate(TASK, 200, seed=2) if r.label == label]
    build = TASK.rejected_builders["plausible_wrong_category"]
    rng = random.Random(1)
    got = {build(r, rng) for r in recs for _ in range(5)}
    assert got <= plausible and len(got) >= 2
    # a serum osmolality band slip is the least plausible tier for a hypotonic category
    if label in ("siadh", "renal_failure", "edematous_state"):
        assert "pseudohyponatremia" in near_miss_categories(recs[0])[2]


def test_small_balanced_set_still_gets_every_split():
    """8 labels x 5 records: per-label rounding of a 10% val share would give 0 val records."""
    from clinalign.data.splits import kfold_split, split_records

    recs = generate(TASK, 40, seed=0)
    parts = split_records(TASK, recs, val=0.1, test=0.3, seed=0)
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (24, 4, 12)
    assert sorted(r.id for p in parts.values() for r in p) == sorted(r.id for r in recs)
    assert max(Counter(r.label for r in parts["test"]).values()) <= 2  # still stratified
    folds = kfold_split(TASK, recs, k=5, fold=0, val=0.1, seed=0)
    assert (len(folds["test"]), len(folds["val"])) == (8, 3)
