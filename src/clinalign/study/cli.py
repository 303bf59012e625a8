"""`clinalign study` sub-commands."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from clinalign.study.config import load_study

app = typer.Typer(no_args_is_help=True)


@app.command()
def run(
    study: Annotated[Path, typer.Argument(help="Study YAML (see configs/demo.yaml).")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key=value overrides, e.g. sft.epochs=2 eval.n_boot=200")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default runs/<study name>).")] = None,
) -> None:
    """Run a whole study: data, SFT, DPO, evaluation of base/SFT/DPO, statistics, report.

    Finished stages are cached by a fingerprint of their inputs and settings; a killed run resumes.
    """
    from clinalign.data.cli import stdout_console
    from clinalign.report.summary import summary
    from clinalign.study.parallel import is_main
    from clinalign.study.runner import StudyFailed, run_study

    cfg = load_study(study, overrides)
    out = out or Path("runs") / cfg.name
    console = stdout_console()
    t0 = time.perf_counter()
    failed: dict[str, str] = {}
    try:  # each task's data line is logged as its split is ready, before it trains
        results = run_study(cfg, out, log=console.print)
    except StudyFailed as e:  # the finished tasks were reported; say so, then exit non-zero
        results, failed = e.results, e.failed
    if not is_main():  # under torchrun rank 0 alone reports and sets the exit code; torchrun would stop
        return       # rank 0 mid-report if another process left non-zero first
    minutes = (time.perf_counter() - t0) / 60
    console.print("\n[bold]Summary[/bold]")
    for line in summary(results).lines():  # the lines report.md and report.html open with
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"\nreport: {out / 'report.html'}  (also report.md, results.json) in {minutes:.1f} min")
    if failed:
        typer.echo(f"error: {len(failed)} of {len(cfg.tasks)} task(s) failed: {', '.join(failed)} "
                   "(the others are reported)", err=True)
        raise typer.Exit(1)


@app.command()
def tune(
    study: Annotated[Path, typer.Argument(help="Study YAML with a tune: block.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. tune.trials=16")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default runs/<study name>).")] = None,
) -> None:
    """Run only the settings searches of a study (its tune: block), on the validation split.

    Several workers that name the same tune.storage (an RDB URL, or a journal file on a shared disk)
    run disjoint trials of one search, e.g. a Slurm array of `clinalign study tune`, each with its own
    --out; then `clinalign study run` selects from the finished search and scores the test split once.
    """
    from clinalign.data.cli import stdout_console
    from clinalign.report.selection import selection_lines
    from clinalign.study.parallel import is_main
    from clinalign.study.runner import StudyFailed, run_study

    cfg = load_study(study, overrides)
    if not any(cfg.tune_settings(t) for t in cfg.tasks):
        typer.echo(f"error: {study}: no task has a tune: block; nothing to search", err=True)
        raise typer.Exit(2)
    out = out or Path("runs") / cfg.name
    console = stdout_console()
    failed: dict[str, str] = {}
    try:
        results = run_study(cfg, out, log=console.print, tune_only=True)
    except StudyFailed as e:
        results, failed = e.results, e.failed
    if not is_main():
        return
    for tid, r in results["tasks"].items():
        for line in selection_lines(r):
            console.print(f"[bold]{tid}[/bold] {line}", soft_wrap=True)
    if failed:
        typer.echo(f"error: {len(failed)} of {len(cfg.tasks)} task(s) failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)

