"""Deployable models: LoRA merged into the base weights as a standard Hugging Face directory
(safetensors, tokenizer, chat template) that any serving stack (vLLM, TGI, transformers) loads, or
as one GGUF file with an Ollama Modelfile for llama.cpp/Ollama (``gguf_model.py``); with a model card."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from clinalign.errors import ConfigError
from clinalign.models.loading import adapter_base, is_adapter


def find_final(run_dir: Path) -> Path:
    """Accept a training run folder (with final/) or the final folder itself."""
    for cand in (run_dir / "final", run_dir / "run" / "final", run_dir):
        if is_adapter(cand) or (cand / "config.json").is_file():
            return cand
    raise ConfigError(f"{run_dir}: no trained model found (expected final/ with adapter_config.json or config.json)")


FORMATS = ("hf", "gguf")


def export_model(run_dir: Path, out: Path, adapter_only: bool = False,
                 results: Path | None = None, audit: Path | None = None,
                 fmt: str = "hf", quant: str = "f16") -> Path:
    from clinalign.export.gguf_model import QUANTS, modelfile, write_gguf
    from clinalign.models.loading import load_model, load_tokenizer, tokenizer_dir

    if fmt not in FORMATS:
        raise ConfigError(f"unknown --format {fmt!r}: choose from {', '.join(FORMATS)}")
    if quant not in QUANTS:
        raise ConfigError(f"unknown --quant {quant!r}: choose from {', '.join(QUANTS)}")
    if fmt == "gguf" and adapter_only:
        raise ConfigError("a GGUF file holds merged weights; drop --adapter-only")
    final = find_final(run_dir)
    adapter = is_adapter(final)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tokenizer = load_tokenizer(tokenizer_dir(final))
        if adapter_only:
            if not adapter:
                raise ConfigError(f"{final} is a full model, not a LoRA adapter; drop --adapter-only")
            for f in final.iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        else:
            model = load_model(final, dtype="float32", device="cpu")  # merged in full precision, as before
            if adapter:
                model = model.merge_and_unload()
            hf = tmp / ".hf" if fmt == "gguf" else tmp  # GGUF is converted from the merged HF directory
            model.save_pretrained(hf, safe_serialization=True)
            tokenizer.save_pretrained(hf)
            if fmt == "gguf":
                name = f"model-{quant}.gguf"
                write_gguf(hf, tmp / name, quant, name=out.name)
                (tmp / "Modelfile").write_text(modelfile(name, tokenizer), encoding="utf-8")
                shutil.rmtree(hf)
        if adapter_only:
            tokenizer.save_pretrained(tmp)
        card = model_card(final, run_dir, adapter_only, results, audit)
        if fmt == "gguf":
            card += (f"\n## Run it\n\n`{name}` holds the merged weights ({quant}), tokenizer and chat template "
                     f"for llama.cpp; with Ollama: `ollama create {out.name} -f Modelfile`.\n")
        (tmp / "README.md").write_text(card, encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def model_card(final: Path, run_dir: Path, adapter_only: bool, results: Path | None, audit: Path | None) -> str:
    cfg: dict[str, Any] = {}
    for cand in (run_dir / "config.yaml", run_dir / "run" / "config.yaml", final.parent / "config.yaml"):
        if cand.is_file():
            cfg = yaml.safe_load(cand.read_text()) or {}
            break
    base = cfg.get("model") or adapter_base(final) or "unknown"
    method = str(cfg.get("stage", cfg.get("method", "fine-tuned"))).upper()
    lines = [
        "---", "library_name: transformers", "tags: [clinalign, clinical, " + method.lower() + "]", "---", "",
        f"# {final.parent.name if final.name == 'final' else final.name} (clinalign {method})", "",
        f"- **Base model:** {base}",
        f"- **Method:** {method}" + (" with LoRA" if cfg.get("lora", True) else " (full fine-tune)")
        + (", shipped as an adapter" if adapter_only else ", LoRA merged into the base weights"),
    ]
    for key in ("task", "data", "epochs", "max_steps", "lr", "beta", "loss", "lora_rank", "seed"):
        if cfg.get(key) is not None:
            lines.append(f"- **{key}:** {cfg[key]}")
    if audit and audit.is_file():
        a = json.loads(audit.read_text())
        lines += ["", "## Training data (from `clinalign data audit`)", "",
                  f"- records: {a.get('records')}; labels: {a.get('labels', 'free text')}",
                  f"- duplicate groups: {len(a.get('duplicates', {}).get('exact', []))} exact, "
                  f"{len(a.get('duplicates', {}).get('near', []))} near; leakage: {len(a.get('leakage', []))}",
                  f"- likely-PHI pattern hits: {sum(e['matches'] for e in a.get('phi', {}).values())}"]
    if results and results.is_file():
        from clinalign.report.tables import results_table_markdown

        lines += ["", "## Study results", "", results_table_markdown(json.loads(results.read_text()))]
    lines += [
        "", "## Intended use", "",
        "Research and decision support on the task it was trained for, at the institution whose data it was",
        "trained on, with a clinician reviewing every output. Not a medical device.", "",
        "## Limitations", "",
        "- Trained on a small, possibly synthetic or single-site dataset; performance elsewhere is unknown.",
        "- DPO learns only the preferences its rejected answers expressed; it can be confidently wrong.",
        "- Generated text may omit facts or state false ones; check the study's fact-recall and false-fact metrics.",
        "- Outputs were evaluated on a held-out split of the same source, not on a prospective cohort.",
    ]
    return "\n".join(lines) + "\n"
