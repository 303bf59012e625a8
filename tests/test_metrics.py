"""Shared metric functions against sklearn and hand-computed values."""

from __future__ import annotations

import random

import pytest
from sklearn.metrics import f1_score

from clinalign.tasks.metrics import accuracy, f1_for, macro_f1


def per_class_f1(golds, preds, labels):
    """Each label's own F1, 0 for a label that never occurs (as sklearn's zero_division=0)."""
    return {lab: f1_for(golds, preds, lab) for lab in labels}


def test_hand_computed():
    golds = ["yes", "yes", "no", "no", "yes"]
    preds = ["yes", "no", "no", "yes", None]  # None = unparseable, counts as wrong
    # yes: tp 1, fp 1, fn 2 -> F1 = 2/(2+1+2) = 0.4
    assert f1_for(golds, preds, "yes") == pytest.approx(0.4)
    assert accuracy(golds, preds) == pytest.approx(2 / 5)
    # no: tp 1, fp 1, fn 1 -> 0.5; macro over yes/no = 0.45
    assert macro_f1(golds, preds, ["yes", "no"]) == pytest.approx(0.45)
    assert per_class_f1(golds, preds, ["yes", "no", "maybe"]) == {"yes": 0.4, "no": 0.5, "maybe": 0.0}


def test_matches_sklearn_on_random_inputs():
    rng = random.Random(0)
    labels = ["a", "b", "c", "d"]
    for _ in range(50):
        n = rng.randint(1, 40)
        golds = [rng.choice(labels[:3]) for _ in range(n)]
        preds = [rng.choice([*labels, None]) for _ in range(n)]
        filled = ["<u>" if p is None else p for p in preds]
        present = [lab for lab in labels if lab in set(golds) | set(filled)]
        ref = f1_score(golds, filled, labels=present, average="macro", zero_division=0.0)
        assert macro_f1(golds, preds, labels) == pytest.approx(ref)
        ref_a = f1_score(golds, filled, labels=["a"], average="macro", zero_division=0.0)
        assert f1_for(golds, preds, "a") == pytest.approx(ref_a)
