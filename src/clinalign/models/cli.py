"""`clinalign model` sub-commands."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def default() -> None:
    """Build (once, about a minute) and print the path of the embedded default model,
    SmolLM2-135M-Instruct. The cache is $CLINALIGN_CACHE/models (default ~/.cache/clinalign/models)."""
    from clinalign.models.default import default_model_dir

    print(default_model_dir())


@app.command()
def info(path: str = typer.Argument(..., help="A model or adapter directory, or 'default'.")) -> None:
    """Parameters, vocabulary, chat template and end-of-turn token of a model directory."""
    from clinalign.models.loading import load_model, load_tokenizer, resolve_model_path, tokenizer_dir

    p = resolve_model_path(path)
    model = load_model(p, device="cpu")
    tok = load_tokenizer(tokenizer_dir(p))
    total = sum(x.numel() for x in model.parameters())
    adapter = sum(x.numel() for n, x in model.named_parameters() if "lora_" in n)
    config = getattr(model, "config", None)
    print(p)
    print(f"  architecture:  {', '.join(getattr(config, 'architectures', None) or [type(model).__name__])}")
    print(f"  parameters:    {total / 1e6:.1f}M" + (f" (LoRA adapter {adapter / 1e6:.2f}M)" if adapter else ""))
    print(f"  vocabulary:    {len(tok)}")
    print(f"  layers:        {getattr(config, 'num_hidden_layers', '?')}")
    print(f"  dtype:         {next(model.parameters()).dtype}".replace("torch.", ""))
    print(f"  chat template: {'yes' if getattr(tok, 'chat_template', None) else 'no (plain text prompts)'}")
    print(f"  end of turn:   {tok.eos_token}")
