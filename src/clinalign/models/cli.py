"""`clinalign model` sub-commands."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def default() -> None:
    """Build (once) and print the path of the embedded default model, SmolLM2-135M-Instruct."""
    from clinalign.models.default import default_model_dir

    print(default_model_dir())


@app.command()
def info(path: str = typer.Argument(..., help="A model directory, or 'default'.")) -> None:
    """Parameters, vocabulary and chat template of a model directory."""
    from clinalign.models.loading import load_model, load_tokenizer, resolve_model_path

    p = resolve_model_path(path)
    tok = load_tokenizer(p)
    model = load_model(p)
    n = sum(x.numel() for x in model.parameters())
    print(f"{p}\n  parameters: {n / 1e6:.1f}M\n  vocabulary: {len(tok)}\n  chat template: "
          f"{'yes' if getattr(tok, 'chat_template', None) else 'no'}")
