"""Discharge summarisation: a discharge note -> a short summary, scored against the note's key facts.

The task is assembled here from its parts: `schema` (the record and its facts), `vocab` (the clinical
vocabulary), `scoring` (the rubric, the fact matcher and the metrics: how any score can be checked by
hand is written there) and `summaries` (summaries rendered from facts: the reference, and the
rejected ones for DPO pairs).
"""

from __future__ import annotations

import re

from clinalign.tasks.base import Metric, Prediction, RejectedBuilder, Task
from clinalign.tasks.discharge_summary.schema import DischargeRecord, Fact
from clinalign.tasks.discharge_summary.scoring import (
    MAX_WORDS,
    RUBRIC,
    Assessment,
    Dose,
    assess,
    clauses,
    keywords,
    likert_score,
    metrics,
    normalize,
    parse_dose,
    score_summary,
)
from clinalign.tasks.discharge_summary.summaries import (
    invented_fact,
    join_phrases,
    omit_fact,
    render_summary,
    wrong_dose,
)
from clinalign.tasks.discharge_summary.vocab import DIAGNOSES, EXTRA_MEDS, MEDS, PROCEDURES, VOCAB
from clinalign.tasks.text import strip_chat_artefacts

#: a heading small models put before their summary ("**Summary:**", "Brief summary:")
_HEADING = r"\**\s*(brief |short |discharge )?summary\s*\**\s*:\s*\**"


class DischargeSummaryTask(Task):
    id = "discharge_summary"
    description = "Discharge note -> short summary (rubric Likert, fact recall, false facts)"
    record_type = DischargeRecord
    choices = None
    max_new_tokens = 160

    def prompt(self, record: DischargeRecord) -> str:
        return ("Summarize this discharge note for the patient's primary care physician in 2-5 sentences: the "
                "diagnosis, key findings and procedures, every discharge medication with its dose, and the "
                "follow-up plan. Do not add anything that is not in the note.\n\n" + record.note)

    def answer(self, record: DischargeRecord) -> str:
        return record.summary

    def baseline_features(self, record: DischargeRecord) -> str:
        return record.note

    extractive_description = "the note's diagnosis line, discharge medication and follow-up lists"

    def extractive_answer(self, record: DischargeRecord) -> str:
        """What a clerk would copy out of the note: its diagnosis, medication list and follow-up list
        (any of them missing from a user's note is skipped)."""
        lines = [x.strip() for x in record.note.splitlines()]
        dx = next((x.split(":", 1)[1].strip().rstrip(".") for x in lines
                   if x.lower().startswith("discharge diagnosis:")), None)

        def listed(heading: str) -> list[str]:
            start = next((i for i, x in enumerate(lines) if x.lower().rstrip(":") == heading), None)
            if start is None:
                return []
            items = []
            for x in lines[start + 1:]:
                if not x.startswith("- "):
                    break
                items.append(re.sub(r"\s*\((?:new|NEW)\)$", "", x[2:]).strip())
            return [i for i in items if i.lower() != "none"]

        out = [f"Admitted for {dx}."] if dx else []
        if meds := listed("discharge medications"):
            out.append("Discharge medications: " + ", ".join(meds) + ".")
        if follow := listed("follow-up"):
            out.append("Follow-up: " + join_phrases(follow) + ".")
        return " ".join(out) or super().extractive_answer(record)

    def parse(self, text: str) -> Prediction:
        """The model's summary without chat-template tokens or a 'Summary:' heading; None if empty."""
        t = strip_chat_artefacts(text, heading=_HEADING)
        return re.sub(r"[ \t]+", " ", t).strip() or None

    def judge(self, record: DischargeRecord, answer: str) -> float:
        """The rubric's Likert (1-5; false facts and length already lower it), with fact recall (0-1)
        at a tenth of a Likert point to order summaries of the same grade."""
        s = score_summary(record, self.parse(answer))
        return s["likert"] + 0.1 * s["fact_recall"]

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return metrics()

    @property
    def rejected_builders(self) -> dict[str, RejectedBuilder]:
        return {"omit_fact": omit_fact, "wrong_dose": wrong_dose, "invented_fact": invented_fact}


TASK = DischargeSummaryTask()

__all__ = [
    "DIAGNOSES", "EXTRA_MEDS", "MAX_WORDS", "MEDS", "PROCEDURES", "RUBRIC", "TASK", "VOCAB", "Assessment",
    "DischargeRecord", "DischargeSummaryTask", "Dose", "Fact", "assess", "clauses", "invented_fact", "keywords",
    "likert_score", "normalize", "omit_fact", "parse_dose", "render_summary", "score_summary",
    "wrong_dose",
]
