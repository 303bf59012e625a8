"""Clinical reasoning: a case vignette with 4-5 lettered options -> the letter of the best diagnosis
or next treatment.

The options of a record vary (4 or 5 letters, their texts per case), so the allowed answers are the
record's own letters (``choices_for``) and the classical baseline ranks the options by their words.
The most plausible wrong option for a DPO pair is read from the knowledge table (knowledge.py): the
correct condition's "confusable" conditions first, then its organ system.
"""

from __future__ import annotations

import random
import re
from typing import Literal

from pydantic import ValidationInfo, field_validator

from clinalign.tasks.base import Metric, Prediction, Record, Task
from clinalign.tasks.knowledge import CONDITIONS, Condition, by_system
from clinalign.tasks.metrics import accuracy_metric

LETTERS: tuple[str, ...] = ("A", "B", "C", "D", "E")
QuestionType = Literal["diagnosis", "treatment"]


class ReasoningRecord(Record):
    vignette: str
    options: dict[str, str]
    answer: str
    question_type: QuestionType = "diagnosis"

    @field_validator("vignette")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty text")
        return v

    @field_validator("options")
    @classmethod
    def _letters(cls, v: dict[str, str]) -> dict[str, str]:
        keys = tuple(v)
        if keys not in (LETTERS[:4], LETTERS):
            raise ValueError(f"expected 4 or 5 options keyed A, B, C, D(, E) in order, got {', '.join(keys) or 'none'}")
        empty = [k for k, text in v.items() if not text.strip()]
        if empty:
            raise ValueError(f"option {empty[0]} is empty")
        if len({text.strip().casefold() for text in v.values()}) != len(v):
            raise ValueError("two options have the same text")
        return v

    @field_validator("answer")
    @classmethod
    def _answer_is_option(cls, v: str, info: ValidationInfo) -> str:
        options = info.data.get("options")
        if options is not None and v not in options:
            raise ValueError(f"answer {v!r} is not one of the options {', '.join(options)}")
        return v


QUESTIONS = {
    "diagnosis": ("Which is the most likely diagnosis?", "What is the most likely diagnosis?"),
    "treatment": ("What is the most appropriate next step in management?",
                  "Which is the most appropriate initial treatment?"),
}
PROMPT = "{vignette}\n\n{question}\n\n{options}\n\nAnswer with the letter of the best option."



class ClinicalReasoningTask(Task):
    id = "clinical_reasoning"
    description = "Case vignette + lettered options -> the letter of the best diagnosis or treatment"
    record_type = ReasoningRecord
    choices = LETTERS
    max_new_tokens = 8

    def choices_for(self, record: ReasoningRecord) -> tuple[str, ...]:
        return tuple(record.options)

    def baseline_features(self, record: ReasoningRecord) -> str:
        return record.vignette

    def option_texts(self, record: ReasoningRecord) -> dict[str, str]:
        return dict(record.options)

    def prompt(self, record: ReasoningRecord) -> str:
        options = "\n".join(f"{k}. {v}" for k, v in record.options.items())
        question = QUESTIONS[record.question_type][sum(map(ord, record.id)) % 2]  # stable per record
        return PROMPT.format(vignette=record.vignette, question=question, options=options)

    def answer(self, record: ReasoningRecord) -> str:
        return record.answer

    def parse(self, text: str) -> Prediction:
        """The letter from "C", "(C)", "C)", "C. Pneumonia", "**C**", "Answer: C", "The answer is (C)".
        Option text without its letter is not guessed at: None."""
        t = re.sub(r"[*_`\"']", "", text).strip()
        m = (re.match(r"^\(?([A-E])\)?[.):]?$", t)
             or re.match(r"^(?:\(([A-E])\)|([A-E])[.):])(?=\s|$)", t)
             or re.search(r"\b(?:answer|option|choice)(?:\s+(?:is|would be))?\s*[:\-]?\s*\(?([A-Ea-e])\b(?![-.]\w)",
                          t, re.IGNORECASE))
        if not m:
            return None
        letter = next(g for g in m.groups() if g)
        if letter.islower() and re.match(r"\s+[a-z]", t[m.end():]):
            return None  # "the answer is a pulmonary embolism": an article, not option A
        return letter.upper()

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (accuracy_metric(lambda r: r.answer,
                                covers="share of vignettes answered with the keyed option letter; an answer naming "
                                       "no single option is wrong; chance is one over the number of options. Not: "
                                       "the reasoning behind the pick (only the letter is scored)."),)

    @property
    def rejected_builders(self):
        return {"distractor": distractor, "wrong_label": wrong_label}


_BY_TEXT: dict[str, Condition] = {t.casefold(): c for c in CONDITIONS for t in (c.name, c.treatment)}


def distractor(record: ReasoningRecord, rng: random.Random) -> str:
    """The letter of the most plausible wrong option: the first of the correct condition's
    confusable conditions among the options, else one from its organ system, else any wrong one
    (a user's own options that are not in the knowledge table)."""
    wrong = [k for k in record.options if k != record.answer]
    truth = _BY_TEXT.get(record.options[record.answer].strip().casefold())
    if truth is not None:
        found = {c.name: k for k in wrong if (c := _BY_TEXT.get(record.options[k].strip().casefold()))}
        for name in truth.confusable:
            if name in found:
                return found[name]
        same = [found[c.name] for c in by_system()[truth.system] if c.name in found]
        if same:
            return rng.choice(same)
    return rng.choice(wrong)


def wrong_label(record: ReasoningRecord, rng: random.Random) -> str:
    return rng.choice([k for k in record.options if k != record.answer])


TASK = ClinicalReasoningTask()
