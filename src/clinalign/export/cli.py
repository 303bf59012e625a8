"""`clinalign export` sub-commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)
PAIR_FORMATS_HELP = ("jsonl | openai-dpo | azure-openai-dpo | vertex-gemini-preference | openai-sft | "
                     "azure-openai-sft | vertex-gemini-sft | hf-dataset (see docs/export.md)")


@app.command()
def model(
    run_dir: Annotated[Path, typer.Argument(help="A training output folder (clinalign train ... --out).")],
    out: Annotated[Path, typer.Option("--out", help="Output model directory.")],
    adapter_only: Annotated[bool, typer.Option("--adapter-only", help="Ship the LoRA adapter, unmerged.")] = False,
    results: Annotated[Path | None, typer.Option(help="A study's results.json for the model card.")] = None,
    audit: Annotated[Path | None, typer.Option(help="An audit JSON (clinalign data audit --out) for the card.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="hf (safetensors; vLLM, transformers) | gguf (llama.cpp, Ollama)")] = "hf",
    quant: Annotated[str, typer.Option(help="GGUF weights: f16 | q8_0")] = "f16",
    task: Annotated[str | None, typer.Option(help="The task the model was trained on, for the card (default: "
                                                  "the run's task, or the study stage's folder).")] = None,
) -> None:
    """LoRA merged into the base weights, with a model card (base model, task, SFT -> DPO chain, the
    task's study results): a Hugging Face directory, or a GGUF file plus an Ollama Modelfile
    (`ollama create NAME -f OUT/Modelfile`). Folders and files are readable by other accounts (0755 /
    0644 under the usual umask 022) so a serving account can load them."""
    from clinalign.export.model import export_model

    path = export_model(run_dir, out, adapter_only=adapter_only, results=results, audit=audit, fmt=fmt, quant=quant,
                        task=task)
    console.print(f"exported to {path} (model card: {path / 'README.md'})")


@app.command()
def pairs(
    path: Annotated[Path, typer.Argument(help="prompt/chosen/rejected JSONL/CSV/Parquet (prompt/completion for *-sft).")],
    out: Annotated[Path, typer.Option("--out", help="Output file (a folder for hf-dataset).")],
    fmt: Annotated[str, typer.Option("--format", help=PAIR_FORMATS_HELP)] = "jsonl",
) -> None:
    """Preference pairs (or SFT examples) in another tool's or vendor's format, checked against the
    vendor's record rules first: a bad row is reported as FILE:LINE: field and nothing is written."""
    from clinalign.export.pairs import export

    n = export(path, out, fmt)
    console.print(f"wrote {n} rows as {fmt} to {out}")


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="A vendor upload file (JSONL).")],
    fmt: Annotated[str, typer.Option("--format", help=PAIR_FORMATS_HELP)],
) -> None:
    """Check a vendor upload file (e.g. one edited by hand) against that vendor's record rules."""
    from clinalign.export.pairs import validate_file

    console.print(f"{path}: {validate_file(path, fmt)} rows valid as {fmt}")
