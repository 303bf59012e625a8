"""UTI classification: does a clinical passage describe a patient with a urinary tract infection?

The paper's first task. Gold labels follow one rule, stated so a clinician can check any record:
``yes`` when the passage describes a symptomatic infection of the urinary tract (cystitis,
catheter-associated UTI, pyelonephritis, urosepsis); ``no`` otherwise, including the hard cases a
keyword matcher gets wrong: dysuria from an STI or vaginitis, asymptomatic bacteriuria (a positive
culture without symptoms is not an infection to treat), a contaminated culture with mixed flora,
infections elsewhere, and a kidney stone without infection.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from clinalign.tasks.base import Metric, Prediction, Record, RejectedBuilder, Task
from clinalign.tasks.metrics import accuracy_metric, f1_for
from clinalign.tasks.text import clean_answer

LABELS = ("yes", "no")


class UtiRecord(Record):
    text: str = Field(min_length=1, description="the clinical passage")
    label: Literal["yes", "no"]
    note_type: str | None = None


_NEGATIVE_PHRASES = re.compile(
    r"\b(?:does not|doesn't|do not|did not|not|no evidence of|unlikely|rules? out|without)\b[^.;]{0,40}"
    r"\b(?:describe|uti|urinary tract infection|infection|consistent)"
)
_POSITIVE_PHRASES = re.compile(
    r"\b(?:describes?|does describe|consistent with|has|having|indicates?|suggests?)\b[^.;]{0,30}"
    r"\b(?:uti|urinary tract infection|cystitis|pyelonephritis)\b"
)


def parse_yes_no(text: str) -> Prediction:
    """``yes``/``no`` from free model text, or None when it says neither or both."""
    t = clean_answer(text)
    if not t or re.match(r"^(?:yes|no)\s*(?:or|and|/|,)\s*(?:yes|no)\b", t):
        return None
    m = re.match(r"^(?:final answer|answer)?\s*[:\-]?\s*(yes|no)\b", t)
    if m:
        return m.group(1)
    m = re.search(r"\banswer\s*(?:is)?\s*[:\-]?\s*(yes|no)\b", t)
    if m:
        return m.group(1)
    words = set(re.findall(r"\b(yes|no)\b", t))
    if len(words) == 1:
        return words.pop()
    if words:
        return None
    neg, pos = bool(_NEGATIVE_PHRASES.search(t)), bool(_POSITIVE_PHRASES.search(t))
    if neg:
        return "no"  # "does not describe a UTI" also matches the positive pattern's words
    return "yes" if pos else None


#: The instruction states the labelling rule, as a team would brief a human annotator.
PROMPT = (
    "You are reviewing clinical documentation. Read the passage below and decide whether it describes a "
    "patient who has a urinary tract infection (UTI). Count cystitis, pyelonephritis, catheter-associated UTI "
    "and urosepsis as UTI. Do not count asymptomatic bacteriuria, a contaminated urine culture, painful "
    "urination caused by a sexually transmitted infection or vaginitis, a kidney stone without infection, or "
    "infections outside the urinary tract. Answer with one word: yes or no.\n\nPassage:\n{text}"
)


def _golds(records: list[UtiRecord]) -> list[str]:
    return [r.label for r in records]


class UtiClassification(Task):
    id = "uti_classification"
    description = "Does a clinical passage describe a patient with a urinary tract infection? (yes/no)"
    record_type = UtiRecord
    choices = LABELS
    max_new_tokens = 8

    def prompt(self, record: UtiRecord) -> str:
        return PROMPT.format(text=record.text)

    def answer(self, record: UtiRecord) -> str:
        return record.label

    def parse(self, text: str) -> Prediction:
        return parse_yes_no(text)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (
            Metric("f1_yes", "paired_bootstrap", lambda rs, ps: f1_for(_golds(rs), ps, "yes"),
                   covers="F1 of the answer 'yes' (the passage describes a patient with a UTI): how many "
                          "UTI passages are found and how many 'yes' answers are right; an unparseable "
                          "answer is wrong. Not: how well 'no' passages are recognised (see accuracy)."),
            accuracy_metric(lambda r: r.label,
                            covers="share of passages answered with the gold yes/no; an unparseable answer is "
                                   "wrong. Not: class balance (answering 'no' to everything scores the share of 'no')."),
        )

    @property
    def rejected_builders(self) -> dict[str, RejectedBuilder]:
        return {"wrong_label": lambda rec, rng: "no" if rec.label == "yes" else "yes"}


TASK = UtiClassification()
