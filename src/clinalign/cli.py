"""The one `clinalign` command. Each area owns its sub-commands in its own `cli.py`; this module
only mounts them and turns user errors into one clear line and exit code 2."""

from __future__ import annotations

import os
import sys

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from clinalign.data.cli import app as data_app  # noqa: E402
from clinalign.errors import ClinalignError  # noqa: E402
from clinalign.models.cli import app as model_app  # noqa: E402
from clinalign.rate.cli import app as rate_app  # noqa: E402
from clinalign.study.cli import app as study_app  # noqa: E402
from clinalign.train.cli import app as train_app  # noqa: E402

app = typer.Typer(
    name="clinalign",
    help="Fine-tune open LLMs on clinical tasks with SFT and DPO, and compare them with real statistics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data", help="Generate, validate, split and convert task data.")
app.add_typer(train_app, name="train", help="Train with SFT or DPO (LoRA or full; 1 CPU to many GPUs).")
app.add_typer(model_app, name="model", help="Models: the embedded default, export.")
app.add_typer(study_app, name="study", help="Run a whole base vs SFT vs DPO study from one YAML file.")
app.add_typer(rate_app, name="rate", help="Clinician web app: Likert ratings and pairwise preferences.")


def main() -> None:
    try:
        app(standalone_mode=False)
    except ClinalignError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(2)
        raise
