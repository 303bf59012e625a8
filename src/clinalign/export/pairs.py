"""Preference pairs and SFT examples in other tools' and vendors' formats.

- ``jsonl``: plain ``prompt``/``chosen``/``rejected`` (TRL's standard shape).
- ``openai-dpo`` / ``azure-openai-dpo``: OpenAI's preference fine-tuning JSONL (``input.messages``,
  ``preferred_output``, ``non_preferred_output``), which Azure OpenAI takes unchanged.
- ``vertex-gemini-preference``: Vertex AI Gemini preference tuning (``contents``, ``completions``).
- ``openai-sft`` / ``azure-openai-sft`` / ``vertex-gemini-sft``: chat SFT from ``prompt``/``completion``.
- ``hf-dataset``: a Hugging Face ``datasets`` directory (``load_from_disk``).

Every vendor record is checked against the vendor's documented rules (``vendor.py``) before anything
is written; a row that breaks one is reported as ``SOURCE:LINE: field: problem``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from clinalign.data.io import read_records, validation_problems, write_jsonl
from clinalign.data.rows import PairRow, SFTRow, read_rows
from clinalign.errors import ConfigError, DataError
from clinalign.export import vendor

PAIR_FIELDS = tuple(PairRow.model_fields)
Messages = list[dict[str, Any]]


def _messages(prompt: str | Messages) -> Messages:
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def _answer(answer: str | Messages) -> Messages:
    """An answer is text (one assistant message) or already a list of messages (TRL's chat shape)."""
    return answer if isinstance(answer, list) else [{"role": "assistant", "content": answer}]


def to_jsonl(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in PAIR_FIELDS}


def to_openai_dpo(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "input": {"messages": _messages(row["prompt"])},
        "preferred_output": _answer(row["chosen"]),
        "non_preferred_output": _answer(row["rejected"]),
    }


def to_openai_sft(row: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [*_messages(row["prompt"]), *_answer(row["completion"])]}


def _gemini(messages: Messages) -> tuple[dict[str, Any] | None, Messages]:
    """Chat messages as Gemini's (system instruction, contents): assistant turns are role "model"."""
    system = [m["content"] for m in messages if m.get("role") == "system"]
    contents = [{"role": {"assistant": "model"}.get(m.get("role"), m.get("role")), "parts": [{"text": m.get("content")}]}
                for m in messages if m.get("role") != "system"]
    return ({"parts": [{"text": t} for t in system]} if system else None), contents


def _model_turn(answer: str | Messages) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": m.get("content")} for m in _answer(answer)]}


def to_vertex_preference(row: dict[str, Any]) -> dict[str, Any]:
    system, contents = _gemini(_messages(row["prompt"]))
    return {**({"system_instruction": system} if system else {}), "contents": contents,
            "completions": [{"score": 1, "completion": _model_turn(row["chosen"])},
                            {"score": 0, "completion": _model_turn(row["rejected"])}]}


def to_vertex_sft(row: dict[str, Any]) -> dict[str, Any]:
    system, contents = _gemini([*_messages(row["prompt"]), *_answer(row["completion"])])
    return {**({"systemInstruction": system} if system else {}), "contents": contents}


@dataclass(frozen=True)
class Format:
    rows: type[PairRow] | type[SFTRow]  # what each source row must be (data/rows.py)
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None  # None: a datasets directory
    schema: type[BaseModel] | None = None  # the vendor's record rules; None: no vendor to satisfy


FORMATS: dict[str, Format] = {
    "jsonl": Format(PairRow, to_jsonl),
    "openai-dpo": Format(PairRow, to_openai_dpo, vendor.OpenAIDpoRecord),
    "azure-openai-dpo": Format(PairRow, to_openai_dpo, vendor.OpenAIDpoRecord),
    "vertex-gemini-preference": Format(PairRow, to_vertex_preference, vendor.VertexPreferenceRecord),
    "openai-sft": Format(SFTRow, to_openai_sft, vendor.OpenAISftRecord),
    "azure-openai-sft": Format(SFTRow, to_openai_sft, vendor.OpenAISftRecord),
    "vertex-gemini-sft": Format(SFTRow, to_vertex_sft, vendor.VertexSftRecord),
    "hf-dataset": Format(PairRow, None),
}


def get_format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    return FORMATS[fmt]


def convert_rows(path: Path, fmt: str) -> list[dict[str, Any]]:
    """Every row of ``path`` in format ``fmt``, each checked against the vendor's rules."""
    spec = get_format(fmt)
    assert spec.convert is not None
    out, problems = [], []
    for lineno, row in read_rows(path, spec.rows):
        rec = spec.convert(row)
        if spec.schema is not None:
            try:
                spec.schema.model_validate(rec)
            except ValidationError as e:
                problems += validation_problems(f"{path}:{lineno}", e)
        out.append(rec)
    if problems:
        raise DataError(problems)
    return out


def validate_file(path: Path, fmt: str) -> int:
    """Check a vendor upload file (written here or by hand) against the vendor's rules; rows checked."""
    spec = get_format(fmt)
    if spec.schema is None:
        raise ConfigError(f"{fmt} has no vendor rules to check; choose a vendor format")
    return len(read_records(path, spec.schema, check_ids=False))


def export(path: Path, out: Path, fmt: str) -> int:
    spec = get_format(fmt)
    if spec.convert is not None:
        return write_jsonl(out, convert_rows(path, fmt))
    rows = [row for _, row in read_rows(path, spec.rows)]
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
             "chosen": _answer(r["chosen"]), "rejected": _answer(r["rejected"])} for r in rows]
