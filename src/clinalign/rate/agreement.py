"""Inter-rater agreement from the libraries that define it: Krippendorff's alpha (ordinal) for Likert
scores, Cohen's kappa for pairwise choices (averaged over rater pairs when there are more than two)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Any

import numpy as np


def likert_alpha(ratings: list[tuple[str, Any, int]]) -> tuple[float | None, int]:
    """(alpha, items rated twice or more) from (rater, item, score) rows; None until it is defined."""
    by_item: dict[Any, dict[str, int]] = defaultdict(dict)
    for rater, item, score in ratings:
        by_item[item][rater] = score
    shared = [i for i, r in by_item.items() if len(r) >= 2]
    if not shared:
        return None, 0
    import krippendorff

    raters = sorted({r for i in shared for r in by_item[i]})
    data = np.array([[by_item[i].get(r, np.nan) for i in shared] for r in raters], dtype=float)
    if len(np.unique(data[~np.isnan(data)])) < 2:
        return None, len(shared)  # one value everywhere: alpha is 0/0
    alpha = krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal",
                               value_domain=[1, 2, 3, 4, 5])
    return (float(alpha) if math.isfinite(alpha) else None), len(shared)


def pairwise_kappa(choices: list[tuple[str, Any, str]]) -> tuple[float | None, int]:
    """(mean Cohen's kappa over rater pairs, items chosen by two or more) from (rater, item, choice)."""
    from sklearn.metrics import cohen_kappa_score

    by_rater: dict[str, dict[Any, str]] = defaultdict(dict)
    for rater, item, choice in choices:
        by_rater[rater][item] = choice
    kappas, shared_items = [], set()
    for r1, r2 in itertools.combinations(sorted(by_rater), 2):
        common = sorted(set(by_rater[r1]) & set(by_rater[r2]), key=str)
        if not common:
            continue
        shared_items.update(common)
        y1, y2 = [by_rater[r1][i] for i in common], [by_rater[r2][i] for i in common]
        if len(set(y1) | set(y2)) < 2:
            continue  # both raters used one label: kappa is undefined
        k = cohen_kappa_score(y1, y2, labels=["a", "b", "tie"])
        if math.isfinite(k):
            kappas.append(float(k))
    return (float(np.mean(kappas)) if kappas else None), len(shared_items)
