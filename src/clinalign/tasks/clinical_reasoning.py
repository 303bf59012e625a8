"""Clinical reasoning: a case vignette with 4-5 lettered options -> the letter of the best diagnosis
or next treatment.

Vignettes are built from the knowledge table (knowledge.py): age and sex that fit the condition,
a presentation, background, vital signs drawn from the condition's profile, and key findings.
Distractors are the conditions a clinician would weigh against it (its "confusable" list, then its
organ system), so the model must reason from the findings, not from the topic. The correct letter
is uniform over the positions, so a model cannot win by always answering "A".
"""

from __future__ import annotations

import random
import re
from typing import Literal

from pydantic import ValidationInfo, field_validator

from clinalign.tasks.base import Metric, Prediction, Record, Task
from clinalign.tasks.knowledge import BY_NAME, CONDITIONS, VITALS, Condition, by_system
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

ARRIVAL = {
    "emergency": ("presents to the emergency department", "is brought to the emergency department by ambulance",
                  "is brought to the emergency department by family", "comes to the emergency department"),
    "clinic": ("presents to clinic", "is seen in the primary care clinic", "comes to urgent care"),
}
VIGNETTES = (
    "{article} {age}-year-old {sex} {arrival} with {presentation}. History: {history}. Vital signs: {vitals}. "
    "Examination and work-up show {findings}.",
    "{article} {age}-year-old {sex} {arrival} with {presentation}. Background includes {history}. {vitals_sentence} "
    "Evaluation shows {findings}.",
    "{age}-year-old {sex_adj}. Chief complaint: {presentation}. Past history: {history}.\n"
    "Vitals: {vitals}.\nFindings: {findings}.",
)


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
        return (accuracy_metric(lambda r: r.answer),)

    @property
    def rejected_builders(self):
        return {"distractor": distractor, "wrong_label": wrong_label}

    def generate(self, n: int, seed: int) -> list[ReasoningRecord]:
        rng = random.Random(seed)
        out: list[ReasoningRecord] = []
        seen: set[str] = set()
        while len(out) < n:
            cond = rng.choice(CONDITIONS)
            vignette = make_vignette(cond, rng)
            qtype: QuestionType = rng.choice(("diagnosis", "treatment"))
            k = rng.choice((4, 5))
            wrong = pick_distractors(cond, qtype, k - 1, rng)
            rng.shuffle(wrong)  # the most plausible distractor must not sit at a fixed letter
            position = rng.randrange(k)  # uniform over the letters this record has
            conds = [*wrong[:position], cond, *wrong[position:]]
            if vignette in seen:
                continue
            seen.add(vignette)
            field = "name" if qtype == "diagnosis" else "treatment"
            out.append(ReasoningRecord(id=f"reason-{len(out) + 1:06d}", vignette=vignette,
                                       options={LETTERS[i]: getattr(c, field) for i, c in enumerate(conds)},
                                       answer=LETTERS[position], question_type=qtype))
        return out


def pick_distractors(cond: Condition, qtype: str, k: int, rng: random.Random) -> list[Condition]:
    """``k`` wrong options, most plausible first: the condition's confusable list (its first entry
    always), then its organ system, then conditions that are confused with it, then any. A treatment
    question never offers another condition's treatment that would also be right."""
    systems = by_system()
    confusable = [BY_NAME[x] for x in cond.confusable]
    rest_conf = confusable[1:]
    rng.shuffle(rest_conf)
    confused_with_it = [c for c in CONDITIONS if cond.name in c.confusable]
    tiers = [confusable[:1] + rest_conf,
             rng.sample(systems[cond.system], len(systems[cond.system])),
             rng.sample(confused_with_it, len(confused_with_it)),
             rng.sample(CONDITIONS, len(CONDITIONS))]
    out: list[Condition] = []
    for tier in tiers:
        for c in tier:
            if c is cond or c in out or (qtype == "treatment" and c.group == cond.group):
                continue
            out.append(c)
    return out[:k]


def _vitals(profile: str, rng: random.Random, long: bool) -> str:
    v = VITALS[profile]
    temp = rng.uniform(*v.temp)
    hr, sbp, rr, spo2 = rng.randint(*v.hr), rng.randint(*v.sbp), rng.randint(*v.rr), rng.randint(*v.spo2)
    dbp = min(rng.randint(*v.dbp), sbp - 25)
    rhythm = f" ({v.rhythm})" if v.rhythm else ""
    if long:
        return (f"temperature {temp:.1f} °C, pulse {hr}{rhythm}, blood pressure {sbp}/{dbp} mm Hg, "
                f"respiratory rate {rr}, oxygen saturation {spo2}% on room air")
    return f"T {temp:.1f} °C, HR {hr}{rhythm}, BP {sbp}/{dbp}, RR {rr}, SpO2 {spo2}% on room air"


def _join(items: list[str]) -> str:
    """Items may contain "and" themselves, so a list of two is joined with ", and"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", and " + items[-1]


def make_vignette(cond: Condition, rng: random.Random) -> str:
    """A coherent case: demographics within the condition's range, its vital-sign profile, its
    telling history item and key finding (so the case is answerable) plus others, in varied order."""
    age = rng.randint(*cond.ages)
    sex = cond.sex if cond.sex != "any" else rng.choice(("male", "female"))
    template = rng.randrange(len(VIGNETTES))
    history = [cond.history[0], *rng.sample(cond.history[1:], rng.choice((0, 1)))]
    findings = [cond.findings[0], *rng.sample(cond.findings[1:], rng.choice((1, 2)))]
    rng.shuffle(findings)
    vitals = _vitals(cond.vitals, rng, long=rng.random() < 0.5)
    return VIGNETTES[template].format(
        article="An" if str(age).startswith("8") or age in (11, 18) else "A",
        age=age, sex="man" if sex == "male" else "woman", sex_adj=sex,
        arrival=rng.choice(ARRIVAL[cond.setting]), presentation=rng.choice(cond.presentation),
        history=_join(history) if template != 2 else "; ".join(history),
        vitals=vitals, vitals_sentence=f"Vital signs are {vitals}.",
        findings="; ".join(findings))


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
