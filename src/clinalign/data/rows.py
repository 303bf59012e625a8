"""The training rows users bring, in TRL's shapes: ``prompt/completion`` (SFT), ``prompt/chosen/
rejected`` (DPO) and ``prompt/completion/label`` (KTO). One validator each, used by the trainers, the
exporters and the audit alike, with the ``FILE:LINE: field: message`` errors of data/io.

A prompt or answer is non-empty text or a non-empty list of chat messages (``{"role", "content"}``);
other columns (id, strategy, votes...) are kept for tracing and ignored by the trainers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

from clinalign.data.io import read_numbered


def _text(value: Any) -> str | list[dict[str, Any]]:
    ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(m, dict) for m in value))
    if not ok or not value:
        raise PydanticCustomError("text", "expected non-empty text or a list of chat messages (got {got})",
                                  {"got": f"{type(value).__name__}{' of length 0' if ok else ''}"})
    return value


Text = Annotated[str | list[dict[str, Any]], BeforeValidator(_text)]


class SFTRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt: Text
    completion: Text


class PairRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt: Text
    chosen: Text
    rejected: Text


class KTORow(BaseModel):
    """TRL's unpaired preference shape: one answer and whether it is desirable."""

    model_config = ConfigDict(extra="allow")
    prompt: Text
    completion: Text
    label: bool


def read_rows(path: str | Path, row_type: type[SFTRow] | type[PairRow] | type[KTORow]
              ) -> list[tuple[int, dict[str, Any]]]:
    """(line, row) for every row of ``path``, each valid as ``row_type`` (its extra columns kept); a
    DataError lists every bad row."""
    return [(line, rec.model_dump()) for line, rec in read_numbered(path, row_type, check_ids=False)]
