"""The one config loader, for training configs and study files alike.

A YAML file is read with ``FILE:LINE`` errors, ``key=value`` overrides change one key (dotted keys
reach into sections and list items: ``sft.epochs=2``, ``tasks.0.n=40``; the value is parsed as YAML),
and every validation error is one line ``FILE: key: message``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

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
        raise config_error(where, e, prefix=prefix, unknown_key=unknown_key) from None


def config_error(where: str, e: ValidationError, *, prefix: str = "",
                 unknown_key: str | None = "unknown config key") -> ConfigError:
    """``WHERE: KEY: message`` for the first problem pydantic found; ``prefix`` is the section the
    model was read from (``tasks.uti_classification.sft``). An error of the whole section (a rule
    between keys) is reported on the section. ``unknown_key`` words a key the model does not have
    (None: pydantic's own words)."""
    err = e.errors()[0]
    key = ".".join(p for p in (prefix, ".".join(str(x) for x in err["loc"])) if p)
    if err["type"] == "extra_forbidden" and unknown_key:
        msg = unknown_key
    else:
        msg = err["msg"].removeprefix("Value error, ")
    return ConfigError(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")
