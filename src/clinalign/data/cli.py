"""`clinalign data` sub-commands: generate, validate, split, sft, pairs, audit.

Every command takes a task id or a task declaration file (``TASK`` may be ``mytask.yaml``, or give
``--task-file mytask.yaml`` and only the data file). Outputs are written atomically; on bad input
nothing is written and the exit code is 2.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from clinalign import synthetic
from clinalign.data.io import MAX_RECORD_BYTES, read_records, record_limit, write_jsonl
from clinalign.data.pairs import preference_pairs, sft_examples
from clinalign.data.splits import split_records
from clinalign.errors import ClinalignError, DataError
from clinalign.tasks import Task, get_task

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)

TaskFileOpt = Annotated[
    Path | None, typer.Option("--task-file", help="A task declared in YAML (instead of a TASK id).")
]
Args = Annotated[list[str], typer.Argument(help="TASK FILE, or just FILE with --task-file.", show_default=False)]
MaxRecordOpt = Annotated[int, typer.Option(
    "--max-record-bytes", min=1, help="Refuse a record (JSONL line, CSV record, Parquet row) over this many bytes "
                                      "before reading its text, so memory stays bounded (data/io.py says why 1 MiB).")]


def _task_and_file(args: list[str], task_file: Path | None) -> tuple[Task, Path]:
    if task_file is not None:
        if len(args) != 1:
            raise ClinalignError("with --task-file give exactly one data FILE")
        return get_task(str(task_file)), Path(args[0])
    if len(args) != 2:
        raise ClinalignError("give TASK and FILE (or --task-file TASK.yaml FILE)")
    return get_task(args[0]), Path(args[1])


def load(task: Task, path: Path) -> list[Any]:
    return read_records(path, task.record_type)


@app.command()
def generate(
    task: Annotated[str, typer.Argument(help="A built-in task id (the tasks with a synthetic generator).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of records.")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same records.")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Output JSONL file.")] = Path("data.jsonl"),
) -> None:
    """Generate N synthetic records for a built-in task (deterministic for a seed).

    A task without a bundled generator (a task file, a hospital's own task) says so and exits 2:
    give it records from a file instead."""
    t = get_task(task)
    n_written = write_jsonl(out, synthetic.generate(t, n, seed))
    console.print(f"wrote {n_written} {t.id} records to {out}")


@app.command()
def validate(ctx: typer.Context, args: Args, task_file: TaskFileOpt = None,
             max_record_bytes: MaxRecordOpt = MAX_RECORD_BYTES) -> None:
    """Check every record of a JSONL/CSV/Parquet file against the task's schema.

    Each problem is printed as FILE:LINE: field: what is wrong; exit code 2 if any.
    """
    ctx.with_resource(record_limit(max_record_bytes))  # every file this command reads
    task, path = _task_and_file(args, task_file)
    try:
        records = load(task, path)
    except DataError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        print(f"error: {len(e.problems)} problem(s) in {path}", file=sys.stderr)
        raise typer.Exit(2) from None
    print_summary([(task, records)])


def summary_row(task: Task, records: list[Any]) -> dict[str, Any]:
    labels = Counter(task.stratum(r) for r in records) if task.is_closed_set else Counter()
    prompt_chars = sorted(len(task.prompt(r)) for r in records)
    return {
        "task": task.id,
        "records": len(records),
        "labels": len(labels) if labels else "-",
        "label distribution": ", ".join(f"{k} {v / len(records):.0%}" for k, v in labels.most_common(4))
        + (" ..." if len(labels) > 4 else "")
        if labels
        else "(free text)",
        "median prompt chars": prompt_chars[len(prompt_chars) // 2],
    }


def stdout_console() -> Console:
    """Rich output on stdout; piped to a log it keeps 160 columns instead of wrapping tables at 80."""
    return Console(width=None if sys.stdout.isatty() else 160)


def print_summary(rows: list[tuple[Task, list[Any]]], notes: Mapping[str, str] | None = None) -> None:
    """The data table; ``notes[task id]`` is printed under it (e.g. why a study used fewer records than n).
    No rows (a study whose every task failed before its split): nothing to show, nothing printed."""
    if not rows:
        return
    table = Table(title="clinalign data summary")
    data = [summary_row(t, r) for t, r in rows]
    for col in data[0]:
        table.add_column(col)
    for row in data:
        table.add_row(*(str(v) for v in row.values()))
    console = stdout_console()
    console.print(table)
    for tid, note in (notes or {}).items():
        console.print(f"{tid}: {note}", markup=False, highlight=False)


@app.command()
def split(
    ctx: typer.Context,
    args: Args,
    out: Annotated[Path, typer.Option("--out", help="Output folder for train/val/test.jsonl.")],
    val: Annotated[float, typer.Option(help="Validation fraction.")] = 0.1,
    test: Annotated[float, typer.Option(help="Test fraction.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    task_file: TaskFileOpt = None,
    max_record_bytes: MaxRecordOpt = MAX_RECORD_BYTES,
) -> None:
    """Seeded train/val/test split, stratified by label where the task has one."""
    ctx.with_resource(record_limit(max_record_bytes))  # every file this command reads
    task, path = _task_and_file(args, task_file)
    parts = split_records(task, load(task, path), val=val, test=test, seed=seed)
    for name, recs in parts.items():
        write_jsonl(out / f"{name}.jsonl", recs)
    console.print(", ".join(f"{k}: {len(v)}" for k, v in parts.items()) + f" -> {out}")


@app.command()
def sft(
    ctx: typer.Context,
    args: Args,
    out: Annotated[Path, typer.Option("--out", help="Output JSONL of prompt/completion.")],
    task_file: TaskFileOpt = None,
    max_record_bytes: MaxRecordOpt = MAX_RECORD_BYTES,
) -> None:
    """SFT examples as prompt/completion JSONL."""
    ctx.with_resource(record_limit(max_record_bytes))  # every file this command reads
    task, path = _task_and_file(args, task_file)
    n = write_jsonl(out, sft_examples(task, load(task, path)))
    console.print(f"wrote {n} SFT examples to {out}")


@app.command()
def pairs(
    ctx: typer.Context,
    args: Args,
    out: Annotated[Path, typer.Option("--out", help="Output JSONL of prompt/chosen/rejected.")],
    strategy: Annotated[
        str | None,
        typer.Option(help="Rejected-answer builder(s), comma-separated, or 'all'. Default: the task's first."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    task_file: TaskFileOpt = None,
    from_model: Annotated[str | None, typer.Option(
        "--from-model", help="On-policy pairs: a training run (its final/), adapter or model directory, or "
                             "'default'; its samples are judged by the task (study/onpolicy_pairs.py).")] = None,
    samples: Annotated[int, typer.Option(min=1, help="With --from-model: answers sampled per prompt.")] = 4,
    temperature: Annotated[float, typer.Option(min=0.01, help="With --from-model: sampling temperature.")] = 1.0,
    batch_size: Annotated[int, typer.Option(min=1, help="With --from-model: prompts per batch.")] = 8,
    max_new_tokens: Annotated[int | None, typer.Option(help="With --from-model: default the task's.")] = None,
    max_record_bytes: MaxRecordOpt = MAX_RECORD_BYTES,
) -> None:
    """DPO preference pairs (prompt/chosen/rejected JSONL) built by the task's rejected-answer builders,
    or with --from-model from the model's own samples judged by the task."""
    ctx.with_resource(record_limit(max_record_bytes))  # every file this command reads
    task, path = _task_and_file(args, task_file)
    records = load(task, path)
    if from_model is None:
        rows = preference_pairs(task, records, strategy=strategy, seed=seed)
    else:
        from clinalign.study.onpolicy_pairs import load_policy, sample_pairs

        model, tokenizer, fp = load_policy(from_model)
        rows, stats = sample_pairs(task, model, tokenizer, records, samples=samples, temperature=temperature,
                                   seed=seed, batch_size=batch_size, max_new_tokens=max_new_tokens, fingerprint=fp)
        console.print(f"sampled {stats['samples']} answers ({stats['samples_per_s']:.1f}/s), mean judge score "
                      f"{stats['mean_score']:.3f}; {stats['ties_skipped']} prompt(s) tied")
    n = write_jsonl(out, rows)
    by = Counter(r["strategy"] for r in rows)
    console.print(f"wrote {n} pairs to {out} (" + ", ".join(f"{k}: {v}" for k, v in by.items()) + ")")


@app.command()
def audit(
    ctx: typer.Context,
    args: Args,
    pairs_file: Annotated[Path | None, typer.Option("--pairs", help="Preference pairs JSONL to check.")] = None,
    against: Annotated[Path | None, typer.Option("--against", help="Test file to check for leakage.")] = None,
    model: Annotated[str | None, typer.Option(help="Count lengths with this model's tokenizer.")] = None,
    limit: Annotated[int | None, typer.Option(help="Training length limit in tokens.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the audit as JSON (and .html beside it).")] = None,
    task_file: TaskFileOpt = None,
    max_record_bytes: MaxRecordOpt = MAX_RECORD_BYTES,
) -> None:
    """Label balance, duplicates, train/test leakage, lengths, pair quality and a likely-PHI scan.

    Findings name record ids only, never the text (the data may hold PHI). The PHI scan is a safety
    net, not a de-identification tool.
    """
    from clinalign.data import audit as A
    from clinalign.data.io import write_json, write_text_atomic
    from clinalign.data.rows import PairRow, read_rows

    ctx.with_resource(record_limit(max_record_bytes))  # every file this command reads
    task, path = _task_and_file(args, task_file)
    records = load(task, path)
    test = load(task, against) if against else None
    pairs = [row for _, row in read_rows(pairs_file, PairRow)] if pairs_file else None
    tokenizer = None
    if model:
        from clinalign.models.loading import load_tokenizer, resolve_model_path

        tokenizer = load_tokenizer(resolve_model_path(model))
    report = A.audit(task, records, pairs=pairs, against=test, tokenizer=tokenizer, limit=limit)
    print(A.render_text(report))
    if out:
        write_json(out, report)
        write_text_atomic(out.with_suffix(".html"), A.render_html(report))

