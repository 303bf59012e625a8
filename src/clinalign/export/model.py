"""Deployable models: LoRA merged into the base weights as a standard Hugging Face directory
(safetensors, tokenizer, chat template) that any serving stack (vLLM, TGI, transformers) loads, or
as one GGUF file with an Ollama Modelfile for llama.cpp/Ollama (``gguf_model.py``); with a model card."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from clinalign.errors import ClinalignError, ConfigError
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
                 fmt: str = "hf", quant: str = "f16", task: str | None = None) -> Path:
    """Write the model to ``out`` (replaced whole, never half-written). The folder is meant to be
    served, often by another account: its permissions are what any file the user creates gets
    (0755 folders and 0644 files under the usual umask 022), not the 0700 of a temporary folder or
    the 0600 safetensors writes; a umask of 077, set on purpose on a host holding PHI, is kept."""
    from clinalign.export.gguf_model import QUANTS, modelfile, write_gguf
    from clinalign.models.loading import load_model, load_tokenizer, tokenizer_dir

    if fmt not in FORMATS:
        raise ConfigError(f"unknown --format {fmt!r}: choose from {', '.join(FORMATS)}")
    if quant not in QUANTS:
        raise ConfigError(f"unknown --quant {quant!r}: choose from {', '.join(QUANTS)}")
    if fmt == "gguf" and adapter_only:
        raise ConfigError("a GGUF file holds merged weights; drop --adapter-only")
    final = find_final(run_dir)
    card = model_card(final, adapter_only, results, audit, task)  # its errors come before any work
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
        if fmt == "gguf":
            card += (f"\n## Run it\n\n`{name}` holds the merged weights ({quant}), tokenizer and chat template "
                     f"for llama.cpp; with Ollama: `ollama create {out.name} -f Modelfile`.\n")
        (tmp / "README.md").write_text(card, encoding="utf-8")
        _readable(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _readable(root: Path) -> None:
    """Folders 0777 and files 0666 less the process umask, as ``mkdir`` and ``cp`` would make them."""
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
    for p in root.rglob("*"):
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def run_config(final: Path) -> dict[str, Any] | None:
    """The config a training run saved beside its ``final/`` (None when there is none)."""
    for cand in (final.parent / "config.yaml", final / "config.yaml"):
        if cand.is_file():
            cfg = yaml.safe_load(cand.read_text(encoding="utf-8"))
            return cfg if isinstance(cfg, dict) else {}
    return None


def training_chain(final: Path) -> list[dict[str, Any]]:
    """The configs of the runs that made this model, from the one trained on the base model to this
    one, following each run's ``init_from`` (a study's DPO continues its SFT: two entries). A run whose
    config is missing ends the chain with ``{"stage": "earlier run", "init_dir": FOLDER}``."""
    chain: list[dict[str, Any]] = []
    cfg = run_config(final) or {}
    while len(chain) < 32:  # on-policy rounds continue each other; a cycle would be a hand-made mess
        chain.append(cfg)
        init = cfg.get("init_from")
        if not init:
            break
        earlier = run_config(Path(init))
        if earlier is None:
            chain.append({"stage": "earlier run", "init_dir": Path(init).name})
            break
        cfg = earlier
    return chain[::-1]


def model_task(final: Path, chain: list[dict[str, Any]], task: str | None) -> str | None:
    """The task the model was trained on: ``task`` when given, else a run's ``task:`` key, else the
    study's layout (``OUT/stages/<task>/...``, where the study trains every stage of a task; a folder
    the study marked as its stage, not any path that happens to hold a "stages" folder)."""
    if task:
        return task
    named = next((c["task"] for c in reversed(chain) if c.get("task")), None)
    if named:
        if str(named).endswith((".yaml", ".yml")):
            from clinalign.tasks import get_task

            try:
                return get_task(named).id
            except ClinalignError:
                return Path(named).stem
        return str(named)
    stage_dir = final.resolve().parent.parent  # OUT/stages/<task>[/foldN]/<stage>/run/final
    if not any((stage_dir / m).is_file() for m in (".fingerprint", ".done")):  # study/stages.py's marks
        return None
    parts = stage_dir.parts
    return parts[len(parts) - parts[::-1].index("stages")] if "stages" in parts[:-1] else None


#: what the card lists of each stage's settings (the rest is in the run's config.yaml)
CARD_KEYS = {"sft": ("epochs", "max_steps", "lr", "lora_rank", "lora_layers", "seed"),
             "dpo": ("epochs", "max_steps", "lr", "beta", "loss", "lora_rank", "lora_layers", "seed")}


def model_card(final: Path, adapter_only: bool, results: Path | None, audit: Path | None,
               task: str | None = None) -> str:
    """The README.md of an exported model: what it is (base model, task, training chain), its data
    audit and study results when given, intended use and limitations. Raises ConfigError when
    ``results`` cannot be narrowed to the model's task (a card must not show another task's numbers)."""
    from clinalign.models.default import describe_model

    chain = training_chain(final)
    first, last = chain[0], chain[-1]
    base_model = first.get("model") or (str(adapter_base(final)) if is_adapter(final) else "unknown")
    base = describe_model(base_model)
    tid = model_task(final, chain, task)
    stages = [str(c.get("stage", "fine-tuned")).upper() if c.get("stage") != "earlier run" else "an earlier run"
              for c in chain]
    method = stages[-1]
    study_results = _task_results(results, tid) if results else None
    title = f"{tid}: " if tid else ""
    about = _task_description(tid) if tid else None
    task_line = (f"{tid} ({about})" if about else tid) if tid else "not recorded (pass --task)"
    lines = [
        "---", "library_name: transformers", "tags: [clinalign, clinical, " + method.lower() + "]", "---", "",
        f"# {title}{base.split(' (')[0]} fine-tuned with {' -> '.join(stages)} (clinalign)", "",
        f"- **Base model:** {base}",
        f"- **Task:** {task_line}",
        f"- **Training:** base model -> {' -> '.join(stages)} (this model)",
        f"- **Method:** {method}" + (" with LoRA" if last.get("lora", True) else " (full fine-tune)")
        + (", shipped as an adapter" if adapter_only else ", LoRA merged into the base weights"),
    ]
    for c, name in zip(chain, stages, strict=True):
        keys = CARD_KEYS.get(str(c.get("stage")), ())
        settings = ", ".join(f"{k}={c[k]}" for k in keys if c.get(k) is not None)
        if settings:
            lines.append(f"- **{name} settings:** {settings}")
    if last.get("data"):
        data = Path(str(last["data"]))
        lines.append(f"- **{method} data:** {data.name if data.is_absolute() else data}")
    if audit and audit.is_file():
        a = json.loads(audit.read_text())
        lines += ["", "## Training data (from `clinalign data audit`)", "",
                  f"- records: {a.get('records')}; labels: {a.get('labels', 'free text')}",
                  f"- duplicate groups: {len(a.get('duplicates', {}).get('exact', []))} exact, "
                  f"{len(a.get('duplicates', {}).get('near', []))} near; leakage: {len(a.get('leakage', []))}",
                  f"- likely-PHI pattern hits: {sum(e['matches'] for e in a.get('phi', {}).values())}"]
    if study_results is not None:
        from clinalign.report.tables import results_table_markdown

        lines += ["", f"## Study results: {tid}", "",
                  "The study's rows for the task this model was trained on (its report has the rest).", "",
                  results_table_markdown(study_results)]
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


def _task_description(tid: str) -> str | None:
    from clinalign.tasks import BUILTIN_TASKS, get_task

    return get_task(tid).description if tid in BUILTIN_TASKS else None


def _task_results(results: Path, tid: str | None) -> dict[str, Any] | None:
    """``results`` with only the model's task; None when the file is missing (as before: no section)."""
    if not results.is_file():
        return None
    data = json.loads(results.read_text(encoding="utf-8"))
    tasks = data.get("tasks", {})
    if tid is None:
        raise ConfigError(f"{results}: cannot tell which task this model was trained on; pass --task "
                          f"(the results hold {', '.join(tasks) or 'no task'})")
    if tid not in tasks:
        raise ConfigError(f"{results}: no results for task {tid!r} (the results hold {', '.join(tasks) or 'no task'})")
    return {**data, "tasks": {tid: tasks[tid]}}
