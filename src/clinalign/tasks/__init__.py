"""Task registry: every name a user can give a task resolves here, so every command and study that
takes a task takes all of them.

- a built-in id: ``uti_classification``
- a task declared in YAML: ``mytask.yaml`` (see `declared.py`)
- a Task in any importable module, as ``module:attr``: ``my_pkg.tasks:Readmission`` (a Task subclass,
  created without arguments, or a Task instance)
- the name under which an installed package registers a task in the ``clinalign.tasks`` entry-point
  group, e.g. in that package's ``pyproject.toml``:
  ``[project.entry-points."clinalign.tasks"] readmission = "my_pkg.tasks:Readmission"``

A hospital's own task therefore never means editing this package.
"""

from __future__ import annotations

import importlib
import re
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from clinalign.errors import TaskError
from clinalign.tasks.base import Metric, Prediction, Record, RejectedBuilder, Task

#: task id -> module under clinalign.tasks defining ``TASK``
BUILTIN_TASKS: dict[str, str] = {
    "uti_classification": "uti_classification",
    "hyponatremia_urine": "hyponatremia_urine",
    "clinical_reasoning": "clinical_reasoning",
    "discharge_summary": "discharge_summary",
    "message_triage": "message_triage",
}
#: the entry-point group installed packages register their tasks in
ENTRY_POINT_GROUP = "clinalign.tasks"
_MODULE_ATTR = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@cache
def _builtin(task_id: str) -> Task:
    module = importlib.import_module(f"clinalign.tasks.{BUILTIN_TASKS[task_id]}")
    return module.TASK


def get_task(name_or_path: str | Path) -> Task:
    """A task by built-in id, task file (.yaml), ``module:attr`` or installed entry-point name."""
    name = str(name_or_path)
    if name in BUILTIN_TASKS:
        return _builtin(name)
    if name.endswith((".yaml", ".yml")):
        from clinalign.tasks.declared import load_task_file

        return load_task_file(Path(name))
    if ":" in name:
        if not _MODULE_ATTR.match(name):
            raise TaskError(f"task {name!r}: expected module:attr, e.g. my_pkg.tasks:Readmission")
        return load_task_object(name, f"task {name!r}")
    registered = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if len(registered) > 1:
        raise TaskError(f"task {name!r} is registered by more than one installed package: "
                        + ", ".join(ep.value for ep in registered))
    if registered:
        return load_task_object(registered[0].value, f"task {name!r} (entry point {registered[0].value})")
    installed = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} - set(BUILTIN_TASKS))
    raise TaskError(f"unknown task {name!r}: expected one of {', '.join([*BUILTIN_TASKS, *installed])}, "
                    "a task file (.yaml) or module:attr (a Task in an importable module)")


def load_task_object(spec: str, where: str) -> Task:
    """The Task that ``spec`` (``module:attr``) names; ``where`` starts each error message."""
    module_name, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and e.name and f"{module_name}.".startswith(f"{e.name}."):
            raise TaskError(f"{where}: no module named {e.name!r} (install the package that holds it, or "
                            "add its folder to PYTHONPATH)") from e
        raise TaskError(f"{where}: importing {module_name!r} failed: {e}") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TaskError(f"{where}: {getattr(obj, '__name__', type(obj).__name__)!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    if isinstance(obj, type) and issubclass(obj, Task):
        try:
            obj = obj()
        except TypeError as e:  # an abstract method left out, or an __init__ that needs arguments
            raise TaskError(f"{where}: cannot create {obj.__name__}() ({e})") from e
    if not isinstance(obj, Task):
        kind = "class" if isinstance(obj, type) else type(obj).__name__
        raise TaskError(f"{where}: {kind} {attr!r} is not a clinalign Task (subclass clinalign.tasks.Task)")
    missing = [a for a in ("id", "description", "record_type") if not hasattr(obj, a)]
    if missing:
        raise TaskError(f"{where}: {type(obj).__name__} does not set {', '.join(missing)}")
    return obj


def all_tasks() -> list[Task]:
    return [_builtin(t) for t in BUILTIN_TASKS]


__all__ = [
    "BUILTIN_TASKS", "ENTRY_POINT_GROUP", "Metric", "Prediction", "Record", "RejectedBuilder", "Task",
    "all_tasks", "get_task", "load_task_object",
]
