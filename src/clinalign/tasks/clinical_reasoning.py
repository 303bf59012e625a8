"""Clinical reasoning: a case vignette with 4-5 lettered options -> the letter of the best diagnosis
or next treatment. Distractors come from the same organ system (see knowledge.py), so the model
must reason from the findings, not from the topic."""

from __future__ import annotations

import random
import re
from typing import Literal

from pydantic import field_validator, model_validator

from clinalign.eval.metrics import accuracy
from clinalign.tasks.base import Metric, Prediction, Record, Task
from clinalign.tasks.knowledge import CONDITIONS, Condition, by_system

LETTERS = ("A", "B", "C", "D", "E")


class ReasoningRecord(Record):
    vignette: str
    options: dict[str, str]
    answer: str
    question_type: Literal["diagnosis", "treatment"] = "diagnosis"

    @field_validator("vignette")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty text")
        return v

    @field_validator("options")
    @classmethod
    def _letters(cls, v: dict[str, str]) -> dict[str, str]:
        if not 2 <= len(v) <= 5 or any(k not in LETTERS for k in v):
            raise ValueError("expected 2-5 options keyed by letters A-E")
        return v

    @model_validator(mode="after")
    def _answer_is_option(self) -> ReasoningRecord:
        if self.answer not in self.options:
            raise ValueError(f"answer {self.answer!r} is not one of the options {', '.join(self.options)}")
        return self


QUESTIONS = {
    "diagnosis": "Which is the most likely diagnosis?",
    "treatment": "What is the most appropriate next step in management?",
}
PROMPT = "{vignette}\n\n{question}\n{options}\n\nAnswer with the letter of the best option."
SEXES = ("man", "woman")
SETTINGS = ("presents to the emergency department", "is seen in clinic", "calls the on-call physician and is sent in",
            "is evaluated on the ward", "arrives by ambulance")


class ClinicalReasoningTask(Task):
    id = "clinical_reasoning"
    description = "Case vignette + lettered options -> the letter of the best diagnosis or treatment"
    record_type = ReasoningRecord
    choices = LETTERS
    max_new_tokens = 8

    def choices_for(self, record: ReasoningRecord) -> tuple[str, ...]:
        return tuple(record.options)

    def prompt(self, record: ReasoningRecord) -> str:
        options = "\n".join(f"{k}. {v}" for k, v in record.options.items())
        return PROMPT.format(vignette=record.vignette, question=QUESTIONS[record.question_type], options=options)

    def answer(self, record: ReasoningRecord) -> str:
        return record.answer

    def parse(self, text: str) -> Prediction:
        t = text.strip()
        m = re.match(r"^\(?([A-E])\)?(?:[.):\s]|$)", t) or re.search(r"\b(?:answer|option)\s*(?:is)?\s*:?\s*\(?([A-E])\b", t, re.I)
        return m.group(1).upper() if m else None

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (Metric("accuracy", "mcnemar", lambda recs, preds: accuracy([r.answer for r in recs], preds),
                       per_item=lambda r, p: float(r.answer == p)),)

    @property
    def rejected_builders(self):
        return {"distractor": _distractor, "wrong_label": _wrong_label}

    def generate(self, n: int, seed: int) -> list[ReasoningRecord]:
        rng = random.Random(seed)
        systems = by_system()
        out: list[ReasoningRecord] = []
        seen: set[str] = set()
        while len(out) < n:
            cond = rng.choice(CONDITIONS)
            qtype = rng.choice(("diagnosis", "treatment"))
            vignette = _vignette(cond, rng)
            if vignette in seen:
                continue
            seen.add(vignette)
            same = [c for c in systems[cond.system] if c is not cond]
            others = [c for c in CONDITIONS if c.system != cond.system]
            k = rng.choice((4, 5))
            pool = rng.sample(same, min(len(same), k - 1))
            pool += rng.sample(others, k - 1 - len(pool))
            options_conds = [cond, *pool]
            rng.shuffle(options_conds)
            field = "name" if qtype == "diagnosis" else "treatment"
            options = {LETTERS[i]: getattr(c, field) for i, c in enumerate(options_conds)}
            answer = LETTERS[options_conds.index(cond)]
            out.append(ReasoningRecord(id=f"reason-{len(out) + 1:06d}", vignette=vignette, options=options,
                                       answer=answer, question_type=qtype))
        return out


def _vignette(cond: Condition, rng: random.Random) -> str:
    age = rng.randint(19, 88)
    vitals = (f"Temperature {rng.uniform(36.4, 39.6):.1f} C, heart rate {rng.randint(62, 128)}, "
              f"blood pressure {rng.randint(92, 168)}/{rng.randint(52, 98)}, SpO2 {rng.randint(89, 99)}%.")
    findings = rng.sample(cond.findings, len(cond.findings))
    return (f"A {age}-year-old {rng.choice(SEXES)} {rng.choice(SETTINGS)} with {rng.choice(cond.presentation)}. "
            f"{vitals} Evaluation shows {findings[0]}" + (f"; {findings[1]}." if len(findings) > 1 else "."))


_SYSTEM_OF = {text: c.system for c in CONDITIONS for text in (c.name, c.treatment)}


def _distractor(record: ReasoningRecord, rng: random.Random) -> str:
    """The most plausible wrong option: one from the correct answer's organ system when there is one."""
    wrong = [k for k in record.options if k != record.answer]
    system = _SYSTEM_OF.get(record.options[record.answer])
    same = [k for k in wrong if system is not None and _SYSTEM_OF.get(record.options[k]) == system]
    return rng.choice(same or wrong)


def _wrong_label(record: ReasoningRecord, rng: random.Random) -> str:
    return rng.choice([k for k in record.options if k != record.answer])


TASK = ClinicalReasoningTask()
