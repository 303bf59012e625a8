"""Preference pairs and SFT examples in other tools' formats.

- ``jsonl``: plain ``prompt``/``chosen``/``rejected`` (TRL's standard shape).
- ``openai-dpo``: OpenAI's preference fine-tuning JSONL (``input.messages``, ``preferred_output``,
  ``non_preferred_output``), for teams whose vendor model supports DPO.
- ``openai-sft``: OpenAI's chat fine-tuning JSONL (``messages``) from ``prompt``/``completion``.
- ``hf-dataset``: a Hugging Face ``datasets`` directory (``load_from_disk``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from clinalign.data.io import read_raw_rows, write_jsonl
from clinalign.errors import ConfigError, DataError

FORMATS = ("jsonl", "openai-dpo", "openai-sft", "hf-dataset")
PAIR_FIELDS = ("prompt", "chosen", "rejected")
SFT_FIELDS = ("prompt", "completion")


def read_rows(path: Path, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    rows, problems = [], []
    for lineno, row, problem in read_raw_rows(path):
        if problem:
            problems.append(f"{path}:{lineno}: {problem}")
            continue
        assert row is not None
        for f in fields:
            if f not in row:
                problems.append(f"{path}:{lineno}: {f}: missing field")
            elif not isinstance(row[f], str | list) or not row[f]:
                problems.append(f"{path}:{lineno}: {f}: expected non-empty text or messages")
        rows.append(row)
    if problems:
        raise DataError(problems)
    if not rows:
        raise DataError([f"{path}: no records"])
    return rows


def _messages(prompt: str | list[dict[str, str]]) -> list[dict[str, str]]:
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def to_openai_dpo(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "input": {"messages": _messages(row["prompt"])},
        "preferred_output": [{"role": "assistant", "content": row["chosen"]}],
        "non_preferred_output": [{"role": "assistant", "content": row["rejected"]}],
    }


def to_openai_sft(row: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [*_messages(row["prompt"]), {"role": "assistant", "content": row["completion"]}]}


def export(path: Path, out: Path, fmt: str) -> int:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    is_sft = fmt == "openai-sft"
    rows = read_rows(path, SFT_FIELDS if is_sft else PAIR_FIELDS)
    if fmt == "openai-dpo":
        return write_jsonl(out, [to_openai_dpo(r) for r in rows])
    if fmt == "openai-sft":
        return write_jsonl(out, [to_openai_sft(r) for r in rows])
    if fmt == "jsonl":
        return write_jsonl(out, [{k: r[k] for k in PAIR_FIELDS} for r in rows])
    from datasets import Dataset

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        Dataset.from_list(_uniform(rows)).save_to_disk(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(rows)


def _uniform(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A dataset column has one type: when any prompt is a chat, all rows use TRL's conversational
    shape (prompt = messages, chosen/rejected = one assistant message each)."""
    if all(isinstance(r["prompt"], str) for r in rows):
        return [{k: r[k] for k in PAIR_FIELDS} for r in rows]
    return [{"prompt": _messages(r["prompt"]),
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]
