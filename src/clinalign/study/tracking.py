"""Experiment tracking for a finished study (``report_to: [tensorboard, mlflow]`` in the study file).

On-prem teams keep their runs in TensorBoard or MLflow; the study hands each one what it already
wrote: the config as params, every stage's training curves and seconds, every metric of every system,
and the results table, results.json and report as artifacts. Nothing leaves the machine: MLflow
writes its local SQLite store, ``OUT/mlflow.db`` with artifacts in ``OUT/mlartifacts`` (view with
``mlflow ui --backend-store-uri sqlite:///OUT/mlflow.db``), unless ``MLFLOW_TRACKING_URI`` names
another (a team's own server). Tracking runs after the report is written: a tracker that fails leaves the study's files whole.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator

#: the study file's ``report_to:``: one tracker name or a list of them
ReportTo = Annotated[list[Literal["tensorboard", "mlflow"]],
                     BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]
MAX_PARAM_CHARS = 500  # MLflow takes more; a longer value (a prompt, a list) is noise in a param table


def report_to(targets: list[str], results: dict[str, Any], out: Path) -> None:
    """Send the finished study in ``out`` to each tracker named in ``targets``."""
    with quiet_loggers():
        if "tensorboard" in targets:
            to_tensorboard(results, out)
        if "mlflow" in targets:
            to_mlflow(results, out)


@contextmanager
def quiet_loggers() -> Iterator[None]:
    """Only warnings and errors from MLflow and alembic (its store migrations) while a study is
    tracked: their INFO lines ("Creating initial MLflow database tables...") would interleave with
    the study's output. MLflow sets its loggers' levels from MLFLOW_LOGGING_LEVEL when first imported,
    so the variable is set too; a level the user chose with MLFLOW_LOGGING_LEVEL is left alone."""
    if os.environ.get("MLFLOW_LOGGING_LEVEL"):
        yield
        return
    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        del os.environ["MLFLOW_LOGGING_LEVEL"]
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def final_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``task/metric/system`` -> the estimate reported in the results table."""
    out = {}
    for tid, task in results["tasks"].items():
        for metric, entry in task.items():
            if metric.startswith("_") or not isinstance(entry, dict):
                continue
            for system, cell in entry.items():
                if isinstance(cell, dict) and isinstance(cell.get("value"), int | float):
                    out[f"{tid}/{metric}/{system}"] = float(cell["value"])
    return out


def stage_curves(out: Path) -> Iterator[tuple[str, int, float]]:
    """(``task/stage/metric``, step, value) from every training stage's metrics.jsonl."""
    root = out / "stages"
    for path in sorted(root.rglob("run/metrics.jsonl")):
        stage = path.parent.parent.relative_to(root).as_posix()
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float):
                    yield f"{stage}/{k}", int(row["step"]), float(v)


def flat_params(cfg: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as ``dotted.key -> value`` (lists by index: ``tasks.0.id``)."""
    items = cfg.items() if isinstance(cfg, dict) else enumerate(cfg)
    out: dict[str, str] = {}
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, dict | list) and v:
            out.update(flat_params(v, key + "."))
        else:
            out[key] = str(v)[:MAX_PARAM_CHARS]
    return out


def _artifacts(out: Path) -> list[Path]:
    return [p for p in (out / "results.json", out / "report.md", out / "report.html") if p.is_file()]


def to_tensorboard(results: dict[str, Any], out: Path) -> Path:
    """Events in ``OUT/tb``: curves and final metrics as scalars, config and results table as text."""
    from torch.utils.tensorboard import SummaryWriter

    from clinalign.report.tables import results_table_markdown

    logdir = out / "tb"
    writer = SummaryWriter(str(logdir))
    try:
        writer.add_text("config", "```yaml\n" + yaml.safe_dump(results["study"]["config"], sort_keys=False) + "```")
        writer.add_text("results", results_table_markdown(results))
        for tag, step, value in stage_curves(out):
            writer.add_scalar(tag, value, step)
        for tag, value in final_metrics(results).items():
            writer.add_scalar(tag, value, 0)
        for stage, seconds in results["study"].get("stage_seconds", {}).items():
            writer.add_scalar(f"{stage}/seconds", seconds, 0)
    finally:
        writer.close()
    return logdir


def to_mlflow(results: dict[str, Any], out: Path) -> str:
    """One MLflow run per study (experiment = the study's name); returns the run id."""
    try:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
    except ImportError:
        from clinalign.errors import ConfigError

        raise ConfigError("report_to: mlflow needs MLflow: pip install 'clinalign[tracking]'") from None
    import time

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = None if uri else (out.resolve() / "mlartifacts").as_uri()  # else MLflow picks ./mlruns in cwd
    client = MlflowClient(tracking_uri=uri or f"sqlite:///{out.resolve() / 'mlflow.db'}")
    name = results["study"].get("name") or "study"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name, artifact_location=artifacts)
    run = client.create_run(exp_id, run_name=out.name, tags={"clinalign.out": str(out.resolve())})
    rid = run.info.run_id
    now = int(time.time() * 1000)
    params = [Param(k, v) for k, v in flat_params(results["study"]["config"]).items()]
    metrics = [Metric(tag, v, now, step) for tag, step, v in stage_curves(out)]
    metrics += [Metric(tag, v, now, 0) for tag, v in final_metrics(results).items()]
    metrics += [Metric(f"{s}/seconds", v, now, 0)
                for s, v in results["study"].get("stage_seconds", {}).items()]
    for i in range(0, max(len(params), len(metrics)), 100):  # MLflow's batch limit is 100 params
        client.log_batch(rid, metrics=metrics[i:i + 100], params=params[i:i + 100])
    client.log_text(rid, yaml.safe_dump(results["study"]["config"], sort_keys=False), "study.yaml")
    for path in _artifacts(out):
        client.log_artifact(rid, str(path))
    client.set_terminated(rid)
    return rid
