"""Confidence intervals and paired tests for comparing systems on the same test items.

Everything is paired by item: the bootstrap draws *item indices* once (`bootstrap_systems`), and
every system is scored on that one draw, so system differences are not blurred by which items
happened to be drawn. The study's numbers (eval/compare.py) go through these same functions. The
tests themselves come from scipy / statsmodels; only the bootstrap loop, which must work for any
corpus-level metric (F1 is not a mean of per-item values), is ours.

Beside each test's p, the minimum detectable difference (MDE): the smallest true difference the same
test on the same number of items would find with probability ``power`` (80% by default) at the
two-sided level ``alpha``, sized by the pairing actually observed (the spread of the paired
differences, or the discordance rate). A comparison that is "not significant" then says what it could
not have seen. ``alpha`` is the nominal level, not a multiplicity-corrected one: a correction (Holm
and the like) judges a comparison at a level between ``alpha / m`` and ``alpha``, so the corrected
MDE is larger still. The nominal figure is therefore a lower bound on the blind spot, true whatever
the family: a difference below it could not have been detected even without any correction.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from scipy.stats import norm, wilcoxon
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

#: metric_fn(indices) -> the metric on the items at those indices (indices may repeat)
IndexMetric = Callable[[np.ndarray], float]
K = TypeVar("K")
#: float noise must not turn an exact tie into a difference
_TOL = 1e-12


def resample_indices(n_items: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n_items)`` item indices drawn with replacement: the one draw every bootstrap here
    uses (the same for the same seed)."""
    if n_items <= 0:
        return np.zeros((n_boot, 0), dtype=np.int64)
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_items, size=(n_boot, n_items))


def bootstrap_samples(metric_fn: IndexMetric, draws: np.ndarray) -> np.ndarray:
    """The metric on each row of ``draws`` (from `resample_indices`); NaN for no items."""
    if draws.shape[1] == 0:
        return np.full(draws.shape[0], np.nan)
    return np.array([metric_fn(idx) for idx in draws], dtype=float)


def percentile_ci(samples: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of bootstrap samples (resamples where the metric is undefined are ignored)."""
    s = np.asarray(samples, dtype=float)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.percentile(s, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return (float(lo), float(hi))


@dataclass(frozen=True)
class Bootstrapped:
    """One system's metric on all items, its percentile interval and its bootstrap samples."""

    value: float
    ci: tuple[float, float]
    samples: np.ndarray


def bootstrap_systems(
    metric_fns: Mapping[str, IndexMetric], n_items: int, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, Bootstrapped]:
    """Every system's metric with its interval, all on one draw of item indices: the samples of any
    two systems are then paired item by item, as `paired_bootstrap_p` needs."""
    draws = resample_indices(n_items, n_boot, seed)
    every = np.arange(n_items)
    out = {}
    for name, fn in metric_fns.items():
        samples = bootstrap_samples(fn, draws)
        out[name] = Bootstrapped(float(fn(every)) if n_items > 0 else math.nan, percentile_ci(samples, alpha), samples)
    return out


def paired_bootstrap_p(
    samples_a: np.ndarray, samples_b: np.ndarray, observed_diff: float, method: str = "normal"
) -> float:
    """Two-sided p of ``observed_diff = metric_a - metric_b`` from paired bootstrap samples.

    The bootstrap differences ``d* = a* - b*`` (same items drawn for both systems) estimate how
    ``d`` varies from test set to test set.

    - ``"normal"`` (default): ``z = d / sd(d*)``, ``p = 2 * (1 - Phi(|z|))``, the bootstrap-standard-
      error test (Efron & Tibshirani 1993, ch. 16). Its p is not floored by the number of draws,
      which matters once Holm multiplies it by every comparison of a study.
    - ``"shifted"``: the shifted-difference method (ibid., sec. 16.4): ``d*`` centred on ``d``
      stands for the null distribution, ``p = (1 + #{|d* - d| >= |d|}) / (1 + B)``. No normality
      assumption, but p >= 1/(B+1): with B=1000 and 45 comparisons, Holm cannot go below 0.045.

    Identical systems (``d* = d = 0`` on every draw) give p = 1 under both.
    """
    d = np.asarray(samples_a, dtype=float) - np.asarray(samples_b, dtype=float)
    d = d[~np.isnan(d)]
    if d.size == 0 or math.isnan(observed_diff):
        return math.nan
    if method == "shifted":
        extreme = np.abs(d - observed_diff) >= abs(observed_diff) - _TOL
        return float((1 + extreme.sum()) / (1 + d.size))
    if method != "normal":
        raise ValueError(f"unknown paired bootstrap method {method!r}: expected 'normal' or 'shifted'")
    if abs(observed_diff) <= _TOL:
        return 1.0
    se = float(d.std(ddof=1)) if d.size > 1 else 0.0
    if se <= _TOL:
        return 0.0  # a difference that no resample of the items can remove
    return float(2 * norm.sf(abs(observed_diff) / se))


def paired_bootstrap(
    metric_fn_a: IndexMetric,
    metric_fn_b: IndexMetric,
    n_items: int,
    n_boot: int = 1000,
    seed: int = 0,
    method: str = "normal",
) -> float:
    """Two-sided paired bootstrap p for ``metric(a) - metric(b)`` (see `paired_bootstrap_p`)."""
    if n_items <= 0:
        return math.nan
    both = bootstrap_systems({"a": metric_fn_a, "b": metric_fn_b}, n_items, n_boot, seed)
    return paired_bootstrap_p(both["a"].samples, both["b"].samples, both["a"].value - both["b"].value, method)


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> float:
    """McNemar's exact (binomial) test on paired right/wrong outcomes; only discordant items count."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in length: {a.size} vs {b.size}")
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    return float(mcnemar(table, exact=True).pvalue)


def wilcoxon_paired(a: Sequence[float], b: Sequence[float]) -> float:
    """Wilcoxon signed-rank p for paired scores (e.g. Likert). No difference at all -> p = 1.0, where
    scipy would warn or fail: identical systems are simply not different."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired scores differ in length: {x.size} vs {y.size}")
    if x.size == 0:
        return math.nan
    if np.all(x - y == 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(wilcoxon(x, y).pvalue)


#: the statsmodels ``multipletests`` methods a study may correct with
ADJUST_METHODS = ("holm", "bonferroni", "holm-sidak", "sidak", "simes-hochberg", "hommel",
                  "fdr_bh", "fdr_by", "fdr_tsbh", "fdr_tsbky")


def adjust_pvalues(pvalues: Mapping[K, float | None], method: str = "holm") -> dict[K, float | None]:
    """Multiplicity-adjusted p-values (statsmodels ``multipletests``), same keys; undefined (None/NaN)
    p-values stay None and are not counted in the family."""
    if method not in ADJUST_METHODS:
        raise ValueError(f"unknown multiple-testing method {method!r}: expected one of {', '.join(ADJUST_METHODS)}")
    keys = [k for k, p in pvalues.items() if p is not None and not math.isnan(p)]
    out: dict[K, float | None] = {k: None for k in pvalues}
    if keys:
        adjusted = multipletests([pvalues[k] for k in keys], method=method)[1]
        out.update({k: float(p) for k, p in zip(keys, adjusted, strict=True)})
    return out


#: Wilcoxon signed-rank vs the paired t-test when the differences are normal (Hodges & Lehmann 1956):
#: the signed-rank test on n items has about the power of the t-test on 3/pi * n items
WILCOXON_ARE = 3 / math.pi


def _z(alpha: float, power: float) -> tuple[float, float]:
    """``z_{1-alpha/2}`` and ``z_{power}``: the two-sided critical value and the power quantile."""
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must lie in (0, 1): got alpha={alpha}, power={power}")
    return float(norm.ppf(1 - alpha / 2)), float(norm.ppf(power))


def mde_bootstrap(samples_a: np.ndarray, samples_b: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> float:
    """MDE of the paired bootstrap test: ``(z_{1-alpha/2} + z_power) * sd(d*)``, ``d* = a* - b*`` over
    the paired draws (the standard error `paired_bootstrap_p` divides by, taken as the same under the
    alternative). NaN when the draws never differ (sd 0): two systems that agreed on every resample
    give no spread to size a difference by, and claiming "any difference would have been seen" from
    that would be false."""
    d = np.asarray(samples_a, dtype=float) - np.asarray(samples_b, dtype=float)
    d = d[~np.isnan(d)]
    za, zb = _z(alpha, power)
    if d.size < 2:
        return math.nan
    sd = float(d.std(ddof=1))
    return (za + zb) * sd if sd > _TOL else math.nan


def mcnemar_floor(n_items: int, alpha: float = 0.05) -> float:
    """The smallest difference in proportion correct McNemar's exact test can ever call significant on
    ``n_items``: ``k / n`` for the least ``k`` with ``2 * 0.5**k < alpha`` (k discordant items, all one
    way; 6 at alpha 0.05). Below it no outcome of the test is significant, whatever the pairing."""
    if n_items <= 0:
        return math.nan
    k = 1
    while 2 * 0.5**k >= alpha:
        k += 1
    return k / n_items


def mde_mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool], alpha: float = 0.05,
                power: float = 0.8) -> float:
    """MDE of McNemar's test, in proportion correct, at the observed discordance rate ``psi``.

    Connor (1987), Biometrics 43:207, sizes a paired-proportions study by
    ``n = (z_a sqrt(psi) + z_b sqrt(psi - delta^2))^2 / delta^2``. Solved for ``delta`` (a quadratic
    once squared; the root with ``sqrt(n) delta >= z_a sqrt(psi)``)::

        delta = sqrt(psi) * (z_a sqrt(n) + z_b sqrt(n - z_a^2 + z_b^2)) / (n + z_b^2)

    The normal approximation knows nothing of the exact test's granularity, so the figure is never
    below `mcnemar_floor` (with few discordant items it would be). With no discordant item at all
    (``psi = 0``) the pairing says nothing about how the systems could differ; the floor is then the
    only honest figure, and it is what is returned. ``delta`` may exceed ``psi``: then no difference
    the observed discordance allows was detectable with that power.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in length: {a.size} vs {b.size}")
    za, zb = _z(alpha, power)
    n = a.size
    if n == 0:
        return math.nan
    floor = mcnemar_floor(n, alpha)
    psi = float(np.sum(a != b)) / n
    if psi == 0:
        return floor
    delta = math.sqrt(psi) * (za * math.sqrt(n) + zb * math.sqrt(max(n - za**2 + zb**2, 0.0))) / (n + zb**2)
    return max(delta, floor)


def mde_wilcoxon(a: Sequence[float], b: Sequence[float], alpha: float = 0.05, power: float = 0.8) -> float:
    """MDE of the Wilcoxon signed-rank test, in the scores' units: the paired t-test's normal-
    approximation MDE ``(z_{1-alpha/2} + z_power) * sd(d) / sqrt(n)`` on the effective sample size
    ``n * 3/pi`` (`WILCOXON_ARE`), ``d`` the per-item differences. NaN when the differences do not
    vary (the systems scored alike on every item): no spread to size a difference by."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired scores differ in length: {x.size} vs {y.size}")
    za, zb = _z(alpha, power)
    if x.size < 2:
        return math.nan
    sd = float((x - y).std(ddof=1))
    return (za + zb) * sd / math.sqrt(x.size * WILCOXON_ARE) if sd > _TOL else math.nan
