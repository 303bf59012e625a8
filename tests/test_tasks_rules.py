"""hyponatremia_urine and clinical_reasoning rules, with plain data (other tasks: tests/test_task_*.py)."""

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
from clinalign.tasks.hyponatremia_urine import CATEGORIES, classify
from clinalign.tasks.knowledge import CONDITIONS

HYPO = get_task("hyponatremia_urine")
REASON = get_task("clinical_reasoning")


@pytest.mark.parametrize("args, expected", [
    ((120, 296, 500, 50, "euvolemic"), "hypertonic"),
    ((120, 295.1, 500, 50, "euvolemic"), "hypertonic"),
    ((120, 295, 500, 50, "euvolemic"), "pseudohyponatremia"),
    ((120, 275, 500, 50, "euvolemic"), "pseudohyponatremia"),
    ((120, 274, 99, 50, "euvolemic"), "low_solute_or_polydipsia"),
    ((120, 260, 100, 29, "hypervolemic"), "edematous_state"),
    ((120, 260, 100, 29, "euvolemic"), "extrarenal_sodium_loss"),
    ((120, 260, 100, 29, "hypovolemic"), "extrarenal_sodium_loss"),
    ((120, 260, 100, 30, "hypovolemic"), "renal_sodium_loss"),
    ((120, 260, 400, 30, "euvolemic"), "siadh"),
    ((120, 260, 400, 30, "hypervolemic"), "renal_failure"),
])
def test_classify_boundaries(args, expected):
    assert classify(*args) == expected


@pytest.mark.parametrize("args, message", [
    ((135, 260, 400, 30, "euvolemic"), "not hyponatremia"),
    ((120, -1, 400, 30, "euvolemic"), "negative"),
    ((120, 260, 400, 30, "dry"), "unknown 'dry'"),
    ((60, 260, 400, 30, "euvolemic"), "outside the plausible range"),
])
def test_classify_rejects_impossible(args, message):
    with pytest.raises(InputError, match=message):
        classify(*args)


def test_hyponatremia_generator_and_schema(tmp_path: Path):
    recs = generate(HYPO, 400, seed=3)
    assert all(r.label == classify(r.serum_sodium, r.serum_osmolality, r.urine_osmolality, r.urine_sodium,
                                   r.volume_status) for r in recs)
    assert set(Counter(r.label for r in recs)) == set(CATEGORIES)
    assert [r.model_dump() for r in generate(HYPO, 50, 3)] == [r.model_dump() for r in recs[:50]]
    bad = recs[0].model_dump() | {"serum_sodium": 140}
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"h.jsonl:1: serum_sodium: .*not hyponatremia"):
        read_records(path, HYPO.record_type)


def test_hyponatremia_parser_metrics_pairs():
    assert HYPO.parse("SIADH") == "siadh"
    assert HYPO.parse("Likely primary polydipsia.") == "low_solute_or_polydipsia"
    assert HYPO.parse("renal_sodium_loss") == "renal_sodium_loss"
    assert HYPO.parse("siadh or renal failure") is None
    assert HYPO.parse("I am not sure") is None
    recs = generate(HYPO, 8, seed=0)
    preds = [r.label for r in recs[:6]] + [None, "hypertonic" if recs[7].label != "hypertonic" else "siadh"]
    assert HYPO.evaluate(recs, preds)["accuracy"] == pytest.approx(6 / 8)
    rng = random.Random(0)
    for r in recs:
        assert HYPO.rejected_builders["plausible_wrong_category"](r, rng) in CATEGORIES
        assert HYPO.rejected_builders["plausible_wrong_category"](r, rng) != r.label


def test_reasoning_generator():
    assert len(CONDITIONS) >= 40
    recs = generate(REASON, 2000, seed=1)
    assert len({r.vignette for r in recs}) == 2000
    counts = Counter(r.answer for r in recs)
    four = sum(1 for r in recs if len(r.options) == 4)
    assert 0.35 < four / 2000 < 0.65
    assert min(counts[x] for x in "ABCD") > 350  # answer position is spread over the letters
    for r in recs[:200]:
        assert r.answer in r.options and REASON.choices_for(r) == tuple(r.options)
        d = REASON.rejected_builders["distractor"](r, random.Random(0))
        assert d != r.answer and d in r.options


def test_reasoning_parser_and_schema(tmp_path: Path):
    for text, want in [("C", "C"), ("(B)", "B"), ("Answer: D", "D"), ("A. Pneumonia", "A"),
                       ("The answer is E", "E"), ("pneumonia", None), ("", None)]:
        assert REASON.parse(text) == want, text
    row = generate(REASON, 1, 0)[0].model_dump() | {"answer": "E", "options": {"A": "x", "B": "y", "C": "z", "D": "w"}}
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match="r.jsonl:1: .*answer 'E' is not one of the options"):
        read_records(path, REASON.record_type)


def test_hyponatremia_parser_whole_names():
    assert HYPO.parse("extrarenal_sodium_loss") == "extrarenal_sodium_loss"  # not also renal_sodium_loss
    assert HYPO.parse("Extrarenal sodium loss") == "extrarenal_sodium_loss"


def test_every_metric_says_what_it_covers():
    """Each built-in and declared task's metric carries a description of what it counts ("...") and
    what it does not ("Not: ..."), which the report shows beside the number."""
    from clinalign.tasks import all_tasks

    examples = Path(__file__).resolve().parents[1] / "configs" / "tasks"
    tasks = [*all_tasks(), *(get_task(str(p)) for p in sorted(examples.glob("*.yaml")))]
    assert len(tasks) >= 7
    for task in tasks:
        for m in task.metrics:
            assert len(m.covers) > 40 and "Not:" in m.covers, (task.id, m.name)
    by_name = {m.name: m.covers for m in get_task("discharge_summary").metrics}
    assert "wrong age or sex" in by_name["false_facts"] and "degenerate" in by_name["false_facts"]
    assert "1-5" in by_name["likert"] and "key facts" in by_name["fact_recall"]
