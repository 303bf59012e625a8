"""The bundled synthetic data: one generator per built-in task, seeded, with ground truth from the
task's own rule, so that tests and the demo never need outside data.

A generator is optional: a task is its definition (`clinalign.tasks`), and any task, bundled or a
hospital's own, works with records from files (``data:`` in a study, FILE to the data commands).
``generate(task, n, seed)`` is for the tasks listed in ``GENERATORS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clinalign.errors import TaskError
from clinalign.synthetic import (
    clinical_reasoning,
    discharge_summary,
    hyponatremia_urine,
    message_triage,
    uti_classification,
)
from clinalign.tasks import Task, get_task

Generator = Callable[[int, int], list[Any]]

#: task id -> its generator, ``f(n, seed) -> n records``, the same records for the same seed
GENERATORS: dict[str, Generator] = {
    "uti_classification": uti_classification.generate,
    "hyponatremia_urine": hyponatremia_urine.generate,
    "clinical_reasoning": clinical_reasoning.generate,
    "discharge_summary": discharge_summary.generate,
    "message_triage": message_triage.generate,
}


def generator_for(task: Task) -> Generator | None:
    """The bundled generator of ``task``, or None. Matched by the task's class, not only its id, so a
    user's task that reuses a built-in id never receives records of another schema."""
    gen = GENERATORS.get(task.id)
    return gen if gen is not None and type(task) is type(get_task(task.id)) else None


def generate(task: Task, n: int, seed: int) -> list[Any]:
    """``n`` synthetic records of ``task``, identical for the same seed."""
    gen = generator_for(task)
    if gen is None:
        raise TaskError(f"task {task.id!r} has no synthetic generator; bring your data "
                        "(a record file: `data:` in a study, FILE to the data commands)")
    return gen(n, seed)


__all__ = ["GENERATORS", "Generator", "generate", "generator_for"]
