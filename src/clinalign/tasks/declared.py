"""Tasks declared in YAML, without code: a hospital's own classification or generation task.

A declared task is used wherever a task id goes (``clinalign data validate --task-file t.yaml FILE``,
``task: t.yaml`` in a study). Examples to copy: ``configs/tasks/example_classification.yaml`` and
``configs/tasks/example_generation.yaml``.

```yaml
id: sepsis_note                 # classification
type: classification
text_fields: [note]             # one or more record fields holding text
label_field: label              # default: label
labels: [sepsis, no_sepsis]
positive_label: sepsis          # optional: also report F1 of this class (listed first: the primary metric)
metrics: [f1, f1_macro, accuracy]   # optional; default: all that apply, in this order
prompt: |
  Does this note describe sepsis? Answer sepsis or no_sepsis.

  {note}
```
```yaml
id: radiology_impression        # generation
type: generation
text_field: findings
reference_field: impression
facts_field: key_findings       # optional: a list of strings each answer should contain
metrics: [rouge_l, fact_recall] # optional
max_new_tokens: 96              # optional, default 128
prompt: "Write the impression for these findings:\\n{findings}"
```

Prompts are Python format strings (``str.format_map``) over the record's text fields: ``{note}`` is
replaced by the field, ``{{`` and ``}}`` write literal braces. Jinja was not chosen because a prompt
needs substitution only, and a format string fails loudly at load time when it names a field the
record lacks.

Metrics. Classification: ``f1`` (F1 of ``positive_label``; paired bootstrap), ``f1_macro`` (paired
bootstrap), ``accuracy`` (McNemar). Generation: ``rouge_l`` (ROUGE-L F-measure from Google's
``rouge-score`` package, Porter stemming on; its tokenizer keeps only ASCII letters and digits) and
``fact_recall`` (share of the record's facts found verbatim in the answer, ignoring case and runs
of whitespace); both per item, Wilcoxon signed-rank.
"""

from __future__ import annotations

import difflib
import random
import re
import string
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
)

from clinalign.config import load_yaml
from clinalign.errors import TaskError
from clinalign.tasks.base import Metric, Prediction, Record, RejectedBuilder, Task
from clinalign.tasks.metrics import accuracy_metric, f1_for, macro_f1
from clinalign.tasks.text import strip_chat_artefacts

CLASSIFICATION_METRICS = ("f1", "f1_macro", "accuracy")
GENERATION_METRICS = ("rouge_l", "fact_recall")

FieldName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]


class _Decl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""
    prompt: Annotated[str, Field(min_length=1)]
    metrics: list[str] | None = None


class ClassificationDecl(_Decl):
    type: Literal["classification"]
    text_fields: Annotated[list[FieldName], Field(min_length=1)]
    label_field: FieldName = "label"
    labels: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=2)]
    positive_label: str | None = None


class GenerationDecl(_Decl):
    type: Literal["generation"]
    text_field: FieldName
    reference_field: FieldName
    facts_field: FieldName | None = None
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 128


def _nonempty(v: str) -> str:
    if not v.strip():
        raise ValueError("empty text")
    return v


def _label_text(v: Any) -> Any:
    """Numeric labels (0/1) in a JSONL file mean the same as their text."""
    return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v


Text = Annotated[str, AfterValidator(_nonempty)]


def _record_model(name: str, fields: dict[str, Any]) -> type[Record]:
    return create_model(name, __base__=Record, **fields)


def _render(template: str, record: Any) -> str:
    return template.format_map(record.model_dump())


def _mean(fn: Callable[[Any, Prediction], float]) -> Callable[[Sequence[Any], Sequence[Prediction]], float]:
    def compute(recs: Sequence[Any], preds: Sequence[Prediction]) -> float:
        vals = [fn(r, p) for r, p in zip(recs, preds, strict=True)]
        return sum(vals) / len(vals) if vals else float("nan")

    return compute


class DeclaredClassification(Task):
    """A closed-set task: answers are scored by log-likelihood over ``labels``."""

    def __init__(self, d: ClassificationDecl):
        self.decl = d
        self.id = d.id
        self.description = d.description or d.id
        self.choices = tuple(d.labels)
        fields: dict[str, Any] = {f: (Text, ...) for f in d.text_fields}
        fields[d.label_field] = (Annotated[Literal[tuple(d.labels)], BeforeValidator(_label_text)], ...)
        self.record_type = _record_model(f"{d.id}_record", fields)
        # longest label first, so "no sepsis" is not also read as "sepsis"
        forms = sorted(((_label_words(lab), lab) for lab in d.labels), key=lambda x: -len(x[0]))
        self._label_of = dict(forms)
        self._label_re = re.compile(r"(?<!\w)(" + "|".join(re.escape(f) for f, _ in forms) + r")(?!\w)")

    def prompt(self, record: Any) -> str:
        return _render(self.decl.prompt, record)

    def answer(self, record: Any) -> str:
        return getattr(record, self.decl.label_field)

    def parse(self, text: str) -> Prediction:
        """The one label the text names (case, underscores and hyphens ignored); None for none or several."""
        found = {self._label_of[m.group(1)] for m in self._label_re.finditer(_label_words(text))}
        return found.pop() if len(found) == 1 else None

    @property
    def metrics(self) -> tuple[Metric, ...]:
        gold = self.answer
        labels = self.choices
        assert labels is not None

        def golds(rs: Sequence[Any]) -> list[str]:
            return [gold(r) for r in rs]

        pos = self.decl.positive_label
        built = {
            "f1": lambda: Metric(f"f1_{pos}", "paired_bootstrap", lambda rs, ps: f1_for(golds(rs), ps, pos or ""),
                                 covers=f"F1 of the label {pos!r}; an unparseable answer is wrong. Not: the "
                                        "other labels."),
            "f1_macro": lambda: Metric("f1_macro", "paired_bootstrap", lambda rs, ps: macro_f1(golds(rs), ps, labels),
                                       covers="mean F1 over the labels, each weighted equally; an unparseable "
                                              "answer is wrong. Not: how near a wrong label is."),
            "accuracy": lambda: accuracy_metric(gold, covers="share of records answered with the gold label. Not: "
                                                             "class balance (the commonest label alone scores its share)."),
        }
        return tuple(built[name]() for name in _metric_names(self.decl))

    @property
    def rejected_builders(self) -> dict[str, RejectedBuilder]:
        def wrong_label(r: Any, rng: random.Random) -> str:
            return rng.choice([x for x in self.decl.labels if x != self.answer(r)])

        return {"wrong_label": wrong_label}


def _label_words(text: str) -> str:
    return re.sub(r"[\s_\-*`\"']+", " ", text.lower()).strip()


@cache
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer  # imported on first use: it pulls in nltk

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of stemmed tokens), as the rouge-score package
    computes it for the summarisation literature."""
    return float(_rouge_scorer().score(reference, candidate)["rougeL"].fmeasure) if candidate.strip() else 0.0


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def fact_recall(facts: Sequence[str], answer: str | None) -> float:
    """Share of ``facts`` found verbatim in ``answer`` (case and whitespace runs ignored); 1.0 when a
    record lists no facts, as there is nothing to miss."""
    if not facts:
        return 1.0
    text = _squash(answer or "")
    return sum(_squash(f) in text for f in facts) / len(facts)


class DeclaredGeneration(Task):
    """A free-text task: answers are generated, then scored against a reference (and facts)."""

    choices = None

    def __init__(self, d: GenerationDecl):
        self.decl = d
        self.id = d.id
        self.description = d.description or d.id
        self.max_new_tokens = d.max_new_tokens
        fields: dict[str, Any] = {d.text_field: (Text, ...), d.reference_field: (Text, ...)}
        if d.facts_field:
            fields[d.facts_field] = (list[Text], ...)
        self.record_type = _record_model(f"{d.id}_record", fields)

    def baseline_features(self, record: Any) -> str:
        return getattr(record, self.decl.text_field)

    def prompt(self, record: Any) -> str:
        return _render(self.decl.prompt, record)

    def answer(self, record: Any) -> str:
        return getattr(record, self.decl.reference_field)

    def facts(self, record: Any) -> list[str]:
        return list(getattr(record, self.decl.facts_field)) if self.decl.facts_field else []

    def parse(self, text: str) -> Prediction:
        """The answer without chat-template tokens or a leading role line; None if nothing is left."""
        return strip_chat_artefacts(text) or None

    @property
    def metrics(self) -> tuple[Metric, ...]:
        def rl(r: Any, p: Prediction) -> float:
            return rouge_l(self.answer(r), p or "")

        def fr(r: Any, p: Prediction) -> float:
            return fact_recall(self.facts(r), p)

        per_item = {"rouge_l": rl, "fact_recall": fr}
        covers = {"rouge_l": "word overlap (longest common subsequence, stemmed) with the reference answer. "
                             "Not: whether what differs is true or false.",
                  "fact_recall": "share of the record's listed facts that occur verbatim in the answer. "
                                 "Not: paraphrases of a fact, or anything false the answer adds."}
        return tuple(Metric(name, "wilcoxon", _mean(per_item[name]), per_item=per_item[name], mean=True,
                            covers=covers[name])
                     for name in _metric_names(self.decl))

    @property
    def rejected_builders(self) -> dict[str, RejectedBuilder]:
        out: dict[str, RejectedBuilder] = {}
        if self.decl.facts_field:
            out["omit_fact"] = lambda r, rng: omit_fact(self.answer(r), self.facts(r), rng)
        out["truncate"] = lambda r, rng: truncate_half(self.answer(r))
        return out


def truncate_half(reference: str) -> str:
    """The reference cut to its first half of words: fluent but incomplete, a common failure."""
    words = reference.split()
    return " ".join(words[: len(words) // 2]) if len(words) > 1 else reference


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def omit_fact(reference: str, facts: Sequence[str], rng: random.Random) -> str:
    """The reference without one of its facts: the sentence holding it is dropped, or, in a single
    sentence, the phrase itself. Falls back to truncation when the reference states no fact verbatim."""
    present = [f for f in facts if _squash(f) and _squash(f) in _squash(reference)]
    if not present:
        return truncate_half(reference)
    fact = rng.choice(present)
    sentences = _SENTENCE.split(reference.strip())
    kept = [s for s in sentences if _squash(fact) not in _squash(s)]
    if kept and len(kept) < len(sentences):
        return " ".join(kept)
    out = re.sub(re.escape(fact), "", reference, flags=re.I)
    out = re.sub(r"\s+([,.;:])", r"\1", re.sub(r"\s{2,}", " ", out)).strip(" ,;")
    return out if out.strip(" .") else truncate_half(reference)


def _metric_names(d: ClassificationDecl | GenerationDecl) -> list[str]:
    if isinstance(d, ClassificationDecl):
        default = (["f1"] if d.positive_label else []) + ["f1_macro", "accuracy"]
    else:
        default = ["rouge_l"] + (["fact_recall"] if d.facts_field else [])
    return list(d.metrics) if d.metrics else default


# ---------------------------------------------------------------------------------------------------
# Loading, with errors that name the file, the line and the key.


def _key_lines(text: str) -> dict[str, int]:
    """Top-level key -> line number in the YAML text, for error messages."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def _where(path: Path, lines: dict[str, int], key: str) -> str:
    top = key.split(".")[0]
    return f"{path}:{lines[top]}: {key}" if top in lines else f"{path}: {key}"


def _pydantic_problem(err: dict[str, Any], allowed: Sequence[str]) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "missing key"
    if kind == "extra_forbidden":
        guess = difflib.get_close_matches(str(err["loc"][0]), allowed, n=1)
        hint = f"did you mean {guess[0]!r}? " if guess else ""
        return f"unknown key ({hint}allowed: {', '.join(allowed)})"
    if kind == "string_pattern_mismatch" and err["loc"][0] == "id":
        return f"{err.get('input')!r} is not a valid task id (letters, digits, '_', '.' and '-')"
    if kind == "string_pattern_mismatch":
        return f"{err.get('input')!r} is not a valid name (letters, digits and underscores, starting with a letter)"
    return str(err.get("msg", "invalid"))


def _check(path: Path, lines: dict[str, int], decl: ClassificationDecl | GenerationDecl) -> None:
    def fail(key: str, msg: str) -> None:
        raise TaskError(f"{_where(path, lines, key)}: {msg}")

    if isinstance(decl, ClassificationDecl):
        names = [*decl.text_fields, decl.label_field]
        prompt_fields = decl.text_fields
        if len(set(decl.labels)) != len(decl.labels):
            fail("labels", "labels must be distinct")
        if len({_label_words(x) for x in decl.labels}) != len(decl.labels):
            fail("labels", "two labels differ only in case, spaces or underscores; the parser could not tell them apart")
        if decl.positive_label is not None and decl.positive_label not in decl.labels:
            fail("positive_label", f"{decl.positive_label!r} is not one of labels ({', '.join(decl.labels)})")
        allowed_metrics = CLASSIFICATION_METRICS
    else:
        names = [decl.text_field, decl.reference_field] + ([decl.facts_field] if decl.facts_field else [])
        prompt_fields = [decl.text_field]
        allowed_metrics = GENERATION_METRICS
    if "id" in names:
        fail("text_fields" if isinstance(decl, ClassificationDecl) else "text_field", "'id' is the record id, not a field")
    if len(set(names)) != len(names):
        fail("text_fields" if isinstance(decl, ClassificationDecl) else "reference_field",
             f"field names must be distinct ({', '.join(names)})")
    for m in decl.metrics or ():
        if m not in allowed_metrics:
            fail("metrics", f"unknown metric {m!r} (choose from {', '.join(allowed_metrics)})")
    if decl.metrics is not None and (not decl.metrics or len(set(decl.metrics)) != len(decl.metrics)):
        fail("metrics", "list each metric once, at least one")
    if isinstance(decl, ClassificationDecl) and "f1" in (decl.metrics or ()) and not decl.positive_label:
        fail("metrics", "metric 'f1' needs positive_label")
    if isinstance(decl, GenerationDecl) and "fact_recall" in (decl.metrics or ()) and not decl.facts_field:
        fail("metrics", "metric 'fact_recall' needs facts_field")
    try:
        placeholders = [f for _, f, _, _ in string.Formatter().parse(decl.prompt) if f is not None]
    except ValueError as e:
        fail("prompt", f"not a valid template ({e}); write literal braces as {{{{ and }}}}")
    for name in placeholders:
        if name not in prompt_fields:
            fail("prompt", f"placeholder {{{name}}} is not a text field (use {', '.join('{' + f + '}' for f in prompt_fields)})")
    if not placeholders:
        fail("prompt", f"the prompt never includes the record's text (add {{{prompt_fields[0]}}})")


def load_task_file(path: Path) -> Task:
    """A Task from a YAML declaration; any problem is a TaskError naming the file, line and key."""
    path = Path(path)
    raw, text = load_yaml(path, "task", error=TaskError)
    lines = _key_lines(text)
    if not isinstance(raw, dict):
        raise TaskError(f"{path}: expected a mapping of keys (id, type, prompt, ...), got {type(raw).__name__}")
    kind = raw.get("type")
    if kind not in ("classification", "generation"):
        msg = "missing key" if kind is None else f"{kind!r} is not a task type"
        raise TaskError(f"{_where(path, lines, 'type')}: {msg}; use 'classification' or 'generation'")
    model: type[ClassificationDecl] | type[GenerationDecl] = (
        ClassificationDecl if kind == "classification" else GenerationDecl)
    for key in ("labels", "positive_label"):
        values = raw.get(key) if isinstance(raw.get(key), list) else [raw.get(key)]
        if any(isinstance(v, bool) for v in values):
            raise TaskError(f"{_where(path, lines, key)}: YAML reads unquoted yes/no/true/false as booleans; "
                            "quote labels: ['yes', 'no']")
        if isinstance(raw.get(key), list):
            raw[key] = [_label_text(v) for v in raw[key]]
        elif raw.get(key) is not None:
            raw[key] = _label_text(raw[key])
    try:
        decl = model.model_validate(raw)
    except ValidationError as e:
        errs = sorted(e.errors(), key=lambda x: x.get("type") != "extra_forbidden")  # a typo explains a missing key
        err = errs[0]
        key = ".".join(str(p) for p in err["loc"]) or "task"
        more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
        raise TaskError(f"{_where(path, lines, key)}: {_pydantic_problem(err, list(model.model_fields))}{more}") from None
    _check(path, lines, decl)
    return DeclaredClassification(decl) if isinstance(decl, ClassificationDecl) else DeclaredGeneration(decl)
