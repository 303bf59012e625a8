"""Tasks declared in YAML, without code: a hospital's own classification or generation task.

```yaml
id: sepsis_note            # classification
type: classification
text_fields: [note]
label_field: label
labels: [sepsis, no_sepsis]
prompt: "Does this note describe sepsis? Answer sepsis or no_sepsis.\\n\\n{note}"
positive_label: sepsis     # optional: also report F1 of this class
```
```yaml
id: radiology_impression   # generation
type: generation
text_field: findings
reference_field: impression
facts_field: key_findings  # optional list of strings: exact-fact recall
prompt: "Write the impression for these findings:\\n{findings}"
```
Prompts are Python format strings over the record's fields.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, create_model, field_validator

from clinalign.errors import TaskError
from clinalign.eval.metrics import accuracy, f1_for, macro_f1
from clinalign.tasks.base import Metric, Prediction, Record, Task


class _Decl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    description: str = ""
    prompt: str


class ClassificationDecl(_Decl):
    type: Literal["classification"]
    text_fields: list[str]
    label_field: str = "label"
    labels: list[str]
    positive_label: str | None = None


class GenerationDecl(_Decl):
    type: Literal["generation"]
    text_field: str
    reference_field: str
    facts_field: str | None = None
    max_new_tokens: int = 128


def _nonempty(v: str) -> str:
    if not v.strip():
        raise ValueError("empty text")
    return v


def _record_model(name: str, text_fields: list[str], extra: dict[str, Any]) -> type[Record]:
    fields: dict[str, Any] = {f: (str, ...) for f in text_fields}
    fields.update(extra)
    validators = {"_nonempty": field_validator(*text_fields)(classmethod(lambda cls, v: _nonempty(v)))}
    return create_model(name, __base__=Record, __validators__=validators, **fields)


class DeclaredClassification(Task):
    def __init__(self, d: ClassificationDecl):
        self.decl, self.id, self.description = d, d.id, d.description or d.id
        self.choices = tuple(d.labels)
        self.record_type = _record_model(f"{d.id}_record", d.text_fields, {d.label_field: (Literal[tuple(d.labels)], ...)})

    def prompt(self, record: Any) -> str:
        return self.decl.prompt.format_map(record.model_dump())

    def answer(self, record: Any) -> str:
        return getattr(record, self.decl.label_field)

    def parse(self, text: str) -> Prediction:
        t = text.lower()
        hits = [lab for lab in self.decl.labels if re.search(rf"(?<!\w){re.escape(lab.lower())}(?!\w)", t)]
        return hits[0] if len(hits) == 1 else None

    @property
    def metrics(self) -> tuple[Metric, ...]:
        gold = self.answer
        out = [Metric("f1_macro", "paired_bootstrap", lambda rs, ps: macro_f1([gold(r) for r in rs], ps, self.choices)),
               Metric("accuracy", "mcnemar", lambda rs, ps: accuracy([gold(r) for r in rs], ps),
                      per_item=lambda r, p: float(gold(r) == p))]
        if self.decl.positive_label:
            pos = self.decl.positive_label
            out.insert(0, Metric(f"f1_{pos}", "paired_bootstrap", lambda rs, ps: f1_for([gold(r) for r in rs], ps, pos)))
        return tuple(out)

    @property
    def rejected_builders(self):
        return {"wrong_label": lambda r, rng: rng.choice([x for x in self.choices if x != self.answer(r)])}

    def generate(self, n: int, seed: int) -> list[Any]:
        raise TaskError(f"declared task {self.id!r} has no synthetic generator; bring your data (data: FILE)")


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1 on lower-cased word tokens (longest common subsequence)."""
    a, b = reference.lower().split(), candidate.lower().split()
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(b), lcs / len(a)
    return 2 * p * r / (p + r)


class DeclaredGeneration(Task):
    choices = None

    def __init__(self, d: GenerationDecl):
        self.decl, self.id, self.description = d, d.id, d.description or d.id
        self.max_new_tokens = d.max_new_tokens
        extra: dict[str, Any] = {d.reference_field: (str, ...)}
        if d.facts_field:
            extra[d.facts_field] = (list[str], ...)
        self.record_type = _record_model(f"{d.id}_record", [d.text_field], extra)

    def prompt(self, record: Any) -> str:
        return self.decl.prompt.format_map(record.model_dump())

    def answer(self, record: Any) -> str:
        return getattr(record, self.decl.reference_field)

    def parse(self, text: str) -> Prediction:
        return text.strip() or None

    def fact_recall(self, record: Any, pred: Prediction) -> float:
        facts = getattr(record, self.decl.facts_field or "", None) or []
        text = (pred or "").lower()
        return sum(f.lower() in text for f in facts) / len(facts) if facts else 1.0

    @property
    def metrics(self) -> tuple[Metric, ...]:
        def rl(r: Any, p: Prediction) -> float:
            return rouge_l(self.answer(r), p or "")

        def mean(fn):
            return lambda rs, ps: sum(fn(r, p) for r, p in zip(rs, ps, strict=True)) / max(len(rs), 1)

        out = [Metric("rouge_l", "wilcoxon", mean(rl), per_item=rl)]
        if self.decl.facts_field:
            out.append(Metric("fact_recall", "wilcoxon", mean(self.fact_recall), per_item=self.fact_recall))
        return tuple(out)

    @property
    def rejected_builders(self):
        return {"truncate": lambda r, rng: truncate_half(self.answer(r))}

    def generate(self, n: int, seed: int) -> list[Any]:
        raise TaskError(f"declared task {self.id!r} has no synthetic generator; bring your data (data: FILE)")


def truncate_half(reference: str) -> str:
    """The reference cut to its first half: fluent but incomplete, the commonest summary failure."""
    words = reference.split()
    return " ".join(words[: max(1, len(words) // 2)]) if len(words) > 1 else ""


def load_task_file(path: Path) -> Task:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaskError(f"task file {path} not found") from None
    except yaml.YAMLError as e:
        raise TaskError(f"{path}: not valid YAML ({e})".replace("\n", " ")) from None
    if not isinstance(raw, dict) or raw.get("type") not in ("classification", "generation"):
        raise TaskError(f"{path}: type: must be 'classification' or 'generation'")
    model = ClassificationDecl if raw["type"] == "classification" else GenerationDecl
    try:
        decl = model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise TaskError(f"{path}: {'.'.join(map(str, err['loc'])) or 'task'}: {err['msg']}") from None
    fields = set(decl.text_fields) if isinstance(decl, ClassificationDecl) else {decl.text_field}
    for name in re.findall(r"{(\w+)}", decl.prompt):
        if name not in fields:
            raise TaskError(f"{path}: prompt: placeholder {{{name}}} is not a text field ({', '.join(sorted(fields))})")
    if isinstance(decl, ClassificationDecl):
        if decl.positive_label and decl.positive_label not in decl.labels:
            raise TaskError(f"{path}: positive_label: {decl.positive_label!r} is not one of labels")
        return DeclaredClassification(decl)
    return DeclaredGeneration(decl)
