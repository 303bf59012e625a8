"""The one config loader, for training configs and study files alike.

A YAML file is read with ``FILE:LINE`` errors, ``key=value`` overrides change one key (dotted keys
reach into sections and list items: ``sft.epochs=2``, ``tasks.0.n=40``; the value is parsed as YAML),
and every validation error is one line ``FILE: key: message``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

from clinalign.errors import ClinalignError, ConfigError

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: str | Path, what: str = "config", error: type[ClinalignError] = ConfigError) -> tuple[Any, str]:
    """What a YAML file holds and its text, for every YAML file we read (configs, studies, task
    declarations): a missing or unreadable file and a syntax error are one ``error`` naming the file
    (and the line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read {what} file ({e})") from None
    try:
        return yaml.safe_load(text), text
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise error(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})".replace("\n", " ")) from None


def read_yaml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """The mapping a config or study file holds ({} for an empty file)."""
    raw, _ = load_yaml(path, what)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict[str, Any], items: list[str] | None) -> dict[str, Any]:
    """Set each ``dotted.key=value`` in ``raw`` (modified and returned)."""
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({e})".replace("\n", " ")) from None
        parts = key.split(".")
        node: Any = raw
        for depth, part in enumerate(parts):
            if isinstance(node, list) and not _is_index(node, part):
                raise ConfigError(f"override {item!r}: {part!r} is not an item of that list")
            if depth == len(parts) - 1:
                break
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
            if not isinstance(node, dict | list):
                raise ConfigError(f"override {item!r}: {part!r} is not a section or list")
        node[int(parts[-1]) if isinstance(node, list) else parts[-1]] = value
    return raw


def _is_index(node: Any, part: str) -> bool:
    return isinstance(node, list) and part.isdigit() and int(part) < len(node)


def validate(model: type[M], raw: dict[str, Any], where: str, *, prefix: str = "",
             unknown_key: str | None = "unknown config key") -> M:
    """``model`` from ``raw``, or the first problem as one ConfigError line (see `config_error`)."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise config_error(where, e, prefix=prefix, unknown_key=unknown_key, model=model) from None


#: what other tools (transformers' TrainingArguments, TRL, PEFT) call some of our keys: a key written
#: the way a user knows it from there is answered with ours ("did you mean 'lr'?")
OTHER_NAMES = {
    "learning_rate": "lr", "num_train_epochs": "epochs", "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size", "train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum", "lr_scheduler_type": "scheduler", "lr_scheduler": "scheduler",
    "r": "lora_rank", "lora_r": "lora_rank", "rank": "lora_rank", "target_modules": "lora_target_modules",
    "max_seq_length": "max_length", "max_seq_len": "max_length", "model_name_or_path": "model",
    "gradient_clip": "max_grad_norm", "bf16": "dtype", "fp16": "dtype", "loss_type": "loss",
}


def config_error(where: str, e: ValidationError, *, prefix: str = "",
                 unknown_key: str | None = "unknown config key",
                 model: type[BaseModel] | None = None) -> ConfigError:
    """``WHERE: KEY: message`` for the first problem pydantic found; ``prefix`` is the section the
    model was read from (``tasks.uti_classification.sft``). An error of the whole section (a rule
    between keys) is reported on the section. ``unknown_key`` words a key the model does not have
    (None: pydantic's own words); with the ``model`` that was validated, the nearest key it does have
    (or the one another tool's name stands for) is suggested: ``(did you mean 'epochs'?)``."""
    err = e.errors()[0]
    key = ".".join(p for p in (prefix, ".".join(str(x) for x in err["loc"])) if p)
    if err["type"] == "extra_forbidden":
        msg = unknown_key or err["msg"]
        guess = _nearest_key(model, err["loc"]) if model is not None else None
        msg += f" (did you mean {guess!r}?)" if guess else ""
    else:
        msg = err["msg"].removeprefix("Value error, ")
    return ConfigError(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")


def _nearest_key(model: type[BaseModel], loc: tuple[int | str, ...]) -> str | None:
    """The key of the (nested) model at ``loc`` that an unknown ``loc[-1]`` was most likely meant to be."""
    node: type[BaseModel] | None = model
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list of sections
            continue
        field = node.model_fields.get(str(part)) if node is not None else None
        node = _model_in(field.annotation) if field is not None else None
        if node is None:
            return None
    assert node is not None
    known = [f.alias or name for name, f in node.model_fields.items()]
    typed = str(loc[-1]).lower()
    names = known + [o for o, ours in OTHER_NAMES.items() if ours in known]
    hit = difflib.get_close_matches(typed, names, n=1, cutoff=0.75)
    return OTHER_NAMES.get(hit[0], hit[0]) if hit else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside a field's type (``EvalConfig``, ``list[TaskEntry]``, ``X | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for a in get_args(annotation) if (m := _model_in(a)) is not None), None)
