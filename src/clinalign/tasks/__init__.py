"""Task registry: the five clinical tasks by id, plus tasks declared in YAML (see `declared.py`).

``get_task`` accepts a task id or a path to a ``.yaml`` task declaration, so every command that
takes a task id also takes a user's own task file.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

from clinalign.errors import TaskError
from clinalign.tasks.base import Metric, Prediction, Record, Task

#: task id -> module under clinalign.tasks defining ``TASK``
BUILTIN_TASKS: dict[str, str] = {
    "uti_classification": "uti_classification",
    "hyponatremia_urine": "hyponatremia_urine",
    "clinical_reasoning": "clinical_reasoning",
    "discharge_summary": "discharge_summary",
    "message_triage": "message_triage",
}


@cache
def _builtin(task_id: str) -> Task:
    module = importlib.import_module(f"clinalign.tasks.{BUILTIN_TASKS[task_id]}")
    return module.TASK


def get_task(name_or_path: str | Path) -> Task:
    """A built-in task by id, or a task declared in a YAML file."""
    name = str(name_or_path)
    if name in BUILTIN_TASKS:
        return _builtin(name)
    if name.endswith((".yaml", ".yml")):
        from clinalign.tasks.declared import load_task_file

        return load_task_file(Path(name))
    raise TaskError(
        f"unknown task {name!r}: expected one of {', '.join(BUILTIN_TASKS)} or a task file (.yaml)"
    )


def all_tasks() -> list[Task]:
    return [_builtin(t) for t in BUILTIN_TASKS]


__all__ = ["BUILTIN_TASKS", "Metric", "Prediction", "Record", "Task", "all_tasks", "get_task"]
