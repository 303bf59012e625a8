"""Expected calibration error and reliability bins on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from clinalign.eval.calibration import (
    calibration_summary,
    confidences,
    expected_calibration_error,
    reliability_bins,
)


def test_ece_hand_case():
    # bin (0.8, 0.9]: conf 0.9, 0.9, 0.85 -> mean 0.8833, 2/3 right
    # bin (0.5, 0.6]: conf 0.6, 0.6 -> mean 0.6, 0/2 right
    conf = [0.9, 0.9, 0.85, 0.6, 0.6]
    correct = [True, True, False, False, False]
    expected = 3 / 5 * abs(2 / 3 - (0.9 + 0.9 + 0.85) / 3) + 2 / 5 * abs(0.0 - 0.6)
    assert expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(expected)


def test_perfectly_calibrated_and_overconfident():
    # 10 items at 0.7 confidence, 7 right: ECE 0
    assert expected_calibration_error([0.7] * 10, [True] * 7 + [False] * 3) == pytest.approx(0.0)
    # always 1.0 confident, half right: ECE 0.5
    assert expected_calibration_error([1.0] * 4, [True, False, True, False]) == pytest.approx(0.5)
    assert math.isnan(expected_calibration_error([], []))


def test_reliability_bins_edges_and_counts():
    bins = reliability_bins([0.0, 0.1, 0.10001, 0.55, 1.0], [True, False, True, True, True], n_bins=10)
    assert len(bins) == 10
    assert [b["count"] for b in bins] == [2, 1, 0, 0, 0, 1, 0, 0, 0, 1]  # 0 and 0.1 share bin (0, 0.1]
    assert bins[0]["accuracy"] == pytest.approx(0.5)
    assert bins[0]["confidence"] == pytest.approx(0.05)
    assert math.isnan(bins[2]["accuracy"])
    with pytest.raises(ValueError):
        reliability_bins([1.5], [True])
    with pytest.raises(ValueError):
        reliability_bins([0.5, 0.5], [True])


def test_confidences_from_label_scores():
    items = [
        ({"yes": 0.8, "no": 0.2}, "yes"),
        ({"yes": 0.3, "no": 0.9}, "yes"),  # unnormalised: 0.9 / 1.2 = 0.75, wrong
        (None, "no"),  # generated, not scored: skipped
    ]
    conf, correct = confidences(items)
    assert conf == pytest.approx([0.8, 0.75])
    assert correct == [True, False]
    summary = calibration_summary(items, n_bins=10)
    assert summary["n"] == 2
    assert summary["ece"] == pytest.approx(abs(0.5 - (0.8 + 0.75) / 2))  # both in bin (0.7, 0.8]
    assert calibration_summary([(None, "x")])["ece"] is None
