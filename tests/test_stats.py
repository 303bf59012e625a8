"""Statistical tests against hand-computed cases and independent scipy reference values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import binom, norm

from clinalign.eval.stats import (
    adjust_pvalues,
    mcnemar_exact,
    mcnemar_floor,
    mde_bootstrap,
    mde_mcnemar,
    mde_wilcoxon,
    paired_bootstrap,
    paired_bootstrap_p,
    wilcoxon_paired,
)
from helpers import bootstrap_ci


def test_mcnemar_exact_matches_binomial_reference():
    # 10 items right for both, b = 6 right only for A, c = 1 right only for B, 3 wrong for both
    a = [True] * 10 + [True] * 6 + [False] * 1 + [False] * 3
    b = [True] * 10 + [False] * 6 + [True] * 1 + [False] * 3
    expected = min(1.0, 2 * binom.cdf(1, 7, 0.5))  # = 2 * 8/128 = 0.125
    assert expected == pytest.approx(0.125)
    assert mcnemar_exact(a, b) == pytest.approx(expected)
    assert mcnemar_exact(b, a) == pytest.approx(expected)  # symmetric


def test_mcnemar_exact_no_discordant_items_and_strong_case():
    same = [True, False, True, True]
    assert mcnemar_exact(same, same) == pytest.approx(1.0)
    a, b = [True] * 12, [False] * 12
    assert mcnemar_exact(a, b) == pytest.approx(2 * 0.5**12)
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])


def _exact_signed_rank_p(d: list[float]) -> float:
    """Two-sided exact Wilcoxon p by enumerating every sign assignment (no ties, no zeros)."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    observed = ranks[np.array(d) > 0].sum()
    total = ranks.sum()
    stats = [sum(r for r, s in zip(ranks, signs, strict=True) if s) for signs in
             itertools.product([0, 1], repeat=len(d))]
    lo = min(observed, total - observed)
    return min(1.0, 2 * np.mean([s <= lo for s in stats]))


def test_wilcoxon_matches_enumerated_exact_distribution():
    a = [4, 5, 3, 5, 4, 2, 5, 4]
    d = [2.5, 1.3, 0.2, 4.4, 0.7, -0.1, 0.85, 3.0]  # distinct non-zero |differences|
    b = [x - y for x, y in zip(a, d, strict=True)]
    assert len(set(np.abs(d))) == len(d)
    assert wilcoxon_paired(a, b) == pytest.approx(_exact_signed_rank_p(d))
    # one negative difference of the smallest rank: T- = 1 -> p = 2 * 2/256
    assert _exact_signed_rank_p(d) == pytest.approx(2 * 2 / 256)


def test_wilcoxon_identical_scores_is_one():
    assert wilcoxon_paired([3, 4, 5], [3, 4, 5]) == 1.0


def test_holm_known_list():
    got = adjust_pvalues({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": None})
    # sorted: d .005*4=.02, a .01*3=.03, c .03*2=.06, b .04*1=.04 -> monotone max: .02 .03 .06 .06
    assert got["d"] == pytest.approx(0.02)
    assert got["a"] == pytest.approx(0.03)
    assert got["c"] == pytest.approx(0.06)
    assert got["b"] == pytest.approx(0.06)
    assert got["e"] is None
    assert adjust_pvalues({"x": 0.6, "y": 0.7}) == pytest.approx({"x": 1.0, "y": 1.0})


def _accuracy_fn(correct: np.ndarray):
    return lambda idx: float(correct[idx].mean())


def test_bootstrap_ci_contains_estimate_and_narrows():
    rng = np.random.default_rng(1)
    widths = []
    for n in (40, 400):
        correct = rng.random(n) < 0.7
        lo, hi = bootstrap_ci(_accuracy_fn(correct), n, n_boot=500, seed=0)
        assert lo <= correct.mean() <= hi
        assert 0.0 <= lo < hi <= 1.0
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # ~1/sqrt(10) as wide
    # normal-approximation check on the large sample: width ~ 2 * 1.96 * sqrt(p(1-p)/n)
    assert widths[1] == pytest.approx(2 * 1.96 * np.sqrt(0.7 * 0.3 / 400), rel=0.25)
    assert bootstrap_ci(_accuracy_fn(correct), 400, n_boot=500, seed=3) == bootstrap_ci(
        _accuracy_fn(correct), 400, n_boot=500, seed=3)


def test_paired_bootstrap_clear_winner_and_identical():
    rng = np.random.default_rng(0)
    n = 200
    a = rng.random(n) < 0.9
    b = a & (rng.random(n) < 0.6)  # B is A with many extra errors
    p = paired_bootstrap(_accuracy_fn(a), _accuracy_fn(b), n, n_boot=500, seed=0)
    assert p < 0.01
    assert paired_bootstrap(_accuracy_fn(a), _accuracy_fn(b), n, n_boot=500, seed=0, method="shifted") < 0.01
    assert paired_bootstrap(_accuracy_fn(a), _accuracy_fn(a.copy()), n, n_boot=500, seed=0) == 1.0
    # two-sided: same p whichever system comes first
    assert paired_bootstrap(_accuracy_fn(b), _accuracy_fn(a), n, n_boot=500, seed=0) == pytest.approx(p)


def test_paired_bootstrap_p_hand_cases():
    # observed d = 0.1; draws d* = [0.0, 0.1, 0.2, 0.25, 0.1]
    a = np.array([0.5, 0.6, 0.7, 0.75, 0.6])
    b = np.full(5, 0.5)
    # shifted: |d* - d| >= 0.1 for 0.0, 0.2, 0.25 -> 3 of 5
    assert paired_bootstrap_p(a, b, 0.1, method="shifted") == pytest.approx((1 + 3) / (1 + 5))
    # normal: z = 0.1 / sd(d*, ddof=1)
    sd = np.std([0.0, 0.1, 0.2, 0.25, 0.1], ddof=1)
    assert paired_bootstrap_p(a, b, 0.1) == pytest.approx(2 * norm.sf(0.1 / sd))
    assert paired_bootstrap_p(b, b, 0.0) == 1.0 and paired_bootstrap_p(b, b, 0.0, method="shifted") == 1.0
    with pytest.raises(ValueError, match="method"):
        paired_bootstrap_p(a, b, 0.1, method="bca")


def test_paired_bootstrap_normal_agrees_with_shifted_when_resolvable():
    rng = np.random.default_rng(5)
    n = 150
    a = rng.random(n) < 0.7
    b = a ^ (rng.random(n) < 0.15)  # modest, noisy difference: p well inside (0.01, 1)
    p_norm = paired_bootstrap(_accuracy_fn(a), _accuracy_fn(b), n, n_boot=2000, seed=0)
    p_shift = paired_bootstrap(_accuracy_fn(a), _accuracy_fn(b), n, n_boot=2000, seed=0, method="shifted")
    assert 0.01 < p_norm < 1.0
    assert p_norm == pytest.approx(p_shift, abs=0.05)


# z_{0.975} and z_{0.80}, from a printed normal table: the MDE tests do not reuse scipy's quantiles
Z_A, Z_B = 1.959964, 0.841621


def test_adjust_pvalues_other_methods_and_unknown():
    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": None}
    assert adjust_pvalues(p, "bonferroni") == pytest.approx({"a": 0.03, "b": 0.12, "c": 0.09, "d": None})
    # Benjamini-Hochberg: sorted .01 .03 .04 -> .01*3/1=.03, .03*3/2=.045, .04*3/3=.04 -> monotone .03 .04 .04
    assert adjust_pvalues(p, "fdr_bh") == pytest.approx({"a": 0.03, "b": 0.04, "c": 0.04, "d": None})
    with pytest.raises(ValueError, match="multiple-testing method 'bh'"):
        adjust_pvalues(p, "bh")


def test_mde_paired_bootstrap_hand_computation():
    # bootstrap differences d* = [0.0, 0.1, 0.2, 0.25, 0.1]: mean 0.13, squared deviations sum to 0.038
    a = np.array([0.5, 0.6, 0.7, 0.75, 0.6])
    b = np.full(5, 0.5)
    sd = math.sqrt(0.038 / 4)
    assert mde_bootstrap(a, b) == pytest.approx((Z_A + Z_B) * sd, rel=1e-6)
    assert mde_bootstrap(a, b) == pytest.approx(0.273066, rel=1e-5)
    assert mde_bootstrap(b, a) == pytest.approx(mde_bootstrap(a, b))  # no direction
    # a stricter alpha or more power asks for a larger difference
    assert mde_bootstrap(a, b, alpha=0.01) == pytest.approx((2.575829 + Z_B) * sd, rel=1e-6)
    assert mde_bootstrap(a, b, power=0.9) == pytest.approx((Z_A + 1.281552) * sd, rel=1e-6)
    # systems that never differ on a resample: no spread to size a difference by
    assert math.isnan(mde_bootstrap(a, a.copy()))
    assert math.isnan(mde_bootstrap(np.array([0.5, np.nan, 0.6]), np.array([0.5, 0.5, np.nan])))
    with pytest.raises(ValueError, match="alpha and power"):
        mde_bootstrap(a, b, power=1.0)


def _connor_n(delta: float, psi: float) -> float:
    """Connor (1987): items needed to detect ``delta`` at discordance ``psi`` (two-sided 0.05, 80%)."""
    return (Z_A * math.sqrt(psi) + Z_B * math.sqrt(psi - delta**2)) ** 2 / delta**2


def test_mde_mcnemar_hand_computation_floor_and_no_discordance():
    # 40 items: 7 right only for A, 3 right only for B -> discordance psi = 10/40 = 0.25
    a = [True] * 20 + [True] * 7 + [False] * 3 + [False] * 10
    b = [True] * 20 + [False] * 7 + [True] * 3 + [False] * 10
    n = 40
    hand = math.sqrt(0.25) * (Z_A * math.sqrt(n) + Z_B * math.sqrt(n - Z_A**2 + Z_B**2)) / (n + Z_B**2)
    assert hand == pytest.approx(0.215017, rel=1e-5)
    got = mde_mcnemar(a, b)
    assert got == pytest.approx(hand, rel=1e-6)
    assert _connor_n(got, 0.25) == pytest.approx(n, rel=1e-6)  # it solves Connor's relation for delta
    assert mde_mcnemar(b, a) == pytest.approx(got)
    # the exact test needs 6 discordant items all one way at alpha 0.05 (2 * 0.5**6 = 0.031 < 0.05 <
    # 2 * 0.5**5): no difference below 6/40 is ever significant, so the normal figure is floored there
    assert mcnemar_floor(40) == pytest.approx(6 / 40)
    assert mcnemar_floor(40, alpha=0.01) == pytest.approx(8 / 40)
    assert mcnemar_exact([True] * 6, [False] * 6) < 0.05 < mcnemar_exact([True] * 5, [False] * 5)
    two = [True, False] + [True] * 38
    assert math.sqrt(2 / 40) * 0.43 < 6 / 40  # Connor alone would say ~0.096
    assert mde_mcnemar(two, [True] * 40) == pytest.approx(6 / 40)
    # no discordant item at all: the pairing says nothing of how the systems could differ; the floor
    # is the figure that stays true
    assert mde_mcnemar([True] * 30 + [False] * 10, [True] * 30 + [False] * 10) == pytest.approx(6 / 40)
    assert math.isnan(mde_mcnemar([], []))
    with pytest.raises(ValueError, match="differ in length"):
        mde_mcnemar([True], [True, False])


def test_mde_wilcoxon_hand_computation():
    # per-item differences d = [1, 0, 2, -1, 1, 0, 1, 2]: mean 0.75, squared deviations sum to 7.5
    b = [3, 3, 2, 4, 2, 5, 3, 1]
    d = [1, 0, 2, -1, 1, 0, 1, 2]
    a = [x + y for x, y in zip(b, d, strict=True)]
    sd = math.sqrt(7.5 / 7)
    # the t-test's normal-approximation MDE on n * 3/pi items (the signed-rank test's efficiency)
    hand = (Z_A + Z_B) * sd / math.sqrt(8 * 3 / math.pi)
    assert hand == pytest.approx(1.049191, rel=1e-5)
    assert mde_wilcoxon(a, b) == pytest.approx(hand, rel=1e-6)
    assert mde_wilcoxon(b, a) == pytest.approx(hand, rel=1e-6)
    assert math.isnan(mde_wilcoxon(a, a))
    assert math.isnan(mde_wilcoxon([3], [2]))
