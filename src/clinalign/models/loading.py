"""Load a causal LM and its tokenizer from a local directory (or a hub id when the user allows the
network). Every model, the embedded default included, goes through here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from clinalign.errors import ConfigError

#: what makes a directory a peft adapter rather than a full model
ADAPTER_CONFIG = "adapter_config.json"


def resolve_model_path(name: str | Path, allow_network: bool = False) -> str:
    """A local directory, or a hub id only when the network is allowed; otherwise a clear error."""
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file() and not is_adapter(p):
            raise ConfigError(f"model directory {p} has no config.json (not a Hugging Face model directory)")
        return str(p)
    if str(name) == "default":
        from clinalign.models.default import default_model_dir

        return str(default_model_dir())
    if allow_network and os.environ.get("HF_HUB_OFFLINE", "1") != "1":
        return str(name)
    raise ConfigError(
        f"model {str(name)!r} not found: give a local model directory "
        "(network downloads are off; set HF_HUB_OFFLINE=0 and allow_network to use a hub id)"
    )


def is_adapter(path: str | Path | None) -> bool:
    """Whether ``path`` is a peft adapter directory (weights on top of a base model named inside it)."""
    return bool(path) and (Path(path) / ADAPTER_CONFIG).is_file()  # type: ignore[arg-type]


def adapter_config(path: str | Path) -> dict[str, Any] | None:
    """A peft adapter directory's settings (base model, rank, adapted layers); None when ``path`` is not one."""
    return json.loads((Path(path) / ADAPTER_CONFIG).read_text()) if is_adapter(path) else None


def adapter_base(path: str | Path) -> Path | None:
    """The base model directory a peft adapter directory was trained on; None when ``path`` is not one."""
    cfg = adapter_config(path)
    return Path(cfg["base_model_name_or_path"]) if cfg is not None else None


def tokenizer_dir(path: str | Path) -> Path:
    """Where a model directory's tokenizer is: its own, or for an adapter saved without one its base model's."""
    p = Path(path)
    if (p / "tokenizer_config.json").is_file():
        return p
    return adapter_base(p) or p


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str | Path, dtype: str = "auto", device: str = "auto", load_in_4bit: bool = False) -> Any:
    """Load a full model directory, or a peft adapter directory on top of its base model, placed by the
    study's device/precision policy (``models/device.py``). ``load_in_4bit``: QLoRA's NF4 base weights
    (bitsandbytes, CUDA only), computing in ``dtype``."""
    from transformers import AutoModelForCausalLM

    from clinalign.models.device import resolve

    place = resolve(device, dtype, load_in_4bit)
    kw: dict[str, Any] = {"dtype": place.torch_dtype}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_compute_dtype=place.torch_dtype)
        kw["device_map"] = {"": place.device}
    path = Path(path)
    if is_adapter(path):
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(path), **kw)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kw)
    return model if load_in_4bit else model.to(place.device)
