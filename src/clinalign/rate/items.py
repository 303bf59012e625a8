"""What clinicians rate: item files (``--items FILE``) and the study-folder adapter (``--study DIR``).

An items file is JSONL (or CSV) of one kind, decided by its first row:

Likert item (one output of one system for one source note, scored 1-5)::

    {"id": "rec-17", "task": "discharge_summary", "source": "<the note>", "output": "<the summary>",
     "system": "dpo"}

``id`` is the id of the source record; (``id``, ``system``) must be unique, so the same note can be
rated for several systems. ``system`` is never shown to raters; exports carry it back.

Pairwise item (two outputs for one prompt; the better one, or a tie)::

    {"id": "rec-17", "task": "discharge_summary", "prompt": "<what the models were asked>",
     "output_a": "...", "output_b": "...", "system_a": "sft", "system_b": "dpo"}

``id`` is unique; ``task`` is optional in both kinds. Which output is shown on the left is randomised
per rater, so ``output_a`` is simply the first of the pair, not a position on screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clinalign.data.io import read_jsonl, read_raw_rows, read_records, validation_problems
from clinalign.errors import ConfigError, DataError
from clinalign.tasks import Task, get_task

Kind = Literal["likert", "pairwise"]
MAX_TEXT = 200_000  # characters; a discharge note is a few thousand


class LikertItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=200)
    task: str | None = None
    source: str = Field(min_length=1, max_length=MAX_TEXT)
    output: str = Field(min_length=1, max_length=MAX_TEXT)
    system: str = Field(min_length=1, max_length=200)


class PairwiseItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=200)
    task: str | None = None
    prompt: str = Field(min_length=1, max_length=MAX_TEXT)
    output_a: str = Field(min_length=1, max_length=MAX_TEXT)
    output_b: str = Field(min_length=1, max_length=MAX_TEXT)
    system_a: str = Field(min_length=1, max_length=200)
    system_b: str = Field(min_length=1, max_length=200)


Item = LikertItem | PairwiseItem


def item_key(item: Item) -> tuple[str, str]:
    """The unique key of an item within a campaign: (id, system) for Likert, (id, "") for pairwise."""
    return (item.id, item.system) if isinstance(item, LikertItem) else (item.id, "")


def read_items(path: str | Path) -> tuple[Kind, list[Item]]:
    """Validate an items file (FILE:LINE: field errors); the first row's fields decide its kind."""
    first = next((row for _, row, _ in read_raw_rows(path) if row is not None), None)
    kind: Kind = "pairwise" if first is not None and "output_a" in first else "likert"
    if kind == "pairwise":
        return kind, read_records(path, PairwiseItem)
    items: list[LikertItem] = read_records(path, LikertItem, check_ids=False)
    lines = [lineno for lineno, row, _ in read_raw_rows(path) if row is not None]
    seen: dict[tuple[str, str], int] = {}
    problems = []
    for lineno, item in zip(lines, items, strict=True):
        key = item_key(item)
        if key in seen:
            problems.append(f"{path}:{lineno}: id: duplicate (id, system) {key!r} (first on line {seen[key]})")
        seen.setdefault(key, lineno)
    if problems:
        raise DataError(problems)
    return kind, list(items)


def items_from_study(study: str | Path, kind: Kind, task: str = "discharge_summary",
                     systems: list[str] | None = None) -> list[Item]:
    """Build items from a study folder: ``predictions/<task>/<system>.jsonl`` rows {"id", "text" or
    "pred"} joined on id with ``data/<task>/test.jsonl`` records.

    Likert items pair each system's output with the record's ``note``; pairwise items put two systems'
    outputs for the same prompt side by side (default systems: sft and dpo, or the only two there are),
    under the prompt the models saw, so exported picks train on exactly it: ``task`` must then be a
    built-in task id or the task's declaration file, and every test record valid for it.
    Kept in one function because the study layout is defined by the study runner.
    """
    study = Path(study)
    t = get_task(task) if kind == "pairwise" else None
    task = t.id if t is not None else task
    pred_dir, test_file = study / "predictions" / task, study / "data" / task / "test.jsonl"
    if not pred_dir.is_dir() or not test_file.is_file():
        raise ConfigError(f"{study}: not a study folder with predictions/{task}/ and data/{task}/test.jsonl")
    records = {str(r["id"]): r for r in read_jsonl(test_file) if "id" in r}
    available = sorted(p.stem for p in pred_dir.glob("*.jsonl"))
    if systems is None:
        systems = available if kind == "likert" else (
            ["sft", "dpo"] if {"sft", "dpo"} <= set(available) else available)
    missing = [s for s in systems if s not in available]
    if missing or not systems:
        raise ConfigError(f"{pred_dir}: no predictions for {missing or 'any system'} (found {available})")
    if kind == "pairwise" and len(systems) != 2:
        raise ConfigError(f"pairwise items need exactly two systems, got {systems}; pass --systems A,B")
    outputs = {s: {str(r["id"]): _output_text(r) for r in read_jsonl(pred_dir / f"{s}.jsonl")} for s in systems}
    items: list[Item] = []
    for rid, rec in records.items():
        outs = {s: outputs[s].get(rid) for s in systems}
        if any(not o for o in outs.values()):
            continue  # an item is only fair to rate when every system answered it
        if t is None:
            if not rec.get("note"):
                raise ConfigError(f"{test_file}: record {rid!r} has no 'note' field to show as the source")
            items += [LikertItem(id=rid, task=task, source=rec["note"], output=outs[s], system=s) for s in systems]
        else:
            a, b = systems
            items.append(PairwiseItem(id=rid, task=task, prompt=_prompt(t, rec, f"{test_file}: record {rid!r}"),
                                      output_a=outs[a], output_b=outs[b], system_a=a, system_b=b))
    if not items:
        raise ConfigError(f"{study}: no test record of {task} has an output from every one of {systems}")
    return items


def items_from_samples(path: str | Path, task: str | None = None) -> list[PairwiseItem]:
    """Pairwise items from a pairs JSONL (``clinalign data pairs --from-model``: the model's own samples,
    best and worst by the task's judge), so clinicians see the same samples blinded (the app hides the
    systems and randomises sides) and their picks become the next round's ``pairs_file``. ``system_a``
    / ``system_b`` say which answer the judge preferred; exports carry that back for agreement."""
    rows = [r for _, r, _ in read_raw_rows(path) if r is not None]
    items = []
    for i, r in enumerate(rows, 1):
        if not all(isinstance(r.get(k), str) and r[k] for k in ("prompt", "chosen", "rejected")):
            raise DataError([f"{path}:{i}: a pair needs text prompt, chosen and rejected"])
        items.append(PairwiseItem(id=str(r.get("id") or i), task=task, prompt=r["prompt"], output_a=r["chosen"],
                                  output_b=r["rejected"], system_a="judge_best", system_b="judge_worst"))
    if not items:
        raise ConfigError(f"{path}: no pairs")
    return items


def _prompt(task: Task, rec: dict[str, Any], where: str) -> str:
    """The prompt the models saw for a test record; a record the task cannot read is a DataError naming
    the file, the record and the field (never a silent stand-in, which would train on another prompt)."""
    try:
        return task.prompt(task.record_type.model_validate(rec))
    except ValidationError as e:
        raise DataError(validation_problems(where, e)) from None


def _output_text(row: dict[str, Any]) -> str:
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        text = row.get("pred")
    return text.strip() if isinstance(text, str) else ""


