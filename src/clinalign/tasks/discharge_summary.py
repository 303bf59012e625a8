"""Discharge summarisation: a discharge note -> a short summary, scored against the note's key facts.

Until clinicians rate summaries (see rate/), a deterministic rubric stands in for their 1-5 Likert
score; RUBRIC is shown to raters too, so both scales mean the same thing.
"""

from __future__ import annotations

import random
import re
from typing import Literal

from pydantic import BaseModel, field_validator

from clinalign.tasks.base import Metric, Prediction, Record, Task

RUBRIC = """5 - every key fact (diagnosis, procedures, each discharge medication with its dose, follow-up), nothing false
4 - one key fact missing, or one false statement (wrong dose, invented diagnosis or medication)
3 - about half of the key facts, or two false statements
2 - most key facts missing, or three false statements
1 - unusable: almost nothing correct, or four or more false statements"""


class Fact(BaseModel):
    kind: Literal["diagnosis", "procedure", "medication", "follow_up", "finding"]
    text: str
    name: str | None = None
    dose: str | None = None


class DischargeRecord(Record):
    note: str
    summary: str
    facts: list[Fact]

    @field_validator("note", "summary")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty text")
        return v


ADMISSIONS = {
    "acute decompensated heart failure": (["transthoracic echocardiogram"], ["furosemide", "metoprolol succinate", "lisinopril", "spironolactone"]),
    "community-acquired pneumonia": (["chest radiograph"], ["amoxicillin-clavulanate", "azithromycin", "albuterol inhaler"]),
    "COPD exacerbation": (["arterial blood gas"], ["prednisone", "tiotropium", "albuterol inhaler", "doxycycline"]),
    "diabetic ketoacidosis": (["insulin infusion protocol"], ["insulin glargine", "insulin lispro", "metformin"]),
    "upper gastrointestinal bleed": (["esophagogastroduodenoscopy"], ["pantoprazole", "ferrous sulfate", "sucralfate"]),
    "acute ischemic stroke": (["MRI brain", "carotid ultrasound"], ["aspirin", "clopidogrel", "atorvastatin"]),
    "urosepsis": (["renal ultrasound"], ["ciprofloxacin", "tamsulosin", "acetaminophen"]),
    "atrial fibrillation with rapid ventricular response": (["transthoracic echocardiogram"], ["apixaban", "diltiazem", "metoprolol tartrate"]),
    "lower extremity cellulitis": (["venous duplex ultrasound"], ["cephalexin", "acetaminophen", "ibuprofen"]),
    "pulmonary embolism": (["CT pulmonary angiography"], ["apixaban", "acetaminophen"]),
}
DOSES = {
    "furosemide": ["20 mg daily", "40 mg daily", "40 mg twice daily"], "metoprolol succinate": ["25 mg daily", "50 mg daily"],
    "lisinopril": ["5 mg daily", "10 mg daily"], "spironolactone": ["12.5 mg daily", "25 mg daily"],
    "amoxicillin-clavulanate": ["875 mg twice daily"], "azithromycin": ["250 mg daily", "500 mg daily"],
    "albuterol inhaler": ["2 puffs every 4 hours as needed"], "prednisone": ["40 mg daily", "20 mg daily"],
    "tiotropium": ["18 mcg daily"], "doxycycline": ["100 mg twice daily"], "insulin glargine": ["18 units nightly", "24 units nightly"],
    "insulin lispro": ["4 units with meals", "6 units with meals"], "metformin": ["500 mg twice daily", "1000 mg twice daily"],
    "pantoprazole": ["40 mg twice daily", "40 mg daily"], "ferrous sulfate": ["325 mg daily"], "sucralfate": ["1 g four times daily"],
    "aspirin": ["81 mg daily"], "clopidogrel": ["75 mg daily"], "atorvastatin": ["40 mg daily", "80 mg daily"],
    "ciprofloxacin": ["500 mg twice daily"], "tamsulosin": ["0.4 mg nightly"], "acetaminophen": ["650 mg every 6 hours as needed"],
    "apixaban": ["5 mg twice daily", "10 mg twice daily"], "diltiazem": ["120 mg daily", "180 mg daily"],
    "metoprolol tartrate": ["25 mg twice daily", "50 mg twice daily"], "cephalexin": ["500 mg four times daily"],
    "ibuprofen": ["400 mg every 8 hours as needed"],
}
#: drugs a summary may invent; any of these not in the note is a false fact
MED_VOCAB = sorted({*DOSES, "warfarin", "levofloxacin", "hydrochlorothiazide", "amlodipine", "gabapentin", "digoxin"})
DX_VOCAB = sorted({*ADMISSIONS, "sepsis", "myocardial infarction", "acute kidney injury"})
FOLLOW_UPS = ["primary care in 1 week", "cardiology clinic in 2 weeks", "pulmonology clinic in 3 weeks",
              "repeat labs in 5 days", "gastroenterology clinic in 4 weeks", "neurology clinic in 6 weeks"]
COMORBID = ["hypertension", "type 2 diabetes", "chronic kidney disease stage 3", "obesity", "hyperlipidemia",
            "osteoarthritis", "GERD", "hypothyroidism", "former tobacco use"]
COURSE = ["improved steadily", "required a brief step-down unit stay before improving", "was monitored on telemetry",
          "was seen by physical therapy and cleared for home", "tolerated a regular diet by day 2"]


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w.\s-]", " ", s.lower())).strip()


def score_summary(record: DischargeRecord, summary: str | None) -> dict[str, float]:
    """Fact recall, false facts and the rubric Likert score of one summary (see RUBRIC).

    A fact is recalled when its canonical phrase appears (case/punctuation-insensitive); a
    medication needs its name and its dose. False facts: a medication or diagnosis from the known
    vocabulary that the note does not contain, or a listed medication with a different dose.
    """
    s = _norm(summary or "")
    note = _norm(record.note)
    recalled = 0
    wrong_doses = 0
    for f in record.facts:
        if f.kind == "medication" and f.name and f.dose:
            if _norm(f.name) in s:
                dose_here = _dose_after(s, _norm(f.name))
                if dose_here is not None and dose_here != _norm(f.dose).split(" ")[0]:
                    wrong_doses += 1
                elif _norm(f.dose) in s:
                    recalled += 1
        elif _norm(f.text) in s:
            recalled += 1
    invented = sum(1 for m in MED_VOCAB if _mentions(s, m) and not _mentions(note, m))
    invented += sum(1 for d in DX_VOCAB if _mentions(s, d) and not _mentions(note, d))
    recall = recalled / len(record.facts) if record.facts else 1.0
    false = invented + wrong_doses
    missing_penalty = 0 if recall >= 0.999 else 1 if recall >= 0.75 else 2 if recall >= 0.5 else 3
    likert = max(1, 5 - missing_penalty - false) if s else 1
    return {"fact_recall": recall, "false_facts": float(false), "wrong_doses": float(wrong_doses), "likert": float(likert)}


def _mentions(text: str, term: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(_norm(term))}(?![\w-])", text) is not None


def _dose_after(s: str, name: str) -> str | None:
    m = re.search(rf"{re.escape(name)}\s+(\d+(?:\.\d+)?)\s*(?:mg|mcg|units|g|puffs)", s)
    return m.group(1) if m else None


class DischargeSummaryTask(Task):
    id = "discharge_summary"
    description = "Discharge note -> short summary (fact recall, false facts, rubric Likert)"
    record_type = DischargeRecord
    choices = None
    max_new_tokens = 160

    def prompt(self, record: DischargeRecord) -> str:
        return ("Summarize this discharge note for the patient's primary care physician in 2-4 sentences: the "
                "diagnosis, key procedures, every discharge medication with its dose, and follow-up.\n\n"
                + record.note)

    def answer(self, record: DischargeRecord) -> str:
        return record.summary

    def parse(self, text: str) -> Prediction:
        t = re.sub(r"<\|[^|]*\|>", "", text).strip()
        t = re.sub(r"^(summary|assistant)\s*:\s*", "", t, flags=re.I).strip()
        return t or None

    @property
    def metrics(self) -> tuple[Metric, ...]:
        def mean_of(key: str):
            def per_item(r: DischargeRecord, p: Prediction) -> float:
                return score_summary(r, p)[key]

            def compute(recs, preds) -> float:
                return sum(per_item(r, p) for r, p in zip(recs, preds, strict=True)) / max(len(recs), 1)

            return compute, per_item

        out = []
        for key, better in (("likert", True), ("fact_recall", True), ("false_facts", False)):
            compute, per_item = mean_of(key)
            out.append(Metric(key, "wilcoxon", compute, per_item=per_item, higher_is_better=better))
        return tuple(out)

    @property
    def rejected_builders(self):
        return {"omit_fact": _omit_fact, "wrong_dose": _wrong_dose, "invented_fact": _invented_fact}

    def generate(self, n: int, seed: int) -> list[DischargeRecord]:
        rng = random.Random(seed)
        out: list[DischargeRecord] = []
        seen: set[str] = set()
        while len(out) < n:
            rec = _make(rng, f"dc-{len(out) + 1:06d}")
            if rec.note in seen:
                continue
            seen.add(rec.note)
            out.append(rec)
        return out


def _make(rng: random.Random, rid: str) -> DischargeRecord:
    dx = rng.choice(list(ADMISSIONS))
    procs, meds_pool = ADMISSIONS[dx]
    meds = rng.sample(meds_pool, k=min(len(meds_pool), rng.randint(2, 4)))
    doses = {m: rng.choice(DOSES[m]) for m in meds}
    fu = rng.choice(FOLLOW_UPS)
    age, sex = rng.randint(34, 91), rng.choice(["man", "woman"])
    comorbid = ", ".join(rng.sample(COMORBID, 2))
    los = rng.randint(2, 9)
    note = (
        f"DISCHARGE NOTE\nHPI: {age}-year-old {sex} with {comorbid} admitted with {dx}.\n"
        f"Hospital course: Over {los} days the patient {rng.choice(COURSE)}. "
        f"Labs on admission: creatinine {rng.uniform(0.6, 2.1):.1f}, hemoglobin {rng.uniform(8.5, 15.0):.1f}.\n"
        f"Procedures: {'; '.join(procs)}.\n"
        "Discharge medications:\n" + "\n".join(f"- {m} {doses[m]}" for m in meds) + "\n"
        f"Follow-up: {fu}.\n"
    )
    facts = [Fact(kind="diagnosis", text=dx)] + [Fact(kind="procedure", text=p) for p in procs]
    facts += [Fact(kind="medication", text=f"{m} {doses[m]}", name=m, dose=doses[m]) for m in meds]
    facts.append(Fact(kind="follow_up", text=fu))
    summary = _render(dx, procs, [(m, doses[m]) for m in meds], fu)
    return DischargeRecord(id=rid, note=note, summary=summary, facts=facts)


def _render(dx: str, procs: list[str], meds: list[tuple[str, str]], fu: str | None) -> str:
    parts = [f"Admitted for {dx}; work-up included {' and '.join(procs)}." if procs else f"Admitted for {dx}."]
    if meds:
        parts.append("Discharged on " + ", ".join(f"{m} {d}" for m, d in meds) + ".")
    if fu:
        parts.append(f"Follow-up: {fu}.")
    return " ".join(parts)


def _parts(r: DischargeRecord):
    dx = next(f.text for f in r.facts if f.kind == "diagnosis")
    procs = [f.text for f in r.facts if f.kind == "procedure"]
    meds = [(f.name, f.dose) for f in r.facts if f.kind == "medication" and f.name and f.dose]
    fu = next((f.text for f in r.facts if f.kind == "follow_up"), None)
    return dx, procs, meds, fu


def _omit_fact(r: DischargeRecord, rng: random.Random) -> str:
    dx, procs, meds, fu = _parts(r)
    if meds and (fu is None or rng.random() < 0.7):
        dropped = rng.choice(meds)
        meds = [m for m in meds if m != dropped]
    else:
        fu = None
    return _render(dx, procs, meds, fu)


def _wrong_dose(r: DischargeRecord, rng: random.Random) -> str:
    dx, procs, meds, fu = _parts(r)
    if not meds:
        return _invented_fact(r, rng)
    i = rng.randrange(len(meds))
    name, dose = meds[i]
    num = re.match(r"\d+(?:\.\d+)?", dose)
    wrong = f"{float(num.group()) * rng.choice([2, 4, 10]):g}{dose[num.end():]}" if num else "10 mg daily"
    meds[i] = (name, wrong)
    return _render(dx, procs, meds, fu)


def _invented_fact(r: DischargeRecord, rng: random.Random) -> str:
    dx, procs, meds, fu = _parts(r)
    note = _norm(r.note)
    extra = rng.choice([m for m in MED_VOCAB if not _mentions(note, m)])
    return _render(dx, procs, [*meds, (extra, rng.choice(DOSES.get(extra, ["5 mg daily"])))], fu)


TASK = DischargeSummaryTask()
