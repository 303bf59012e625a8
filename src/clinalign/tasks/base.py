"""What every task provides. A task is a definition: its records' schema, how a record becomes a
prompt and a gold answer, how model text is parsed and scored, and how wrong answers for DPO pairs are
built. Adding one means one module, not touching the trainers, the evaluator or the study: a module in
`tasks/` for a bundled task, or a hospital's own module loaded as ``my_pkg.tasks:Readmission``
(see `tasks/__init__.py`). Where records come from is not the task's business: a user's files, or
for the bundled tasks a synthetic generator in `clinalign.synthetic`.

Conventions every task follows (the rest of the system relies on them):
- A record is a pydantic model with an ``id: str`` field plus the task's inputs and gold output.
- ``prompt(record)`` is the *user message* (no chat template; trainers and evaluators apply the
  tokenizer's template). ``answer(record)`` is the gold completion text.
- For closed-set tasks ``choices`` lists every allowed answer string exactly as ``answer`` writes
  it, so the evaluator can score each by log-likelihood. ``parse(text)`` maps free model text to one
  of them (or, for generation tasks, to a cleaned string) and returns ``None`` when it cannot:
  unparseable answers are counted, never guessed.
- ``metrics`` are computed on (records, predictions) where a prediction is a parsed answer or None.
- ``rejected_builders`` map a strategy name to ``f(record, rng) -> rejected answer`` for DPO pairs;
  the rejected answer must differ from ``answer(record)``.
"""

from __future__ import annotations

import hashlib
import json
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

Prediction = str | None


class Record(BaseModel):
    """Base of every task record. Unknown columns in a user's file are ignored, not an error."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    id: str


StatTest = Literal["mcnemar", "paired_bootstrap", "wilcoxon"]


@dataclass(frozen=True)
class Metric:
    """One reported number.

    ``compute`` gives the corpus-level value. ``per_item`` gives each item's value, which McNemar's
    and Wilcoxon's tests need. ``mean`` declares that ``compute`` is the mean of ``per_item``
    (accuracy, Likert, recall): the bootstrap then averages per-item scores computed once instead of
    recomputing the metric on every resample.
    ``test`` names the paired test the report uses for this metric: McNemar's exact test for 0/1
    per-item outcomes, a paired bootstrap for corpus-level scores such as F1, Wilcoxon signed-rank
    for ordinal or continuous per-item scores such as Likert.
    ``covers`` says in a sentence or two what the number counts and what it does not, so a reader
    of the report knows what a good score does not show.
    """

    name: str
    test: StatTest
    compute: Callable[[Sequence[Any], Sequence[Prediction]], float]
    per_item: Callable[[Any, Prediction], float] | None = None
    higher_is_better: bool = True
    mean: bool = False
    covers: str = ""

    def __call__(self, records: Sequence[Any], preds: Sequence[Prediction]) -> float:
        return self.compute(records, preds)


RejectedBuilder = Callable[[Any, random.Random], str]

#: what a model stage sees of a record (trained on, scored against); what the classical baseline reads
MODEL_VIEW = ("prompt", "answer", "choices_for")
BASELINE_VIEW = ("baseline_features", "option_texts", "answer")


class Task(ABC):
    """Base class for a task definition. Subclasses set the class attributes and implement the
    abstract methods; see `tasks/uti_classification.py`, or `docs/examples/readmission_task.py` for
    a task kept outside this package."""

    id: ClassVar[str]
    description: ClassVar[str]
    record_type: ClassVar[type[Record]]
    #: every allowed answer string for closed-set tasks; None for free-text generation tasks
    choices: ClassVar[tuple[str, ...] | None] = None
    #: max new tokens when the answer is generated rather than scored
    max_new_tokens: ClassVar[int] = 16
    #: whether the audit looks for near-duplicate texts (MinHash); off where the input is a handful of
    #: numbers, since two lab panels share most of their words yet describe different patients
    near_duplicates: ClassVar[bool] = True

    @abstractmethod
    def prompt(self, record: Any) -> str: ...

    @abstractmethod
    def answer(self, record: Any) -> str: ...

    @abstractmethod
    def parse(self, text: str) -> Prediction: ...

    @property
    @abstractmethod
    def metrics(self) -> tuple[Metric, ...]: ...

    @property
    @abstractmethod
    def rejected_builders(self) -> dict[str, RejectedBuilder]: ...

    def choices_for(self, record: Any) -> tuple[str, ...] | None:
        """The answers allowed for this record (tasks whose option set varies per record, such as
        4 or 5 lettered options, override this)."""
        return self.choices

    def duplicate_key(self, record: Any) -> str | None:
        """What makes two records the same input, for the exact-duplicate and leakage checks; None
        compares the prompts' normalised text. Tasks whose prompt varies in layout override this."""
        return None

    def baseline_features(self, record: Any) -> str | Mapping[str, float | str]:
        """What the classical baseline (eval/baselines.py) reads: the prompt's text by default; a
        mapping of named values for tasks whose input is a few numbers (binned and scaled there)."""
        return self.prompt(record)

    def option_texts(self, record: Any) -> dict[str, str] | None:
        """For options that vary per record (lettered answers): answer -> the option's text, so the
        baseline ranks options by their words; None where the answers are one fixed label set."""
        return None

    #: how :meth:`extractive_answer` builds its answer, for the report
    extractive_description: ClassVar[str] = "the input's first three sentences"

    def extractive_answer(self, record: Any) -> str:
        """The generation tasks' classical baseline: an answer copied from the input, no training."""
        import re

        text = str(self.baseline_features(record))
        return " ".join(re.split(r"(?<=[.!?])\s+", text.strip())[:3])

    def stratum(self, record: Any) -> str | None:
        """The label used to stratify splits; None for tasks without a label."""
        return self.answer(record) if self.choices is not None else None

    @property
    def is_closed_set(self) -> bool:
        return self.choices is not None

    @property
    def default_strategy(self) -> str:
        return next(iter(self.rejected_builders))

    def judge(self, record: Any, answer: str) -> float:
        """How good a model's ``answer`` text is for ``record``, higher is better: the verifier that
        on-policy preference pairs are ranked by (study/onpolicy_pairs.py). Closed-set: 1.0 when the answer
        parses to the gold label, else 0.0. Generation: the mean per-item value of the task's
        higher-is-better metrics (a declared task's ROUGE-L and fact recall); tasks whose metrics have
        different scales (a 1-5 Likert beside a recall) override this."""
        pred = self.parse(answer)
        if self.is_closed_set:
            return float(pred is not None and pred == self.answer(record))
        scores = [m.per_item(record, pred) for m in self.metrics if m.per_item and m.higher_is_better]
        if not scores:
            raise NotImplementedError(f"task {self.id}: no per-item metric to judge answers by; override judge()")
        return sum(scores) / len(scores)

    def prompt_fingerprint(self, records: Sequence[Any], view: Sequence[str] = MODEL_VIEW) -> str:
        """Hash of how this task renders ``records`` through the methods named in ``view``: the part
        of a cached stage's identity that a changed prompt template or answer format changes, for a
        task in code and a YAML-declared one alike. The stage's own records are rendered, not a probe,
        so a change in any branch of the template that they reach is caught."""
        h = hashlib.sha256(json.dumps([list(view), self.max_new_tokens]).encode())
        for r in records:
            h.update(json.dumps([getattr(self, m)(r) for m in view], sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]

    def evaluate(self, records: Sequence[Any], preds: Sequence[Prediction]) -> dict[str, float]:
        return {m.name: m(records, preds) for m in self.metrics}
