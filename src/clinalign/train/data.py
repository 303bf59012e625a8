"""Training data: the shapes users already have (TRL's ``prompt/completion`` and ``prompt/chosen/
rejected`` JSONL or CSV), or a task's own records, which go through the task's prompt, answer and
rejected-answer builders. Rows are validated with file:line: field errors before anything is written.

Prompts and answers may be strings or chat message lists; the tokenizer's chat template is applied in
``batching``. Over-long examples follow ``truncation`` and are counted, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from clinalign.data.io import read_records
from clinalign.errors import ConfigError, DataError
from clinalign.train.batching import PairExample, SFTExample, tokenize_pair, tokenize_sft

Text = str | list[dict[str, Any]]


class SFTRow(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt: Text
    completion: Text


class PairRow(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt: Text
    chosen: Text
    rejected: Text


@dataclass
class Tokenized:
    examples: list[Any]  # SFTExample | PairExample
    truncated: int  # prompts shortened by the "left" policy
    dropped: int  # examples skipped by the "drop" policy (or whose answer alone is too long)


def load_rows(stage: str, data: str | Path, task: str | None = None, pairs: str | None = None,
              seed: int = 0) -> list[dict[str, Any]]:
    """Rows as ``{"prompt","completion"}`` (sft) or ``{"prompt","chosen","rejected"}`` (dpo)."""
    if task is None:
        row_type = SFTRow if stage == "sft" else PairRow
        return [r.model_dump() for r in read_records(data, row_type, check_ids=False)]
    from clinalign.data.pairs import preference_pairs, sft_examples
    from clinalign.tasks import get_task

    t = get_task(task)
    records = read_records(data, t.record_type)
    rows = sft_examples(t, records) if stage == "sft" else preference_pairs(t, records, strategy=pairs, seed=seed)
    if not rows:
        raise DataError([f"{data}: no training examples could be built"])
    return rows


def tokenize_rows(stage: str, rows: list[dict[str, Any]], tokenizer: Any, max_length: int,
                  truncation: str) -> Tokenized:
    out: list[SFTExample | PairExample] = []
    truncated = dropped = 0
    for r in rows:
        if stage == "sft":
            ex = tokenize_sft(tokenizer, r["prompt"], r["completion"], max_length, truncation)
        else:
            ex = tokenize_pair(tokenizer, r["prompt"], r["chosen"], r["rejected"], max_length, truncation)
        if ex is None:
            dropped += 1
            continue
        truncated += int(ex.truncated)
        out.append(ex)
    if not out:
        raise ConfigError(
            f"every example ({len(rows)}) is longer than max_length={max_length} under truncation="
            f"{truncation!r}; raise max_length"
        )
    return Tokenized(out, truncated, dropped)
