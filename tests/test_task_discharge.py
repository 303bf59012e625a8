"""discharge_summary: the fact matcher, the rubric, the rejected-summary builders and the generator, on
plain data (no model)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from clinalign.data.io import read_records
from clinalign.errors import DataError
from clinalign.synthetic import generate
from clinalign.tasks import get_task
from clinalign.tasks.discharge_summary import (
    MAX_WORDS,
    RUBRIC,
    DischargeRecord,
    assess,
    likert_score,
    normalize,
    parse_dose,
    score_summary,
)

TASK = get_task("discharge_summary")

NOTE = """DISCHARGE SUMMARY
Discharge diagnosis: community-acquired pneumonia.
HPI: 70-year-old man with hypertension who presented with 4 days of cough and fever.
Hospital course: Treated with IV ceftriaxone and furosemide 40 mg twice daily for volume overload.
Procedures:
- chest radiograph: right lower lobe consolidation
Discharge medications:
- amoxicillin-clavulanate 875 mg twice daily
- amlodipine 5 mg daily
- furosemide 20 mg daily
Follow-up:
- primary care in 1 week
"""


def _record() -> DischargeRecord:
    return DischargeRecord.model_validate({
        "id": "hand-1", "note": NOTE, "summary": "reference",
        "facts": [
            {"kind": "diagnosis", "text": "community-acquired pneumonia", "aliases": ["pneumonia"]},
            {"kind": "finding", "text": "right lower lobe consolidation"},
            {"kind": "procedure", "text": "chest radiograph"},
            {"kind": "medication", "text": "amoxicillin-clavulanate 875 mg twice daily",
             "name": "amoxicillin-clavulanate", "dose": "875 mg twice daily", "aliases": ["augmentin"]},
            {"kind": "medication", "text": "amlodipine 5 mg daily", "name": "amlodipine", "dose": "5 mg daily"},
            {"kind": "medication", "text": "furosemide 20 mg daily", "name": "furosemide", "dose": "20 mg daily"},
            {"kind": "follow_up", "text": "primary care in 1 week"},
        ],
    })


FULL = ("Admitted with pneumonia (RLL consolidation on CXR). Discharged on Augmentin 875 mg BID, amlodipine "
        "5mg once a day and furosemide 20 mg qd. See PCP in one week.")


def test_paraphrase_with_abbreviations_recalls_every_fact():
    a = assess(_record(), FULL)
    assert a.missing == [] and a.wrong_doses == [] and a.invented == []
    assert score_summary(_record(), FULL) == {"fact_recall": 1.0, "false_facts": 0.0, "wrong_doses": 0.0,
                                              "invented_facts": 0.0, "likert": 5.0}


@pytest.mark.parametrize("summary, recall, wrong, invented, likert", [
    # one omission (the follow-up): 6/7 recalled, 5 - 1
    (FULL.replace(" See PCP in one week.", ""), 6 / 7, 0, 0, 4),
    # wrong amount: amlodipine not recalled and one false fact, 5 - 1 - 1
    (FULL.replace("5mg", "10 mg"), 6 / 7, 1, 0, 3),
    # wrong frequency for the same amount is a wrong dose too
    (FULL.replace("875 mg BID", "875 mg daily"), 6 / 7, 1, 0, 3),
    # a dose the note gives for the drug (in the course) is not false, but it is not the discharge dose
    (FULL.replace("furosemide 20 mg qd", "furosemide 40 mg twice daily"), 6 / 7, 0, 0, 4),
    # a medication and a diagnosis the note does not contain: two false facts
    (FULL + " Started warfarin 5 mg daily. Course complicated by acute kidney injury.", 1.0, 0, 2, 3),
    # negated or preventive mentions are not assertions
    (FULL + " No evidence of sepsis or deep vein thrombosis. Heparin for DVT prophylaxis was stopped.",
     1.0, 0, 1, 4),
    # almost nothing: 1/7 recalled (half or more missing: -3)
    ("Admitted with pneumonia.", 1 / 7, 0, 0, 2),
    # a name without a dose is an omission, not a false fact
    (FULL.replace(" 5mg once a day", ""), 6 / 7, 0, 0, 4),
])
def test_hand_made_summaries(summary: str, recall: float, wrong: int, invented: int, likert: int):
    a = assess(_record(), summary)
    assert a.fact_recall == pytest.approx(recall)
    assert len(a.wrong_doses) == wrong and len(a.invented) == invented
    assert a.likert == likert
    s = score_summary(_record(), summary)
    assert s["false_facts"] == wrong + invented and s["likert"] == likert


def test_invented_names_are_reported():
    a = assess(_record(), FULL + " Started warfarin 5 mg daily. Course complicated by acute kidney injury.")
    assert a.invented == ["acute kidney injury", "warfarin"]
    assert assess(_record(), FULL + " Heparin for DVT prophylaxis.").invented == ["heparin"]


def test_abbreviations_and_brand_names_on_a_generated_note():
    rec = next(r for r in generate(TASK, 80, seed=1) if r.facts[0].text == "acute decompensated heart failure")
    med = next(f for f in rec.facts if f.kind == "medication" and f.aliases)
    text = rec.summary.replace("acute decompensated heart failure", "CHF exacerbation (known CHF)")
    text = text.replace(f"{med.name} {med.dose}", f"{med.aliases[0].title()} {med.dose}")
    assert text != rec.summary
    a = assess(rec, text)
    assert a.fact_recall == 1.0 and a.false_facts == 0 and a.likert == 5


def test_empty_and_long_summaries():
    for empty in (None, "", "   "):
        s = score_summary(_record(), empty)
        assert s == {"fact_recall": 0.0, "false_facts": 0.0, "wrong_doses": 0.0, "invented_facts": 0.0,
                     "likert": 1.0}
    padded = FULL + "".join(f" On day {i} the patient walked {10 * i} meters." for i in range(1, 21))
    assert len(padded.split()) > MAX_WORDS
    assert score_summary(_record(), padded)["likert"] == 4.0
    # the same length made of one sentence on a loop is not a long summary but degenerate output
    looped = FULL + " The patient did well." * 40
    assert assess(_record(), looped).degenerate == "repetition" and assess(_record(), looped).likert == 1


def test_likert_arithmetic_follows_the_rubric():
    assert likert_score(1.0, 0, 50) == 5
    assert likert_score(0.8, 0, 50) == 4 and likert_score(0.75, 0, 50) == 3 and likert_score(0.5, 0, 50) == 2
    assert likert_score(1.0, 2, 50) == 3 and likert_score(0.1, 3, 50) == 1
    assert likert_score(1.0, 0, MAX_WORDS + 1) == 4 and likert_score(1.0, 0, 0) == 1
    assert "5 = every key fact and nothing false" in RUBRIC and str(MAX_WORDS) in RUBRIC


def test_normalisation_and_doses():
    assert normalize("See PCP in two weeks; Lasix 40mg BID") == "see primary care in 2 week lasix 40 mg twice daily"
    assert normalize("EF 30 %, q6h PRN") == "ejection fraction 30% every 6 hour as needed"
    assert parse_dose("1 g four times daily").matches(parse_dose("1000 mg QID"))
    assert parse_dose("25 mcg daily").matches(parse_dose("0.025 mg daily"))
    assert not parse_dose("25 mg daily").matches(parse_dose("25 mcg daily"))
    assert parse_dose("50 mg").matches(parse_dose("50 mg daily"))  # an unstated frequency is not a contradiction
    assert not parse_dose("50 mg nightly").matches(parse_dose("50 mg daily"))
    assert parse_dose("as directed").amount is None


def test_metrics_are_per_item_means():
    rec = _record()
    scores = TASK.evaluate([rec, rec], [FULL, None])
    assert scores == {"likert": 3.0, "fact_recall": 0.5, "false_facts": 0.0}
    by_name = {m.name: m for m in TASK.metrics}
    assert [m.name for m in TASK.metrics][0] == "likert"
    assert all(m.test == "wilcoxon" and m.per_item is not None for m in TASK.metrics)
    assert by_name["false_facts"].higher_is_better is False and by_name["likert"].higher_is_better
    assert by_name["false_facts"].per_item(rec, FULL + " Started warfarin 5 mg daily.") == 1.0


@pytest.mark.parametrize("raw, parsed", [
    ("<|im_start|>assistant\nSummary: Admitted with pneumonia.<|im_end|>", "Admitted with pneumonia."),
    ("**Summary:** Admitted with pneumonia.</s>", "Admitted with pneumonia."),
    ("  Admitted with pneumonia.  ", "Admitted with pneumonia."),
    ("<|im_end|>", None),
    ("   \n ", None),
])
def test_parse(raw: str, parsed: str | None):
    assert TASK.parse(raw) == parsed


def test_task_shape():
    rec = generate(TASK, 1, seed=0)[0]
    assert TASK.choices is None and not TASK.is_closed_set and 120 <= TASK.max_new_tokens <= 200
    assert TASK.answer(rec) == rec.summary and rec.note in TASK.prompt(rec)
    assert TASK.stratum(rec) is None


def test_reference_summaries_score_5_and_every_builder_scores_lower():
    recs = generate(TASK, 200, seed=4)
    rng = random.Random(0)
    kinds = {"omit_fact": 0, "wrong_dose": 0, "invented_fact": 0}
    for r in recs:
        assert score_summary(r, r.summary)["likert"] == 5.0, r.summary
        n_sentences = len(re.findall(r"\.(?:\s|$)", r.summary))
        assert 2 <= n_sentences <= 5 and len(r.summary.split()) <= MAX_WORDS
        for name, build in TASK.rejected_builders.items():
            rejected = build(r, rng)
            a = assess(r, rejected)
            assert rejected != r.summary and a.likert < 5, (name, rejected)
            if name == "omit_fact":
                assert len(a.missing) == 1 and a.false_facts == 0
            elif name == "wrong_dose":
                assert len(a.wrong_doses) == 1 and not a.invented
            else:
                assert len(a.invented) == 1 and not a.missing and not a.wrong_doses
            kinds[name] += 1
    assert kinds == {"omit_fact": 200, "wrong_dose": 200, "invented_fact": 200}


def test_generator_deterministic_varied_and_faithful():
    a, b = generate(TASK, 40, seed=11), generate(TASK, 40, seed=11)
    assert [r.model_dump() for r in a] == [r.model_dump() for r in b]
    assert [r.note for r in generate(TASK, 40, seed=12)] != [r.note for r in a]
    recs = generate(TASK, 2000, seed=3)
    assert len({r.note for r in recs}) == 2000 and len({r.id for r in recs}) == 2000
    diagnoses = {next(f.text for f in r.facts if f.kind == "diagnosis").split()[-1] for r in recs}
    assert len(diagnoses) >= 10
    for r in recs[:300]:
        words = len(r.note.split())
        assert 120 <= words <= 320, words
        note = r.note.lower()
        meds = [f for f in r.facts if f.kind == "medication"]
        assert 3 <= len(meds) <= 7
        assert len({f.name for f in meds}) == len(meds)
        for section in ("hpi:", "hospital course:", "procedures:", "discharge medications:", "follow-up:"):
            assert section in note
        for f in r.facts:
            assert f.text.lower() in note, f.text
            if f.kind == "medication":
                assert f"- {f.name} {f.dose}".lower() in note
        a = assess(r, r.note)  # the note itself states every fact and nothing false
        assert a.fact_recall == 1.0 and a.false_facts == 0


def test_records_validate_with_file_line_errors(tmp_path: Path):
    recs = generate(TASK, 3, seed=5)
    path = tmp_path / "dc.jsonl"
    rows = [r.model_dump() for r in recs]
    rows[1]["facts"][0]["kind"] = "symptom"
    rows[2]["summary"] = " "
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as e:
        read_records(path, TASK.record_type)
    problems = e.value.problems
    assert any(p.startswith(f"{path}:2: facts.0.kind:") for p in problems)
    assert any(p.startswith(f"{path}:3: summary: ") and "empty" in p for p in problems)
    rows = [recs[0].model_dump()]
    rows[0]["facts"] = [{"kind": "medication", "text": "aspirin 81 mg daily"}]
    path.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(DataError, match=r"dc.jsonl:1: facts.0: .*needs a name"):
        read_records(path, TASK.record_type)
    path.write_text("".join(json.dumps(r.model_dump()) + "\n" for r in recs))
    assert read_records(path, TASK.record_type) == recs


def test_assess_runs_once_per_record_and_answer_for_every_metric():
    """The three metrics, their per-item values (what the paired tests read) and the judge share one
    assessment per (record, answer): matching is not redone per metric."""
    from clinalign.tasks.discharge_summary import scoring

    recs = generate(TASK, 6, seed=11)
    preds = [r.summary for r in recs[:3]] + [None, "Admitted. Discharged home.", recs[5].note[:200]]
    scoring._assess.cache_clear()
    TASK.evaluate(recs, preds)
    for m in TASK.metrics:
        assert m.per_item is not None
        [m.per_item(r, p) for r, p in zip(recs, preds, strict=True)]
    TASK.judge(recs[0], recs[0].summary)
    info = scoring._assess.cache_info()
    assert info.misses == len(recs) and info.hits >= 5 * len(recs)
    # the cache is keyed by what assess reads (note and facts), not by the record object or its id
    copy = recs[1].model_copy(update={"id": "other"})
    assert assess(copy, preds[1]) is assess(recs[1], preds[1])
    changed = recs[1].model_copy(update={"facts": recs[1].facts[:1]})
    assert assess(changed, preds[1]) is not assess(recs[1], preds[1])
    assert scoring._assess.cache_info().misses == len(recs) + 1


def _with_age(rec: DischargeRecord, age: int) -> DischargeRecord:
    """A generated record whose note and reference summary give the patient this age."""
    old = re.search(r"(\d+)-year-old", rec.note).group(1)
    return rec.model_copy(update={"note": rec.note.replace(f"{old}-year-old", f"{age}-year-old"),
                                  "summary": rec.summary.replace(f"{old}-year-old", f"{age}-year-old")})


def test_a_wrong_age_or_sex_is_a_false_fact():
    """The demo's SFT failure: the note says "46-year-old man", the summary "72-year-old man"."""
    rec = next(_with_age(r, 46) for r in generate(TASK, 40, seed=2) if "-year-old man" in r.note)
    assert "46-year-old man" in rec.note and "46-year-old man" in rec.summary
    assert score_summary(rec, rec.summary) == {"fact_recall": 1.0, "false_facts": 0.0, "wrong_doses": 0.0,
                                               "invented_facts": 0.0, "likert": 5.0}
    wrong_age = rec.summary.replace("46-year-old man", "72-year-old man")
    a = assess(rec, wrong_age)
    assert a.wrong_demographics == ["age"] and a.false_facts == 1 and a.fact_recall == 1.0 and a.likert == 4
    assert TASK.evaluate([rec], [wrong_age])["false_facts"] == 1.0
    wrong_both = rec.summary.replace("46-year-old man", "72-year-old woman")
    assert assess(rec, wrong_both).wrong_demographics == ["age", "sex"] and assess(rec, wrong_both).likert == 3
    # other spellings of the same age and sex are not false; leaving them out is not false either
    for same in ("46 yo M", "46 y/o male", "A 46 year old gentleman"):
        assert assess(rec, rec.summary.replace("46-year-old man", same)).wrong_demographics == [], same
    assert assess(rec, rec.summary.replace("46-year-old man", "Patient")).false_facts == 0
    assert assess(rec, rec.summary.replace("46-year-old man", "Female patient, 46,")).wrong_demographics == ["sex"]
    assert assess(rec, rec.summary + " She was discharged home.").wrong_demographics == []  # "man" states it
    assert assess(rec, rec.summary.replace("46-year-old man", "Patient") + " She is stable.").wrong_demographics \
        == ["sex"]
    # a note that states neither (a user's own data) is not judged on them
    assert assess(_record(), "72-year-old woman. " + FULL).wrong_demographics == ["age", "sex"]
    bare = _record().model_copy(update={"note": NOTE.replace("70-year-old man", "Patient")})
    assert assess(bare, "72-year-old woman. " + FULL).false_facts == 0


def test_demographics_parser():
    from clinalign.tasks.discharge_summary.scoring import demographics

    assert demographics("HPI: 46-year-old man with COPD") == (46, "male")
    assert demographics("46 yo F admitted") == (46, "female") and demographics("46 y/o m") == (46, "male")
    assert demographics("Temp 101 F, BP 120/80") == (None, None)  # a letter counts only after an age
    assert demographics("Aged 81, a woman with a 10-year history of CKD") == (81, "female")
    assert demographics("72 years old male; wife at bedside") == (72, "male")
    assert demographics("He was admitted with a stroke at age 63.") == (63, "male")
    assert demographics("Admitted with stage 3 CKD for 5 years.") == (None, None)
    assert demographics("He told her the plan.") == (None, None)  # both pronouns: not stated


@pytest.mark.parametrize("output, why", [
    ("777222", "no words"),                                   # the demo's SFT output on one test item
    ("7772227272227277777" + "27" * 60, "no words"),          # the same item's DPO output
    ("!!! ... ???", "no words"),
    ("Admitted with pneumonia 772227272227277777.", "digit run"),
    ("Pneumonia.", "too short"),
    ("pneumonia pneumonia pneumonia", "repetition"),
    (FULL + " amlodipine 5 mg daily amlodipine 5 mg daily amlodipine 5 mg daily", "repetition"),
    (FULL + " " + FULL + " " + FULL, "repetition"),
])
def test_degenerate_output_is_a_failure(output: str, why: str):
    """Output that is not a summary scores as a failure whatever it contains: Likert 1, recall 0 and
    one false fact, both in the assessment and in every metric the study reports."""
    a = assess(_record(), TASK.parse(output))
    assert a.degenerate == why
    assert a.likert == 1 and a.fact_recall == 0.0 and a.false_facts == 1
    assert TASK.evaluate([_record()], [TASK.parse(output)]) == {"likert": 1.0, "fact_recall": 0.0,
                                                                "false_facts": 1.0}
    assert TASK.judge(_record(), output) == 1.0
    # a real summary of any reasonable form is not degenerate
    for fine in (FULL, "Admitted with pneumonia.", "Discharged on amlodipine 5 mg daily.", FULL + " " + FULL):
        assert assess(_record(), fine).degenerate is None, fine


def test_generated_summaries_and_rejected_ones_are_never_degenerate():
    rng = random.Random(1)
    for r in generate(TASK, 400, seed=9):
        assert assess(r, r.summary).degenerate is None and assess(r, r.summary).wrong_demographics == []
        for build in TASK.rejected_builders.values():
            assert assess(r, build(r, rng)).degenerate is None
