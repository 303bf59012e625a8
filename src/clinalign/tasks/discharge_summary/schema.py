"""A discharge-summary record: the note, its reference summary and the key facts behind both."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from clinalign.tasks.base import Record


class Fact(BaseModel):
    """One key fact of a note. ``text`` is the canonical phrase; medications also give ``name`` and
    ``dose`` separately (the dose is checked, not just the words)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["diagnosis", "procedure", "medication", "follow_up", "finding"]
    text: str
    name: str | None = None
    dose: str | None = None
    aliases: list[str] = []

    @model_validator(mode="after")
    def _medication_has_name(self) -> Fact:
        if not self.text.strip():
            raise ValueError("text: empty")
        if self.kind == "medication" and not (self.name and self.name.strip()):
            raise ValueError("a medication fact needs a name (and usually a dose)")
        return self


class DischargeRecord(Record):
    note: str
    summary: str
    facts: list[Fact]

    @field_validator("note", "summary")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty text")
        return v

    @field_validator("facts")
    @classmethod
    def _some_facts(cls, v: list[Fact]) -> list[Fact]:
        if not v:
            raise ValueError("needs at least one key fact")
        return v

