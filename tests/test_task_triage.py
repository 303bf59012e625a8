"""message_triage with plain data: labelling rule, generator variety, parser, metrics, pair builders."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
from pydantic import ValidationError

from clinalign.synthetic import generate
from clinalign.tasks import get_task
from clinalign.tasks.message_triage import PERSONNEL, URGENCY, TriageRecord, split_answer

TRIAGE = get_task("message_triage")


@pytest.fixture(scope="module")
def big() -> list[TriageRecord]:
    return generate(TRIAGE, 2000, seed=21)


def rec(i: int, personnel: str, urgency: str) -> TriageRecord:
    return TriageRecord(id=f"m{i}", message="msg", personnel=personnel, urgency=urgency)


def test_choices_and_answer_format():
    assert len(TRIAGE.choices) == 12 and len(set(TRIAGE.choices)) == 12
    assert "personnel: front_desk\nurgency: routine" in TRIAGE.choices
    r = rec(0, "pharmacist", "urgent")
    assert TRIAGE.answer(r) == "personnel: pharmacist\nurgency: urgent"
    assert TRIAGE.stratum(r) == "pharmacist/urgent"
    assert "msg" in TRIAGE.prompt(r) and "front_desk" in TRIAGE.prompt(r)


def test_schema_rejects_bad_labels_and_empty_message():
    with pytest.raises(ValidationError):
        TriageRecord(id="x", message="", personnel="nurse", urgency="routine")
    with pytest.raises(ValidationError):
        TriageRecord(id="x", message="hi", personnel="doctor", urgency="routine")
    with pytest.raises(ValidationError):
        TriageRecord(id="x", message="hi", personnel="nurse", urgency="asap")


def test_determinism_by_seed():
    a, b, c = generate(TRIAGE, 60, seed=1), generate(TRIAGE, 60, seed=1), generate(TRIAGE, 60, seed=2)
    assert [r.model_dump() for r in a] == [r.model_dump() for r in b]
    assert [r.message for r in a] != [r.message for r in c]
    assert a[0].id == "triage-000001"


def test_two_thousand_unique_balanced(big: list[TriageRecord]):
    assert len({r.message for r in big}) == 2000 and len({r.id for r in big}) == 2000
    pers = Counter(r.personnel for r in big)
    urg = Counter(r.urgency for r in big)
    assert set(pers) == set(PERSONNEL) and all(0.18 < v / 2000 < 0.32 for v in pers.values())
    assert set(urg) == set(URGENCY) and 0.08 < urg["emergent"] / 2000 < 0.25 and urg["routine"] / 2000 < 0.65
    # administration is never emergent; every other combination occurs
    combos = Counter(TRIAGE.stratum(r) for r in big)
    assert "front_desk/emergent" not in combos and len(combos) == 11


def test_near_duplicates_are_rare(big: list[TriageRecord]):
    from clinalign.data.audit import duplicates, phi_scan

    found = duplicates(TRIAGE, big[:600])
    assert found == {"exact": [], "near": []}
    assert phi_scan(TRIAGE, big) == {}


# Phrases that appear only in one kind of message core; a typo may remove one, never add one, so
# "phrase present -> label" holds for every record.
PERSONNEL_MARKERS = {
    "front_desk": ("schedule my", "FMLA", "log into the portal", "status of my referral", "parking", "a bill for",
                   "send my records", "work note", "new insurance"),
    "pharmacist": ("refill of", "renew my", "pill bottle", "prior authorization", "different generic",
                   "mail order", "with food or", "accidentally took two doses", "instead of my vitamins"),
    "nurse": ("steri-strips", "shower", "incision", "soaked through", "CPAP", "glucose meter",
              "can't keep water down", "burns when I pee"),
    "physician": ("explain my lab results", "potassium is", "TSH", "chest pressure", "slurred",
                  "don't want to be alive", "dry cough since", "eye is red", "lips look blue"),
}
URGENCY_MARKERS = {
    "emergent": ("chest pressure", "slurred", "plan to end it", "lips look blue", "hard to breathe", "pill bottle",
                 "soaked through", "pass out", "coughing up"),
    "urgent": ("completely out of", "tomorrow at", "red, warm and spreading", "can't keep water down",
               "flagged high", "throwing up"),
    "routine": ("refill of", "schedule my", "steri-strips", "explain my lab results", "parking", "CPAP"),
}


def test_labels_follow_the_rule(big: list[TriageRecord]):
    covered = 0
    for r in big:
        hit = False
        for markers, gold in ((PERSONNEL_MARKERS, r.personnel), (URGENCY_MARKERS, r.urgency)):
            for label, phrases in markers.items():
                if any(re.search(rf"\b{re.escape(p)}\b", r.message, re.I) for p in phrases):
                    assert label == gold, (label, r)
                    hit = True
        covered += hit
    assert covered > 0.4 * len(big)  # the check bites on a large share of the data


def test_messages_read_like_messages(big: list[TriageRecord]):
    lengths = [len(r.message.split()) for r in big]
    assert 8 <= min(lengths) and max(lengths) < 120
    assert sum("[" in r.message for r in big) > 500  # sign-offs use de-identified placeholders
    assert not any(re.search(r"\b(?:Mr|Mrs|Ms)\.? [A-Z][a-z]+", r.message) for r in big)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("personnel: physician\nurgency: emergent", ("physician", "emergent")),
        ("Personnel: Front Desk. Urgency: Routine.", ("front_desk", "routine")),
        ("**Urgency**: urgent\n**Personnel**: nurse", ("nurse", "urgent")),
        ("Route to the doctor; this is an emergency.", ("physician", "emergent")),
        ("The pharmacist should handle this; it is not urgent.", ("pharmacist", "routine")),
        ("personnel: front_desk urgency: non-urgent", ("front_desk", "routine")),
        ("Personnel - RN, priority: same-day", ("nurse", "urgent")),
        ("Urgency: urgent. Personnel: pharmacy", ("pharmacist", "urgent")),
        ("personnel: physician", None),
        ("nurse or physician, urgent", None),
        ("personnel: nurse\nurgency: urgent or emergent", None),
        ("Personnel: nurse (call the patient today).\nUrgency: urgent", ("nurse", "urgent")),
        ("personnel: dr\nurgency: stat", None),
        ("", None),
        ("I don't know.", None),
    ],
)
def test_parser(text: str, expected):
    out = TRIAGE.parse(text)
    if expected is None:
        assert out is None
    else:
        assert out == f"personnel: {expected[0]}\nurgency: {expected[1]}" and out in TRIAGE.choices


def test_parser_reads_every_choice():
    for c in TRIAGE.choices:
        assert TRIAGE.parse(c) == c
        assert TRIAGE.parse(c.upper().replace("_", " ")) == c


def test_metrics_by_hand():
    recs = [rec(0, "physician", "emergent"), rec(1, "physician", "routine"), rec(2, "nurse", "routine"),
            rec(3, "pharmacist", "urgent")]
    preds = ["personnel: physician\nurgency: emergent", "personnel: nurse\nurgency: routine", None,
             "personnel: pharmacist\nurgency: routine"]
    out = TRIAGE.evaluate(recs, preds)
    # personnel, over labels seen (physician, nurse, pharmacist): F1 = 2/3 (tp1 fn1), 0, 1 -> mean 5/9
    assert out["f1_personnel"] == pytest.approx(5 / 9)
    # urgency (emergent, routine, urgent): F1 = 1, 0.5 (tp1 fp1 fn1), 0 -> mean 1/2
    assert out["f1_urgency"] == pytest.approx(0.5)
    assert out["accuracy_personnel"] == pytest.approx(0.5) and out["accuracy_urgency"] == pytest.approx(0.5)
    by = {m.name: m for m in TRIAGE.metrics}
    assert by["f1_personnel"].test == by["f1_urgency"].test == "paired_bootstrap"
    assert by["accuracy_urgency"].test == "mcnemar"
    assert [by["accuracy_urgency"].per_item(r, p) for r, p in zip(recs, preds, strict=True)] == [1, 1, 0, 0]
    assert [by["accuracy_personnel"].per_item(r, p) for r, p in zip(recs, preds, strict=True)] == [1, 0, 0, 1]
    assert split_answer(None) == (None, None)


def test_pair_builders():
    assert TRIAGE.default_strategy == "wrong_both"
    rng = random.Random(0)
    for r in generate(TRIAGE, 60, seed=4):
        gold = split_answer(TRIAGE.answer(r))
        for name, build in TRIAGE.rejected_builders.items():
            rejected = build(r, rng)
            assert rejected in TRIAGE.choices and rejected != TRIAGE.answer(r)
            p, u = split_answer(rejected)
            assert (p != gold[0]) == (name in ("wrong_both", "wrong_personnel"))
            assert (u != gold[1]) == (name in ("wrong_both", "wrong_urgency"))
