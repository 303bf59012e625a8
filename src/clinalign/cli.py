"""The one `clinalign` command. Each area owns its sub-commands in its own `cli.py`; this module
only mounts them and turns user errors into one clear line and exit code 2."""

from __future__ import annotations

import errno
import os
import sys

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from clinalign.data.cli import app as data_app  # noqa: E402
from clinalign.errors import ClinalignError  # noqa: E402
from clinalign.export.cli import app as export_app  # noqa: E402
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


def _version(value: bool) -> None:
    if value:
        import clinalign

        print(clinalign.version_line())
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print clinalign's version (and git commit, from a checkout) and exit."),
) -> None:
    """Fine-tune open LLMs on clinical tasks with SFT and DPO, and compare them with real statistics."""


app.add_typer(data_app, name="data", help="Generate, validate, split and convert task data.")
app.add_typer(train_app, name="train", help="Train with SFT or DPO (LoRA or full; 1 CPU to many GPUs).")
app.add_typer(model_app, name="model", help="Models: the embedded default, export.")
app.add_typer(study_app, name="study", help="Run a whole base vs SFT vs DPO study from one YAML file.")
app.add_typer(export_app, name="export", help="Export merged models (with a model card) and pairs for other tools.")
app.add_typer(rate_app, name="rate", help="Clinician web app: Likert ratings and pairwise preferences.")


_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; user errors become one ``error:`` line and code 2."""
    import warnings

    import click

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|torch)\.")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress display says what is happening
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    try:
        rc = app(args=argv, standalone_mode=False)  # click returns typer.Exit's code here, not raises
    except ClinalignError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a full or failing disk anywhere (copies, logs): one line naming the file
        if e.errno not in _DISK_ERRORS:
            raise
        print(f"error: {e.filename or 'a file'}: {e.strerror} (free space or fix the disk, then run the "
              f"command again)", file=sys.stderr)
        return 2
    # newer typer (0.29 here) raises its own copy of click's exceptions (typer.Exit, typer.Abort, and usage errors
    # under typer.TyperException); older typer raises click's. Both are caught, so a mistyped command or
    # option is one usage line and exit 2, never a traceback.
    except (click.exceptions.Exit, typer.Exit) as e:
        return e.exit_code
    except (click.exceptions.Abort, typer.Abort):
        print("aborted", file=sys.stderr)
        return 130
    except (click.exceptions.ClickException, typer.TyperException) as e:
        if hasattr(e, "show"):
            e.show()
        else:
            print(f"error: {e}", file=sys.stderr)
        return 2
    return rc if isinstance(rc, int) else 0


def main() -> None:
    code = run()
    distributed = sys.modules.get("clinalign.train.distributed")  # loaded (with torch) only by commands that train
    if distributed is not None:
        distributed.exit_worker(code)  # a torchrun worker ends here
    sys.exit(code)


if __name__ == "__main__":
    main()
