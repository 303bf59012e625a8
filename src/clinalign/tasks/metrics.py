"""Metric functions shared by the task definitions: pure functions on plain lists, and the accuracy
`Metric` every closed-set task reports.

An unparseable prediction (None) counts as wrong: it is never dropped, so a model that fails to
answer is not rewarded by a smaller denominator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from clinalign.tasks.base import Metric, Prediction

UNPARSEABLE = "<unparseable>"


def _fill(preds: Sequence[str | None]) -> list[str]:
    return [UNPARSEABLE if p is None else p for p in preds]


def accuracy(golds: Sequence[str], preds: Sequence[str | None]) -> float:
    if not golds:
        return float("nan")
    return sum(g == p for g, p in zip(golds, preds, strict=True)) / len(golds)


def _f1_counts(golds: Sequence[str], preds: Sequence[str | None], labels: Sequence[str]) -> np.ndarray:
    """Per-class F1 (0 where undefined, as sklearn's zero_division=0). Hand-rolled in numpy because
    the bootstrap calls it thousands of times; tests check it against sklearn."""
    g = np.asarray(golds, dtype=object)
    p = np.asarray(_fill(preds), dtype=object)
    out = np.zeros(len(labels))
    for i, lab in enumerate(labels):
        tp = float(np.sum((g == lab) & (p == lab)))
        denom = float(np.sum(g == lab) + np.sum(p == lab))
        out[i] = 2 * tp / denom if denom else 0.0
    return out


def f1_for(golds: Sequence[str], preds: Sequence[str | None], positive: str) -> float:
    """F1 of one class (the paper's UTI F1 is the F1 of ``yes``)."""
    return float(_f1_counts(golds, preds, [positive])[0])


def macro_f1(golds: Sequence[str], preds: Sequence[str | None], labels: Sequence[str]) -> float:
    """Macro F1 over the task's labels that occur in gold or predictions (sklearn's convention):
    a gold class the model never predicts counts as 0; unparseable answers count as errors."""
    seen = set(golds) | set(preds)
    present = [lab for lab in labels if lab in seen]
    return float(_f1_counts(golds, preds, present).mean()) if present else 0.0


def accuracy_metric(gold: Callable[[Any], str], name: str = "accuracy",
                    pred: Callable[[Prediction], str | None] = lambda p: p, covers: str = "") -> Metric:
    """Share of records whose prediction equals ``gold(record)``, with McNemar's test on the 0/1
    per-item outcomes. ``pred`` picks the compared part of a prediction (one field of a two-field
    answer, as triage's personnel or urgency)."""
    return Metric(name, "mcnemar",
                  lambda recs, preds: accuracy([gold(r) for r in recs], [pred(p) for p in preds]),
                  per_item=lambda r, p: float(pred(p) == gold(r)), mean=True, covers=covers)
