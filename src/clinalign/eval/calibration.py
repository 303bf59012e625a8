"""Calibration of scored (closed-set) predictions: does a 0.8 answer turn out right 80% of the time?

Label scoring gives a probability per allowed answer for every item; the prediction is the most
probable answer and its probability is the model's confidence. Equal-width bins over [0, 1]
(bin i holds confidences in ``(i/n, (i+1)/n]``, 0 in the first bin), the usual reliability diagram.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _bin_of(conf: np.ndarray, n_bins: int) -> np.ndarray:
    return np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)


def reliability_bins(
    probs_of_pred: Sequence[float], correct: Sequence[bool], n_bins: int = 10
) -> list[dict[str, float]]:
    """One row per bin: ``lo``, ``hi``, ``confidence`` (mean), ``accuracy``, ``count``; empty bins have
    count 0 and NaN confidence/accuracy (kept so every plot shares the same bins)."""
    conf = np.asarray(probs_of_pred, dtype=float)
    ok = np.asarray(correct, dtype=float)
    if conf.shape != ok.shape:
        raise ValueError(f"confidences and outcomes differ in length: {conf.size} vs {ok.size}")
    if conf.size and (conf.min() < 0 or conf.max() > 1 + 1e-9):
        raise ValueError("confidences must lie in [0, 1]")
    which = _bin_of(conf, n_bins)
    rows = []
    for i in range(n_bins):
        mask = which == i
        n = int(mask.sum())
        rows.append({
            "lo": i / n_bins, "hi": (i + 1) / n_bins, "count": n,
            "confidence": float(conf[mask].mean()) if n else math.nan,
            "accuracy": float(ok[mask].mean()) if n else math.nan,
        })
    return rows


def expected_calibration_error(probs_of_pred: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    """ECE = sum over bins of (bin share of items) * |bin accuracy - bin mean confidence|."""
    bins = reliability_bins(probs_of_pred, correct, n_bins)
    total = sum(b["count"] for b in bins)
    if total == 0:
        return math.nan
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def confidences(items: Sequence[tuple[Mapping[str, float] | None, str]]) -> tuple[list[float], list[bool]]:
    """(confidence of the predicted class, was it right) from ``(class -> prob, gold)`` pairs.

    Probabilities are renormalised over the item's classes; items without scores (generation mode)
    are skipped, since they carry no confidence.
    """
    conf: list[float] = []
    correct: list[bool] = []
    for probs, gold in items:
        if not probs:
            continue
        total = sum(probs.values())
        pred, p = max(probs.items(), key=lambda kv: kv[1])
        conf.append(p / total if total > 0 else 0.0)
        correct.append(pred == gold)
    return conf, correct


def calibration_summary(items: Sequence[tuple[Mapping[str, float] | None, str]], n_bins: int = 10) -> dict[str, Any]:
    """``{"ece", "n", "bins"}`` for one system on one task (ECE is None when nothing was scored)."""
    conf, correct = confidences(items)
    ece = expected_calibration_error(conf, correct, n_bins)
    return {"ece": None if math.isnan(ece) else ece, "n": len(conf),
            "bins": reliability_bins(conf, correct, n_bins)}
