"""Load a causal LM and its tokenizer from a local directory (or a hub id when the user allows the
network). Every model, the embedded default included, goes through here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from clinalign.errors import ConfigError


def resolve_model_path(name: str | Path, allow_network: bool = False) -> str:
    """A local directory, or a hub id only when the network is allowed; otherwise a clear error."""
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
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


def adapter_base(path: str | Path) -> Path | None:
    """The base model directory a peft adapter directory was trained on; None when ``path`` is not one."""
    cfg = Path(path) / "adapter_config.json"
    if not cfg.is_file():
        return None
    import json

    return Path(json.loads(cfg.read_text())["base_model_name_or_path"])


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
    if (path / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(path), **kw)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kw)
    return model if load_in_4bit else model.to(place.device)
