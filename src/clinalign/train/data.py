"""Training data: the shapes users already have (TRL's ``prompt/completion`` and ``prompt/chosen/
rejected`` JSONL or CSV, validated by data/rows.py), or a task's own records, which go through the
task's prompt, answer and rejected-answer builders. Rows are validated with file:line: field errors
before anything is written.

Prompts and answers may be strings or chat message lists; the tokenizer's chat template is applied in
``batching``. Over-long examples follow ``truncation`` and are counted, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinalign.data.io import read_records
from clinalign.data.rows import KTORow, PairRow, SFTRow, read_rows
from clinalign.errors import ConfigError, DataError
from clinalign.train.tokenize import PairExample, SFTExample, tokenize_pair, tokenize_sft


@dataclass
class Tokenized:
    examples: list[Any]  # SFTExample | PairExample
    truncated: int  # prompts shortened by the "left" policy
    dropped: int  # examples skipped by the "drop" policy (or whose answer alone is too long)
    kept: list[int]  # index in ``rows`` of each example


def load_rows(stage: str, data: str | Path, task: str | None = None, pairs: str | None = None,
              seed: int = 0) -> list[dict[str, Any]]:
    """Rows as ``{"prompt","completion"}`` (sft) or ``{"prompt","chosen","rejected"}`` (dpo)."""
    if task is None:
        return _fields(data, SFTRow if stage == "sft" else PairRow)
    from clinalign.data.pairs import preference_pairs, sft_examples
    from clinalign.tasks import get_task

    t = get_task(task)
    records = read_records(data, t.record_type)
    rows = sft_examples(t, records) if stage == "sft" else preference_pairs(t, records, strategy=pairs, seed=seed)
    if not rows:
        raise DataError([f"{data}: no training examples could be built"])
    return rows


def _fields(data: str | Path, row_type: type[SFTRow] | type[PairRow] | type[KTORow]) -> list[dict[str, Any]]:
    """The rows of a user's file (data/rows.py validates them), without their tracing columns."""
    return [{k: row[k] for k in row_type.model_fields} for _, row in read_rows(data, row_type)]


def tokenize_rows(stage: str, rows: list[dict[str, Any]], tokenizer: Any, max_length: int,
                  truncation: str) -> Tokenized:
    out: list[SFTExample | PairExample] = []
    kept: list[int] = []
    truncated = dropped = 0
    for i, r in enumerate(rows):
        if stage == "sft":
            ex = tokenize_sft(tokenizer, r["prompt"], r["completion"], max_length, truncation)
        else:
            ex = tokenize_pair(tokenizer, r["prompt"], r["chosen"], r["rejected"], max_length, truncation)
        if ex is None:
            dropped += 1
            continue
        truncated += int(ex.truncated)
        out.append(ex)
        kept.append(i)
    if not out:
        raise ConfigError(
            f"every example ({len(rows)}) is longer than max_length={max_length} under truncation="
            f"{truncation!r}; raise max_length"
        )
    return Tokenized(out, truncated, dropped, kept)


def load_kto_rows(data: str | Path, task: str | None = None, pairs: str | None = None,
                  seed: int = 0) -> list[dict[str, Any]]:
    """``{"prompt","completion","label"}`` rows for KTO: a file in that shape, or preference pairs (a
    pair file or task records) split into a desirable and an undesirable row each."""
    if task is None:
        try:
            return _fields(data, KTORow)
        except DataError as kto_error:
            try:
                paired = load_rows("dpo", data)
            except DataError:
                raise kto_error from None
    else:
        paired = load_rows("dpo", data, task=task, pairs=pairs, seed=seed)
    return [{"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"}
            for r in paired for k in ("chosen", "rejected")]


def kto_as_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each KTO row as a pair (its answer, another row's answer) on its prompt, so the shared-prompt
    packing, the reference cache and ``pair_logps`` serve KTO unchanged: the second answer is the
    mismatched completion whose log-ratio estimates KTO's KL reference point (TRL's KL dataset does the
    same within a batch). The offset n//2 keeps a split pair's two halves from meeting again."""
    n = len(rows)
    shift = max(1, n // 2) if n > 1 else 0
    return [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": rows[(i + shift) % n]["completion"]}
            for i, r in enumerate(rows)]
