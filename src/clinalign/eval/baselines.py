"""The classical baseline every study reports beside base, SFT and DPO.

A fine-tuned LLM is only worth its cost if it beats what a statistician would fit in a minute on the
same training split, so the study evaluates this system on the same test items, with the same metrics
and paired tests:

- **Closed-set tasks** with one label set: TF-IDF (word 1-2-grams, sublinear tf) + logistic regression,
  ``class_weight="balanced"``, ``C`` chosen by stratified cross-validation on the training split.
  Tasks whose input is a handful of values (``Task.baseline_features`` returns a mapping) get numbers
  standardised *and* binned by quantile, so a linear model can place the thresholds of a clinical rule,
  with categorical values one-hot.
- **Closed-set tasks whose options vary per record** (``Task.option_texts``, e.g. lettered options):
  a pairwise linear ranker over hashed (input word, option word) pairs, the option with the highest
  score wins; ``C`` by cross-validation over records.
- **Generation tasks**: an extractive summary (``Task.extractive_answer``: the lead sentences by
  default, a task may know better), scored by the task's own rubric.

Deterministic: the same records give the same predictions (fixed solver, seeded folds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from clinalign.tasks.base import Task

#: the regularisation strengths tried by cross-validation
C_GRID = (0.1, 1.0, 10.0, 100.0)
NAME = "classical"


def describe(task: Task, record: Any) -> str:
    """What the baseline is for this task (``record``: any of its records), in the report's words."""
    if not task.is_closed_set:
        return "extractive: " + task.extractive_description
    if task.option_texts(record) is not None:
        return "pairwise logistic ranker on hashed (input word, option word) pairs, C by cross-validation"
    if isinstance(task.baseline_features(record), Mapping):
        return "logistic regression on standardised and quantile-binned values, C by cross-validation"
    return "TF-IDF (word 1-2-grams) + logistic regression, C by cross-validation"


def predict(task: Task, train: Sequence[Any], test: Sequence[Any], seed: int = 0) -> list[dict[str, Any]]:
    """Rows shaped like the LLM's prediction rows: {id, gold, pred, probs} (closed set) or
    {id, gold, pred, text} (generation)."""
    if not task.is_closed_set:
        rows = []
        for r in test:
            text = task.extractive_answer(r)
            rows.append({"id": r.id, "gold": task.answer(r), "pred": task.parse(text), "text": text})
        return rows
    if not train:
        raise ValueError("the classical baseline needs training records")
    if test and task.option_texts(test[0]) is not None:
        return _ranker(task, train, test, seed)
    return _classifier(task, train, test, seed)


# ---------------------------------------------------------------- one label set


def _features(task: Task, records: Sequence[Any]) -> tuple[list[Any], bool]:
    feats = [task.baseline_features(r) for r in records]
    return feats, isinstance(feats[0], Mapping)


def _pipeline(numeric: bool, feats: list[Any]) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    if not numeric:
        return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1))
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_union
    from sklearn.preprocessing import KBinsDiscretizer, OneHotEncoder, StandardScaler

    keys = sorted(feats[0])
    num = [i for i, k in enumerate(keys) if isinstance(feats[0][k], int | float)]
    cat = [i for i in range(len(keys)) if i not in num]
    parts = []
    if num:
        bins = KBinsDiscretizer(n_bins=8, encode="onehot", strategy="quantile", quantile_method="averaged_inverted_cdf")
        parts.append(("num", make_union(StandardScaler(), bins), num))
    if cat:
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore"), cat))
    return make_pipeline(_rows(keys), ColumnTransformer(parts))


def _rows(keys: list[str]) -> Any:
    """Mappings -> a 2D object array in a fixed key order (what ColumnTransformer indexes)."""
    from functools import partial

    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(partial(_as_array, keys=tuple(keys)))


def _as_array(X: Any, keys: tuple[str, ...]) -> np.ndarray:  # noqa: N803 (sklearn's names)
    return np.array([[x[k] for k in keys] for x in X], dtype=object)


def _folds(labels: Sequence[Any], seed: int) -> Any | None:
    """Stratified folds (at most 5), or None when a class has a single record."""
    from collections import Counter

    from sklearn.model_selection import StratifiedKFold

    k = min(5, min(Counter(labels).values()))
    return StratifiedKFold(n_splits=k, shuffle=True, random_state=seed) if k >= 2 else None


def _classifier(task: Task, train: Sequence[Any], test: Sequence[Any], seed: int) -> list[dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    feats, numeric = _features(task, train)
    y = [task.answer(r) for r in train]
    if len(set(y)) == 1:  # one class in training: it is the prediction
        return [{"id": r.id, "gold": task.answer(r), "pred": y[0], "probs": {y[0]: 1.0}} for r in test]
    model = make_pipeline(_pipeline(numeric, feats),
                          LogisticRegression(class_weight="balanced", max_iter=5000, solver="lbfgs"))
    folds = _folds(y, seed)
    if folds is not None:
        model = GridSearchCV(model, {"logisticregression__C": list(C_GRID)}, cv=folds, scoring="f1_macro")
    else:
        model.set_params(logisticregression__C=10.0)
    model.fit(feats, y)
    classes = list(model.classes_)
    test_feats, _ = _features(task, test) if test else ([], numeric)
    probs = model.predict_proba(test_feats) if test else []
    rows = []
    for r, pr in zip(test, probs, strict=True):
        allowed = task.choices_for(r) or tuple(classes)
        p = {c: float(pr[classes.index(c)]) if c in classes else 0.0 for c in allowed}
        rows.append({"id": r.id, "gold": task.answer(r), "pred": max(p, key=p.__getitem__), "probs": p})
    return rows


# ---------------------------------------------------------------- options that vary per record


def _pair_tokens(analyze: Any, text: str, option: str) -> list[str]:
    words, opt = set(analyze(text)), set(analyze(option))
    return [f"o={o}" for o in opt] + [f"{w}|{o}" for w in words for o in opt]


def _ranker(task: Task, train: Sequence[Any], test: Sequence[Any], seed: int) -> list[dict[str, Any]]:
    from sklearn.feature_extraction import FeatureHasher
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    analyze = TfidfVectorizer().build_analyzer()
    hasher = FeatureHasher(n_features=2**18, input_type="string", alternate_sign=False)

    def encode(recs: Sequence[Any]) -> tuple[Any, list[str], list[tuple[int, int]]]:
        """One row per (record, option); ``spans[i]`` = record i's rows."""
        tokens, keys, spans = [], [], []
        for r in recs:
            text = str(task.baseline_features(r))
            start = len(keys)
            for key, option in (task.option_texts(r) or {}).items():
                tokens.append(_pair_tokens(analyze, text, option))
                keys.append(key)
            spans.append((start, len(keys)))
        return hasher.transform(tokens), keys, spans

    X, keys, spans = encode(train)
    y = np.zeros(len(keys), dtype=int)
    for r, (a, b) in zip(train, spans, strict=True):
        y[a + keys[a:b].index(task.answer(r))] = 1

    def fit(records: Sequence[int], c: float) -> LogisticRegression:
        rows = [j for i in records for j in range(*spans[i])]
        return LogisticRegression(C=c, class_weight="balanced", solver="liblinear").fit(X[rows], y[rows])

    def rank(model: LogisticRegression, Xs: Any, ks: list[str], sp: list[tuple[int, int]]) -> list[dict[str, float]]:  # noqa: N803
        scores = model.decision_function(Xs) if len(ks) else np.zeros(0)
        out = []
        for a, b in sp:
            top = max(scores[a:b])
            e = {ks[i]: math.exp(scores[i] - top) for i in range(a, b)}
            z = sum(e.values())
            out.append({k: v / z for k, v in e.items()})
        return out

    order = list(np.random.default_rng(seed).permutation(len(train)))
    k = min(5, len(train))
    best_c, best_hits = 10.0, -1
    if k >= 2:
        for c in C_GRID:  # C by k-fold cross-validation over records: accuracy of the top option
            hits = 0
            for f in range(k):
                held = order[f::k]
                model = fit([i for j, i in enumerate(order) if j % k != f], c)
                for i in held:
                    a, b = spans[i]
                    probs = rank(model, X[a:b], keys[a:b], [(0, b - a)])[0]
                    hits += max(probs, key=probs.__getitem__) == task.answer(train[i])
            if hits > best_hits:
                best_c, best_hits = c, hits
    model = fit(range(len(train)), best_c)
    Xt, kt, st = encode(test)
    return [{"id": r.id, "gold": task.answer(r), "pred": max(p, key=p.__getitem__), "probs": p}
            for r, p in zip(test, rank(model, Xt, kt, st), strict=True)]
