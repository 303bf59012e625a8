"""clinical_reasoning and its knowledge table: schema, parser, metric, builders, generator. Plain data."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from clinalign.data.io import read_records
from clinalign.errors import DataError
from clinalign.synthetic import generate
from clinalign.synthetic.clinical_reasoning import make_vignette, pick_distractors
from clinalign.tasks import get_task
from clinalign.tasks.clinical_reasoning import ReasoningRecord
from clinalign.tasks.knowledge import BY_NAME, CONDITIONS, VITALS, check_table

TASK = get_task("clinical_reasoning")
RECS = generate(TASK, 2000, seed=1)


def test_knowledge_table_is_complete_and_consistent():
    assert len(CONDITIONS) >= 40
    assert check_table() == []
    assert len({c.system for c in CONDITIONS}) >= 10
    for c in CONDITIONS:
        assert c.name and c.system and c.treatment and len(c.presentation) >= 3 and len(c.findings) >= 3
        assert c.confusable and all(x in BY_NAME and x != c.name for x in c.confusable)
        assert c.vitals in VITALS
        # findings never state vital signs: those come from the profile and could contradict them
        assert not any(re.search(r"\b(?:heart rate|SpO2|blood pressure \d|temperature \d)", f) for f in c.findings)


def test_confusables_are_mostly_from_the_same_organ_system():
    """Some real confusions cross systems (heart failure vs pneumonia, DKA vs pancreatitis); most do not."""
    pairs = [(c, BY_NAME[x]) for c in CONDITIONS for x in c.confusable]
    same = sum(a.system == b.system for a, b in pairs)
    assert same / len(pairs) > 0.5


def test_generated_records_are_valid_unique_and_deterministic():
    assert len({r.vignette for r in RECS}) == 2000 and len({r.id for r in RECS}) == 2000
    for r in RECS:
        ReasoningRecord.model_validate(r.model_dump())
        assert len(r.options) in (4, 5) and r.answer in r.options
        assert len(set(r.options.values())) == len(r.options)
        assert TASK.choices_for(r) == tuple(r.options)
        assert TASK.answer(r) == r.answer
    assert [r.model_dump() for r in generate(TASK, 200, seed=1)] == [r.model_dump() for r in RECS[:200]]
    assert [r.model_dump() for r in generate(TASK, 200, seed=2)] != [r.model_dump() for r in RECS[:200]]
    assert Counter(r.question_type for r in RECS)["treatment"] > 800


def test_answer_letter_is_uniform_over_the_available_letters():
    for k in (4, 5):
        recs = [r for r in RECS if len(r.options) == k]
        assert len(recs) > 800
        counts = Counter(r.answer for r in recs)
        assert set(counts) == set("ABCDE"[:k])
        expected = len(recs) / k
        chi2 = sum((counts[x] - expected) ** 2 / expected for x in "ABCDE"[:k])
        assert chi2 < 18.5  # p < 0.001 for 3-4 degrees of freedom
    # the most plausible distractor is not parked at a fixed letter either
    rng = random.Random(0)
    spots = Counter(TASK.rejected_builders["distractor"](r, rng) for r in RECS if len(r.options) == 4)
    assert min(spots[x] for x in "ABCD") > 0.18 * sum(spots.values())


def _condition_of(record: ReasoningRecord, letter: str):
    field = "name" if record.question_type == "diagnosis" else "treatment"
    return next(c for c in CONDITIONS if getattr(c, field) == record.options[letter])


def _top_confusable(record: ReasoningRecord):
    """The most plausible wrong condition that this question may offer."""
    truth = _condition_of(record, record.answer)
    allowed = (BY_NAME[x] for x in truth.confusable)
    return next(c for c in allowed if record.question_type == "diagnosis" or c.group != truth.group)


def test_options_are_plausible_and_only_one_is_right():
    for r in RECS[:500]:
        truth = _condition_of(r, r.answer)
        others = [_condition_of(r, k) for k in r.options if k != r.answer]
        # the top confusable condition is always offered; most distractors share the system or are confusable
        assert _top_confusable(r) in others
        close = [c for c in others if c.system == truth.system or c.name in truth.confusable
                 or truth.name in c.confusable]
        assert len(close) >= 2
        if r.question_type == "treatment":  # no second correct treatment (e.g. PE and DVT anticoagulation)
            assert all(c.group != truth.group for c in others)


def test_vignettes_fit_the_condition():
    rng = random.Random(3)
    for cond in CONDITIONS:
        for _ in range(20):
            v = make_vignette(cond, rng)
            age = int(re.match(r"^(?:An? )?(\d+)-year-old", v).group(1))
            assert cond.ages[0] <= age <= cond.ages[1]
            assert not re.match(r"A (8|11-|18-)", v)  # "An 84-year-old"
            if cond.sex == "female":
                assert re.search(r"\b(woman|female)\b", v) and not re.search(r"\b(man|male)\b", v)
            if cond.sex == "male":
                assert re.search(r"\b(man|male)\b", v) and not re.search(r"\b(woman|female)\b", v)
            assert cond.findings[0] in v and cond.history[0] in v
            assert any(p in v for p in cond.presentation)
            assert cond.name.lower() not in v.lower()  # the diagnosis is never given away by name
            temp = float(re.search(r"(\d+\.\d) °C", v).group(1))
            profile = VITALS[cond.vitals]
            assert profile.temp[0] - 0.05 <= temp <= profile.temp[1] + 0.05
            sbp, dbp = map(int, re.search(r"(\d+)/(\d+)", v).groups())
            assert profile.sbp[0] <= sbp <= profile.sbp[1] and dbp < sbp


def test_treatment_questions_exclude_equivalent_treatments():
    pe, dvt = BY_NAME["Pulmonary embolism"], BY_NAME["Deep vein thrombosis"]
    mdd, gad = BY_NAME["Major depressive disorder"], BY_NAME["Generalized anxiety disorder"]
    rng = random.Random(0)
    for _ in range(50):
        assert pe not in pick_distractors(dvt, "treatment", 4, rng)
        assert pe in pick_distractors(dvt, "diagnosis", 4, rng)  # a fair diagnosis distractor
        assert gad not in pick_distractors(mdd, "treatment", 4, rng)
        assert pick_distractors(mdd, "diagnosis", 4, rng)[0] is gad


def test_prompt_lists_lettered_options_and_asks_for_a_letter():
    r = RECS[0]
    p = TASK.prompt(r)
    assert p.startswith(r.vignette)
    for k, text in r.options.items():
        assert f"\n{k}. {text}" in p
    assert "letter" in p.lower() and p.rstrip().endswith(".")
    assert "?" in p


@pytest.mark.parametrize("text, expected", [
    ("C", "C"), (" C ", "C"), ("(C)", "C"), ("C)", "C"), ("C.", "C"), ("**D**", "D"),
    ("Answer: C", "C"), ("answer: c", "C"), ("The answer is (B).", "B"), ("Answer - E", "E"),
    ("C. Pneumonia", "C"), ("(E) Septic shock", "E"), ("Option B", "B"),
    ("The correct answer is D: COPD exacerbation", "D"),
    ("Pneumonia", None), ("", None), ("A 45-year-old man", None), ("A patient with", None),
    ("the answer is a pulmonary embolism", None), ("B or C", None), ("E.coli", None), ("F", None),
])
def test_parser(text, expected):
    assert TASK.parse(text) == expected


def test_accuracy_metric_on_hand_made_predictions():
    recs = RECS[:4]
    wrong = next(k for k in recs[1].options if k != recs[1].answer)
    preds = [recs[0].answer, wrong, None, recs[3].answer]
    assert TASK.evaluate(recs, preds) == {"accuracy": 0.5}
    (metric,) = TASK.metrics
    assert metric.test == "mcnemar"
    assert [metric.per_item(r, p) for r, p in zip(recs, preds, strict=True)] == [1.0, 0.0, 0.0, 1.0]


def test_builders_return_another_valid_letter_and_distractor_is_the_confusable():
    rng = random.Random(0)
    for r in RECS[:300]:
        for name, build in TASK.rejected_builders.items():
            got = build(r, rng)
            assert got in r.options and got != r.answer, name
        d = TASK.rejected_builders["distractor"](r, rng)
        assert _condition_of(r, d) is _top_confusable(r)
    assert TASK.default_strategy == "distractor"
    wrong = Counter(TASK.rejected_builders["wrong_label"](RECS[0], random.Random(i)) for i in range(200))
    assert len(wrong) == len(RECS[0].options) - 1  # every other letter, not always the same one


def test_distractor_on_user_options_outside_the_table():
    rec = ReasoningRecord(id="u1", vignette="A case.", options={"A": "x", "B": "y", "C": "z", "D": "w"}, answer="B")
    picks = {TASK.rejected_builders["distractor"](rec, random.Random(i)) for i in range(50)}
    assert picks == {"A", "C", "D"}


def _write(tmp_path: Path, row: dict) -> Path:
    path = tmp_path / "r.jsonl"
    good = RECS[0].model_dump() | {"id": "good"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    return path


@pytest.mark.parametrize("over, field, message", [
    ({"answer": "E", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}}, "answer",
     "answer 'E' is not one of the options A, B, C, D"),
    ({"answer": "a"}, "answer", "not one of the options"),
    ({"options": {"A": "a", "B": "b", "C": "c"}, "answer": "A"}, "options", "expected 4 or 5 options"),
    ({"options": {"A": "a", "B": "b", "C": "c", "E": "e"}, "answer": "A"}, "options", "got A, B, C, E"),
    ({"options": {"A": "a", "B": "b", "C": "c", "D": " "}, "answer": "A"}, "options", "option D is empty"),
    ({"options": {"A": "a", "B": "b", "C": "c", "D": "A"}, "answer": "A"}, "options", "same text"),
    ({"vignette": "  "}, "vignette", "empty text"),
    ({"question_type": "prognosis"}, "question_type", "diagnosis"),
])
def test_schema_errors_name_file_line_field(tmp_path: Path, over, field, message):
    path = _write(tmp_path, RECS[1].model_dump() | over)
    with pytest.raises(DataError) as e:
        read_records(path, ReasoningRecord)
    assert len(e.value.problems) == 1
    assert e.value.problems[0].startswith(f"{path}:2: {field}: ") and message in e.value.problems[0]


def test_csv_with_json_options_reads(tmp_path: Path):
    path = tmp_path / "r.csv"
    opts = json.dumps({"A": "Gout flare", "B": "Septic arthritis", "C": "Cellulitis", "D": "Rhabdomyolysis"})
    path.write_text('id,vignette,options,answer,question_type\n'
                    f'c1,"A 60-year-old man with a hot big toe.","{opts.replace(chr(34), chr(34) * 2)}",A,diagnosis\n')
    (rec,) = read_records(path, ReasoningRecord)
    assert rec.options["B"] == "Septic arthritis" and TASK.choices_for(rec) == ("A", "B", "C", "D")
    assert TASK.rejected_builders["distractor"](rec, random.Random(0)) == "B"
