"""Patient portal message triage: who should answer the message, and how soon.

Gold labels follow one explicit rule, so a clinician can check any record:

Personnel is decided by what the message *needs*:
- ``front_desk``: administration only (appointments, billing, forms, records, portal access); no clinical
  question.
- ``pharmacist``: medication supply and use (refills, coverage, how to take, missed or extra doses,
  interactions, an accidental overdose).
- ``nurse``: care of a known condition or a recent procedure (wound and post-operative care, home
  readings, devices, mild self-limited symptoms), including that procedure's warning signs.
- ``physician``: a decision only a prescriber can make: interpreting results, new or changing symptoms
  that need a diagnosis, treatment changes, mental-health crises.

Background a patient adds (medicines they take, an old procedure, an upcoming appointment, results that
were fine, red flags they do *not* have: "no chest pain") never changes the labels: the request does.
Look-alike requests are labelled by the same rules: a week of insulin left is a routine refill, being out
of it is urgent (out of a routine medicine such as a statin: routine); after a procedure a temperature of
100.4 F or more is urgent, below it routine; home blood pressure of 180/110 or more is urgent, under
160/100 routine; a pink incision edge without warmth, spreading or fever is routine nurse advice, a red,
warm, spreading one with fever is urgent; a few seconds of chest pain on coughing last week, gone since, is
a routine question for the physician, chest tightness on stairs for days that eases with rest (possible
angina) is urgent, chest pressure into the arm with sweating now is emergent.

Urgency is decided by how soon harm could follow:
- ``emergent``: needs care within the hour (chest pain, stroke signs, suicidal intent, airway swelling,
  heavy bleeding, a large overdose). Administration is never emergent.
- ``urgent``: within 24 hours (fever or spreading redness after surgery, out of a critical medicine,
  markedly abnormal home readings, worsening symptoms, a procedure tomorrow that must be moved).
- ``routine``: can wait days.

Synonyms the parser accepts (documented decision): "doctor", "MD", "provider", "prescriber" mean
physician; "RN", "triage nurse", "nursing" mean nurse; "pharmacy", "PharmD" mean pharmacist; "front
desk", "reception(ist)", "scheduling", "office staff", "administrative" mean front_desk; "emergency",
"immediate", "911" mean emergent; "same day", "same-day" mean urgent; "non-urgent", "not urgent",
"low priority" mean routine.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Literal

from pydantic import Field

from clinalign.tasks.base import Metric, Prediction, Record, RejectedBuilder, Task
from clinalign.tasks.metrics import accuracy_metric, macro_f1
from clinalign.tasks.text import clean_answer, pick

PERSONNEL = ("physician", "nurse", "pharmacist", "front_desk")
URGENCY = ("emergent", "urgent", "routine")
Personnel = Literal["physician", "nurse", "pharmacist", "front_desk"]
Urgency = Literal["emergent", "urgent", "routine"]


def format_answer(personnel: str, urgency: str) -> str:
    return f"personnel: {personnel}\nurgency: {urgency}"


CHOICES = tuple(format_answer(p, u) for p in PERSONNEL for u in URGENCY)


class TriageRecord(Record):
    message: str = Field(min_length=1, description="the patient portal message")
    personnel: Personnel
    urgency: Urgency


# --------------------------------------------------------------------------------------------------
# Parsing

_SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "personnel": {
        "physician": ("physician", "doctor", "md", "provider", "prescriber", "attending"),
        "nurse": ("nurse", "rn", "nursing", "triage nurse"),
        "pharmacist": ("pharmacist", "pharmacy", "pharmd"),
        "front_desk": ("front desk", "front-desk", "frontdesk", "receptionist", "reception", "scheduling",
                       "office staff", "administrative", "admin staff", "clerical"),
    },
    "urgency": {
        "emergent": ("emergent", "emergency", "immediate", "immediately", "911"),
        "urgent": ("urgent", "same day", "same-day"),
        "routine": ("routine", "non-urgent", "non urgent", "nonurgent", "not urgent", "low priority"),
    },
}
_FIELD_NAMES = {
    "personnel": r"personnel|responder|respondent|route to|routed to|recipient|role",
    "urgency": r"urgency|priority|acuity|triage level",
}
_PATTERNS = {
    field: [(label, re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(s) for s in syns) + r")s?(?![\w-])"))
            for label, syns in by_label.items()]
    for field, by_label in _SYNONYMS.items()
}
# "not urgent" must not also count as urgent: the longest match at a position wins
_NEGATED_URGENT = re.compile(r"(?:non[- ]?|not )urgent")


def _labels_in(field: str, text: str) -> list[tuple[int, str]]:
    if field == "urgency":
        text = _NEGATED_URGENT.sub(lambda m: "routine".ljust(len(m.group(0))), text)
    return sorted((m.start(), label) for label, pat in _PATTERNS[field] for m in pat.finditer(text))


def _extract(field: str, text: str) -> str | None:
    """The label named right after a field name (``urgency: urgent``), else the one label the text names."""
    other = "urgency" if field == "personnel" else "personnel"
    for m in re.finditer(rf"\b(?:{_FIELD_NAMES[field]})\b\s*(?:is|level)?\s*[:=\-]?", text):
        region = text[m.end(): m.end() + 40]
        stop = re.search(rf"\b(?:{_FIELD_NAMES[other]})\b|[\n;.]", region)
        found = {label for _, label in _labels_in(field, region[: stop.start()] if stop else region)}
        if found:
            return found.pop() if len(found) == 1 else None  # "urgent or emergent" is no answer
    labels = {label for _, label in _labels_in(field, text)}
    return labels.pop() if len(labels) == 1 else None


def parse_triage(text: str) -> Prediction:
    """The canonical ``personnel: X\\nurgency: Y`` answer from free text, or None if either is missing or
    ambiguous."""
    t = clean_answer(text, keep_newlines=True)
    personnel, urgency = _extract("personnel", t), _extract("urgency", t)
    if personnel is None or urgency is None:
        return None
    return format_answer(personnel, urgency)


def split_answer(pred: Prediction) -> tuple[str | None, str | None]:
    """(personnel, urgency) of a canonical answer; (None, None) for an unparseable one."""
    if pred is None:
        return None, None
    m = re.fullmatch(r"personnel: (\w+)\nurgency: (\w+)", pred)
    return (m.group(1), m.group(2)) if m else (None, None)


# --------------------------------------------------------------------------------------------------
# Metrics and rejected answers


def _field_f1(field: int, labels: tuple[str, ...]) -> Callable[[list[TriageRecord], list[Prediction]], float]:
    def compute(records: list[TriageRecord], preds: list[Prediction]) -> float:
        golds = [(r.personnel, r.urgency)[field] for r in records]
        return macro_f1(golds, [split_answer(p)[field] for p in preds], labels)

    return compute


def _other(rng: random.Random, labels: tuple[str, ...], not_this: str) -> str:
    return pick(rng, [lab for lab in labels if lab != not_this])


class MessageTriage(Task):
    id = "message_triage"
    description = "Route a patient portal message: responding personnel and urgency"
    record_type = TriageRecord
    choices = CHOICES
    max_new_tokens = 24

    def prompt(self, record: TriageRecord) -> str:
        return PROMPT.format(message=record.message)

    def answer(self, record: TriageRecord) -> str:
        return format_answer(record.personnel, record.urgency)

    def parse(self, text: str) -> Prediction:
        return parse_triage(text)

    def stratum(self, record: TriageRecord) -> str:
        return f"{record.personnel}/{record.urgency}"  # one line: it is shown in summaries

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (
            Metric("f1_personnel", "paired_bootstrap", _field_f1(0, PERSONNEL),
                   covers="macro F1 over the responders (physician, nurse, pharmacist, front desk), each "
                          "weighted equally; an unparseable answer is wrong. Not: urgency (scored apart)."),
            Metric("f1_urgency", "paired_bootstrap", _field_f1(1, URGENCY),
                   covers="macro F1 over emergent / urgent / routine, each weighted equally, so the rare "
                          "emergent messages count as much as routine ones; an unparseable answer is wrong. "
                          "Not: the direction of an error (under-triage and over-triage cost the same)."),
            accuracy_metric(lambda r: r.personnel, "accuracy_personnel", lambda p: split_answer(p)[0],
                            covers="share of messages routed to the gold responder. Not: urgency, or rare "
                                   "responders (a model sending everything to the commonest scores its share)."),
            accuracy_metric(lambda r: r.urgency, "accuracy_urgency", lambda p: split_answer(p)[1],
                            covers="share of messages given the gold urgency. Not: the direction of an error, or "
                                   "rare levels (calling everything routine scores the share of routine messages)."),
        )

    @property
    def rejected_builders(self) -> dict[str, RejectedBuilder]:
        # wrong_both first (the default): each pair then teaches both halves of the answer
        return {
            "wrong_both": lambda r, rng: format_answer(_other(rng, PERSONNEL, r.personnel),
                                                       _other(rng, URGENCY, r.urgency)),
            "wrong_personnel": lambda r, rng: format_answer(_other(rng, PERSONNEL, r.personnel), r.urgency),
            "wrong_urgency": lambda r, rng: format_answer(r.personnel, _other(rng, URGENCY, r.urgency)),
        }


PROMPT = (
    "Triage this patient portal message: who should respond (physician: results, diagnosis, treatment; nurse: "
    "care of a known condition or recent procedure; pharmacist: medications; front_desk: administration) and "
    "how soon (emergent: within the hour; urgent: within 24 hours; routine). Reply in exactly this format:\n"
    "personnel: <physician|nurse|pharmacist|front_desk>\nurgency: <emergent|urgent|routine>\n\n"
    "Message:\n{message}"
)

TASK = MessageTriage()
