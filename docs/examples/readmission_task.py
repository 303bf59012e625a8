"""A hospital's own task, kept outside clinalign: will this patient be readmitted within 30 days?

Nothing in clinalign is edited to use it. With this file's folder on PYTHONPATH (or the module in an
installed package), give ``readmission_task:Readmission`` wherever a task id goes:

    clinalign data validate readmission_task:Readmission notes.jsonl
    clinalign data split readmission_task:Readmission notes.jsonl --out splits/

or in a study file: ``tasks: [{id: "readmission_task:Readmission", data: notes.jsonl}]``. A package
can register it by name instead, in its pyproject.toml:

    [project.entry-points."clinalign.tasks"]
    readmission = "readmission_task:Readmission"

The task has no synthetic generator: its records come from the hospital's files, one JSON object a
line: {"id": "...", "note": "...", "readmitted": "yes"}.
"""

from __future__ import annotations

import random
import re
from typing import Literal

from pydantic import Field

from clinalign.tasks import Metric, Prediction, Record, RejectedBuilder, Task
from clinalign.tasks.metrics import accuracy_metric, f1_for
from clinalign.tasks.text import clean_answer


class ReadmissionRecord(Record):
    note: str = Field(min_length=1, description="the discharge note")
    readmitted: Literal["yes", "no"]


class Readmission(Task):
    id = "readmission"
    description = "Discharge note -> readmitted within 30 days? (yes/no)"
    record_type = ReadmissionRecord
    choices = ("yes", "no")  # closed set: each answer is scored by its log-likelihood
    max_new_tokens = 4

    def prompt(self, record: ReadmissionRecord) -> str:
        return ("Read this discharge note. Will the patient be readmitted to hospital within 30 days? "
                "Answer with one word: yes or no.\n\nNote:\n" + record.note)

    def answer(self, record: ReadmissionRecord) -> str:
        return record.readmitted

    def parse(self, text: str) -> Prediction:
        """``yes`` or ``no`` when the answer names exactly one of them, else None (counted, never guessed)."""
        words = set(re.findall(r"\b(yes|no)\b", clean_answer(text)))
        return words.pop() if len(words) == 1 else None

    def baseline_features(self, record: ReadmissionRecord) -> str:
        return record.note  # the classical baseline reads the note, not the instruction around it

    @property
    def metrics(self) -> tuple[Metric, ...]:
        def f1_yes(records: list[ReadmissionRecord], preds: list[Prediction]) -> float:
            return f1_for([r.readmitted for r in records], preds, "yes")

        return (Metric("f1_yes", "paired_bootstrap", f1_yes), accuracy_metric(lambda r: r.readmitted))

    @property
    def rejected_builders(self) -> dict[str, RejectedBuilder]:
        def wrong_label(record: ReadmissionRecord, rng: random.Random) -> str:
            return "no" if record.readmitted == "yes" else "yes"

        return {"wrong_label": wrong_label}
