"""SFT examples and DPO preference pairs from task records, in the common shapes other tools use:
``{"prompt", "completion"}`` and ``{"prompt", "chosen", "rejected"}`` (TRL's standard format)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from clinalign.errors import ConfigError
from clinalign.tasks.base import Task

ALL_STRATEGIES = "all"
#: the default for closed-set tasks: prior-neutral pairs (see :func:`balanced_pairs`)
BALANCED = "balanced"


def sft_examples(task: Task, records: Sequence[Any]) -> list[dict[str, str]]:
    return [{"id": r.id, "prompt": task.prompt(r), "completion": task.answer(r)} for r in records]


def preference_pairs(
    task: Task, records: Sequence[Any], strategy: str | None = None, seed: int = 0
) -> list[dict[str, str]]:
    """Pairs for DPO, deterministic for a seed.

    ``strategy``: None = the default (``"balanced"`` for closed-set tasks with one label set, else the
    task's first builder: lettered options whose text varies per record keep their distractors, and
    generation tasks their perturbations); ``"balanced"``; a builder name or a comma list of them (one pair per record per
    builder); ``"all"`` (every builder).
    """
    if strategy in (None, "") and _fixed_labels(task, records) or strategy == BALANCED:
        if not task.is_closed_set:
            raise ConfigError(f"strategy 'balanced' needs a closed-set task ({task.id} generates free text)")
        return balanced_pairs(task, records, seed)
    builders = task.rejected_builders
    if strategy in (None, ""):
        names = [task.default_strategy]
    elif strategy == ALL_STRATEGIES:
        names = list(builders)
    else:
        names = [s.strip() for s in strategy.split(",")]
        unknown = [s for s in names if s not in builders]
        if unknown:
            raise ConfigError(
                f"unknown strategy {unknown[0]!r} for task {task.id}: choose from {', '.join(builders)}, "
                f"'{BALANCED}' (closed-set tasks) or 'all'"
            )
    rng = random.Random(seed)
    pairs = []
    for rec in records:
        chosen = task.answer(rec)
        for name in names:
            rejected = builders[name](rec, rng)
            if rejected == chosen:  # a builder may have nothing to change for this record
                continue
            pairs.append(
                {"id": f"{rec.id}:{name}", "prompt": task.prompt(rec), "chosen": chosen,
                 "rejected": rejected, "strategy": name}
            )
    return pairs


def _fixed_labels(task: Task, records: Sequence[Any]) -> bool:
    return task.is_closed_set and not (records and task.option_texts(records[0]) is not None)


def balanced_pairs(task: Task, records: Sequence[Any], seed: int = 0) -> list[dict[str, str]]:
    """Prior-neutral wrong-label pairs: every label seen in ``records`` is the chosen answer of the same
    number of pairs (within one) and the rejected answer of the same number (within one).

    Why: DPO on one wrong-label pair per record pushes each label up as often as it is gold and down as
    often as it is drawn as the wrong one. On a skewed label mix (65% one class, as real data has) most
    pairs then raise the majority label, and DPO teaches the prior instead of the decision: it collapses
    the model onto that label. Here each label's push up equals its push down, so only the inputs can
    tell the labels apart.

    How: about one pair per record. Records are drawn per gold label, ``q = ceil(len(records) / K)`` for
    each of the K labels (a label with fewer records repeats them, seeded; a label with more uses a
    seeded sample). The j-th pair of label i rejects label ``i + 1 + (j mod (K - 1))`` (mod K): a
    round-robin over the wrong labels, so each label is rejected ``q`` times in all. Labels outside a
    record's own options (lettered answers with 4 of 5 letters) are skipped for the next in the turn.
    With one label among the records (a small validation split), the task's other labels are rejected.
    """
    from collections import defaultdict

    rng = random.Random(seed)
    by_label: dict[str, list[Any]] = defaultdict(list)
    for r in records:
        by_label[task.answer(r)].append(r)
    order = [c for c in (task.choices or ()) if c in by_label] + sorted(set(by_label) - set(task.choices or ()))
    # labels to reject: those seen; with a single label seen (a small validation split), the task's others
    others = order if len(order) >= 2 else list(dict.fromkeys([*order, *(task.choices or ())]))
    if len(others) < 2:
        raise ConfigError(f"{task.id}: pairs need at least two labels (found {len(others)})")
    q = -(-len(records) // len(order))
    pairs: list[dict[str, str]] = []
    for label in order:
        at = others.index(label)
        wrong = others[at + 1:] + others[:at]  # the other labels, in turn after this one
        pool = list(by_label[label])
        rng.shuffle(pool)
        for j in range(q):
            rec = pool[j % len(pool)]
            allowed = set(task.choices_for(rec) or others)
            turn = [wrong[(j + step) % len(wrong)] for step in range(len(wrong))]
            rejected = next((x for x in turn if x in allowed), None)
            if rejected is None:
                continue  # the record allows no other label
            pairs.append({"id": f"{rec.id}:{BALANCED}:{j}", "prompt": task.prompt(rec), "chosen": label,
                          "rejected": rejected, "strategy": BALANCED})
    rng.shuffle(pairs)
    return pairs
