"""Synthetic case vignettes with lettered options, built from the knowledge table
(`clinalign.tasks.knowledge`).

A vignette has age and sex that fit the condition, a presentation, background, vital signs drawn from
the condition's profile, and key findings. Distractors are the conditions a clinician would weigh
against it (its "confusable" list, then its organ system), so the model must reason from the
findings, not from the topic. The correct letter is uniform over the positions, so a model cannot win
by always answering "A".
"""

from __future__ import annotations

import random

from clinalign.synthetic.common import distinct_records
from clinalign.tasks.clinical_reasoning import LETTERS, QuestionType, ReasoningRecord
from clinalign.tasks.knowledge import BY_NAME, CONDITIONS, VITALS, Condition, by_system


def generate(n: int, seed: int) -> list[ReasoningRecord]:
    rng = random.Random(seed)

    def draw(i: int) -> ReasoningRecord:
        cond = rng.choice(CONDITIONS)
        vignette = make_vignette(cond, rng)
        qtype: QuestionType = rng.choice(("diagnosis", "treatment"))
        k = rng.choice((4, 5))
        wrong = pick_distractors(cond, qtype, k - 1, rng)
        rng.shuffle(wrong)  # the most plausible distractor must not sit at a fixed letter
        position = rng.randrange(k)  # uniform over the letters this record has
        conds = [*wrong[:position], cond, *wrong[position:]]
        field = "name" if qtype == "diagnosis" else "treatment"
        return ReasoningRecord(id=f"reason-{i + 1:06d}", vignette=vignette,
                               options={LETTERS[j]: getattr(c, field) for j, c in enumerate(conds)},
                               answer=LETTERS[position], question_type=qtype)

    return distinct_records(n, draw, key=lambda r: r.vignette)


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
