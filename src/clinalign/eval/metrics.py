"""Metric functions shared by the task definitions. Pure functions on plain lists.

An unparseable prediction (None) counts as wrong: it is never dropped, so a model that fails to
answer is not rewarded by a smaller denominator.
"""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.metrics import f1_score

UNPARSEABLE = "<unparseable>"


def _fill(preds: Sequence[str | None]) -> list[str]:
    return [UNPARSEABLE if p is None else p for p in preds]


def accuracy(golds: Sequence[str], preds: Sequence[str | None]) -> float:
    if not golds:
        return float("nan")
    return sum(g == p for g, p in zip(golds, preds, strict=True)) / len(golds)


def f1_for(golds: Sequence[str], preds: Sequence[str | None], positive: str) -> float:
    """F1 of one class (the paper's UTI F1 is the F1 of ``yes``)."""
    return float(
        f1_score(list(golds), _fill(preds), labels=[positive], average="macro", zero_division=0.0)
    )


def macro_f1(golds: Sequence[str], preds: Sequence[str | None], labels: Sequence[str]) -> float:
    """Macro F1 over the task's labels that occur in gold or predictions (sklearn's convention):
    a gold class the model never predicts counts as 0; unparseable answers count as errors."""
    present = [lab for lab in labels if lab in set(golds) or lab in set(preds)]
    return float(f1_score(list(golds), _fill(preds), labels=present, average="macro", zero_division=0.0))


def per_class_f1(golds: Sequence[str], preds: Sequence[str | None], labels: Sequence[str]) -> dict[str, float]:
    scores = f1_score(list(golds), _fill(preds), labels=list(labels), average=None, zero_division=0.0)
    return {lab: float(s) for lab, s in zip(labels, scores, strict=True)}
