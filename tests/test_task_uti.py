"""uti_classification with plain data: generator rule and variety, parser, metrics, pair builder."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
from pydantic import ValidationError

from clinalign.synthetic import generate
from clinalign.synthetic.uti_classification import NOTE_TYPES
from clinalign.tasks import get_task
from clinalign.tasks.uti_classification import UtiRecord

UTI = get_task("uti_classification")


@pytest.fixture(scope="module")
def big() -> list[UtiRecord]:
    return generate(UTI, 2000, seed=11)


def test_registered_and_closed_set():
    assert UTI.id == "uti_classification" and UTI.choices == ("yes", "no")
    rec = UtiRecord(id="a", text="Pt with dysuria.", label="yes")
    assert UTI.answer(rec) == "yes" and UTI.stratum(rec) == "yes"
    assert "urinary tract infection" in UTI.prompt(rec) and rec.text in UTI.prompt(rec)


def test_record_schema_rejects_bad_input():
    with pytest.raises(ValidationError):
        UtiRecord(id="a", text="", label="yes")
    with pytest.raises(ValidationError):
        UtiRecord(id="a", text="note", label="maybe")


def test_determinism_by_seed():
    a, b, c = generate(UTI, 50, seed=3), generate(UTI, 50, seed=3), generate(UTI, 50, seed=4)
    assert [r.model_dump() for r in a] == [r.model_dump() for r in b]
    assert [r.text for r in a] != [r.text for r in c]
    assert [r.id for r in a][:2] == ["uti-000001", "uti-000002"]


def test_generator_does_not_touch_global_random():
    random.seed(0)
    before = random.random()
    random.seed(0)
    generate(UTI, 20, seed=1)
    assert random.random() == before


def test_two_thousand_unique_and_balanced(big: list[UtiRecord]):
    assert len({r.text for r in big}) == 2000
    assert len({r.id for r in big}) == 2000
    share = Counter(r.label for r in big)["yes"] / len(big)
    assert 0.38 <= share <= 0.52
    assert set(Counter(r.note_type for r in big)) == set(NOTE_TYPES)
    assert min(Counter(r.note_type for r in big).values()) > 200


def test_no_near_duplicates_that_would_trip_the_leakage_gate(big: list[UtiRecord]):
    from clinalign.data.audit import duplicates

    found = duplicates(UTI, big[:600])
    assert found == {"exact": [], "near": []}


def test_no_phi_like_patterns(big: list[UtiRecord]):
    from clinalign.data.audit import phi_scan

    assert phi_scan(UTI, big) == {}


POSITIVE_MARKERS = ("cystitis", "urinary tract infection", "CAUTI", "catheter-associated", "pyelonephritis", "urosepsis", "urinary source",
                    "urinary tract infection (urosepsis)", "UTI", "bladder infection", "kidney infection",
                    "infection from the catheter")
NEGATIVE_MARKERS = ("not a UTI", "no evidence of UTI", "asymptomatic bacteriuria", "no infection", "ed pneumonia",
                    "cellulitis", "not an infection", "doesn't need treatment", "not a bladder infection",
                    "ureterolithiasis without evidence of infection", "no evidence of infection")


def test_labels_follow_the_stated_rule(big: list[UtiRecord]):
    """Every clinical note states its diagnosis; the label agrees with it (hard negatives included). Patient
    messages may carry typos, so they are checked in bulk."""
    messages = [r for r in big if r.note_type == "patient message"]
    agree = [any(m in r.text for m in NEGATIVE_MARKERS) == (r.label == "no") for r in messages]
    assert sum(agree) / len(agree) > 0.9
    for r in big:
        if r.note_type == "patient message":
            continue
        neg = any(m in r.text for m in NEGATIVE_MARKERS)
        if r.label == "no":
            assert neg, r.text
        else:
            assert not neg and any(m in r.text for m in POSITIVE_MARKERS), r.text


def test_hard_negatives_are_present(big: list[UtiRecord]):
    negatives = " ".join(r.text for r in big if r.label == "no").lower()
    for marker in ("naat positive", "mixed flora", "asymptomatic bacteriuria", "obstructing stone",
                   "clue cells", "consolidation"):
        assert marker in negatives
    # a positive culture alone does not make a UTI: many negatives have >=100,000 CFU/mL
    assert sum("100,000 CFU/mL" in r.text or "10^5" in r.text for r in big if r.label == "no") > 50


def test_numbers_are_plausible(big: list[UtiRecord]):
    for r in big[:300]:
        for t in re.findall(r"T (\d+\.\d) C", r.text):
            assert 36.0 <= float(t) <= 40.0
        for t in re.findall(r"T (\d+\.\d) F", r.text):
            assert 96.8 <= float(t) <= 104.0
        for hr in re.findall(r"HR (\d+)", r.text):
            assert 55 <= int(hr) <= 140


@pytest.mark.parametrize(
    "text, expected",
    [
        ("yes", "yes"), ("Yes.", "yes"), ("**No**", "no"), ("Answer: yes", "yes"), ("  NO  ", "no"),
        ("The answer is no.", "no"), ("Final answer: Yes", "yes"),
        ("The passage does describe a UTI.", "yes"),
        ("This describes a urinary tract infection (pyelonephritis).", "yes"),
        ("The passage does not describe a urinary tract infection.", "no"),
        ("No evidence of UTI; this is asymptomatic bacteriuria.", "no"),
        ("yes or no", None), ("Yes and no, it depends", None), ("", None), ("I cannot tell.", None),
        ("maybe", None),
    ],
)
def test_parser(text: str, expected: str | None):
    assert UTI.parse(text) == expected


def test_metrics_by_hand():
    golds = ["yes", "yes", "yes", "no", "no", "no"]
    preds = ["yes", "no", None, "yes", "no", "no"]
    recs = [UtiRecord(id=str(i), text="x", label=g) for i, g in enumerate(golds)]
    out = UTI.evaluate(recs, preds)
    # yes: tp=1, fp=1, fn=2 -> precision 1/2, recall 1/3, F1 = 2*(1/2)(1/3)/(1/2+1/3) = 0.4
    assert out["f1_yes"] == pytest.approx(0.4)
    assert out["accuracy"] == pytest.approx(3 / 6)  # the unparseable answer counts as wrong
    acc = next(m for m in UTI.metrics if m.name == "accuracy")
    assert acc.test == "mcnemar" and [acc.per_item(r, p) for r, p in zip(recs, preds, strict=True)] == [1, 0, 0, 0, 1, 1]
    assert next(m for m in UTI.metrics if m.name == "f1_yes").test == "paired_bootstrap"


def test_wrong_label_builder():
    assert UTI.default_strategy == "wrong_label"
    build = UTI.rejected_builders["wrong_label"]
    rng = random.Random(0)
    for r in generate(UTI, 40, seed=2):
        rejected = build(r, rng)
        assert rejected != UTI.answer(r) and rejected in UTI.choices
        assert UTI.parse(rejected) == rejected
