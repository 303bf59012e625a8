"""report_to: a finished study lands in MLflow (its local SQLite store) and TensorBoard with its config,
per-stage curves, every metric and the results table. The study itself is faked (no training): its
task results come from the real statistics on made-up predictions, the curves from a metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from clinalign.errors import ConfigError
from clinalign.study.config import load_study
from clinalign.synthetic import generate

CURVE = [{"step": 1, "epoch": 0.5, "loss": 0.69, "lr": 1e-4}, {"step": 2, "epoch": 1.0, "loss": 0.41, "lr": 5e-5}]


@pytest.fixture
def study(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    """Run run_study with run_task replaced by canned predictions (gold for dpo, 'no' for base)."""
    from clinalign.eval.compare import compare_systems
    from clinalign.study import runner

    def fake_task(cfg, entry, task, base_model, stages, out, extras):
        recs = generate(task, 30, seed=0)
        gold = [task.answer(r) for r in recs]
        curve = out / "stages" / task.id / "dpo" / "run" / "metrics.jsonl"
        curve.parent.mkdir(parents=True)
        curve.write_text("".join(json.dumps(r) + "\n" for r in CURVE))
        stages.timings[f"{task.id}/dpo"] = 12.5
        return compare_systems(task, recs, {"base": ["no"] * 30, "sft": gold[:15] + ["no"] * 15, "dpo": gold},
                               n_boot=50)

    monkeypatch.setattr(runner, "run_task", fake_task)

    def run(**extra):
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump({"name": "trk", "model": str(tiny_model_dir), "sft": {"lr": 3e-4},
                                        "tasks": [{"id": "uti_classification", "n": 30}], **extra}))
        out = tmp_path / "out"
        return runner.run_study(load_study(path), out, log=lambda _m: None), out

    return run


def test_mlflow_run_has_params_metrics_artifacts(study, tmp_path: Path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results, out = study(report_to="mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("trk")
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "out"
    p = run.data.params
    assert p["name"] == "trk" and p["sft.lr"] == "0.0003" and p["tasks.0.id"] == "uti_classification"
    assert p["report_to.0"] == "mlflow"
    m = run.data.metrics
    acc = results["tasks"]["uti_classification"]["accuracy"]
    assert m["uti_classification/accuracy/dpo"] == pytest.approx(acc["dpo"]["value"]) == pytest.approx(1.0)
    assert m["uti_classification/accuracy/sft"] == pytest.approx(acc["sft"]["value"])
    assert m["uti_classification/dpo/seconds"] == 12.5
    history = client.get_metric_history(run.info.run_id, "uti_classification/dpo/loss")
    assert [(h.step, h.value) for h in history] == [(1, 0.69), (2, 0.41)]
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.json", "report.md", "report.html", "study.yaml"} <= arts
    table = Path(client.download_artifacts(run.info.run_id, "report.md", str(tmp_path / "dl")))
    assert "| uti_classification | accuracy |" in table.read_text()
    assert not (out / "tb").exists() and not Path("mlruns").exists()  # only what was asked, only under OUT


def test_tensorboard_events(study):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results, out = study(report_to=["tensorboard"])
    acc = EventAccumulator(str(out / "tb"), size_guidance={"tensors": 0, "scalars": 0}).Reload()
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("uti_classification/dpo/loss")] == [(1, 0.69), (2, 0.41)]
    [dpo] = acc.Scalars("uti_classification/f1_yes/dpo")
    assert dpo.value == pytest.approx(results["tasks"]["uti_classification"]["f1_yes"]["dpo"]["value"])
    text = acc.Tensors("results/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| uti_classification | f1_yes |" in text
    assert not (out / "mlflow.db").exists()


def test_no_tracking_by_default_and_typos_fail(study, tmp_path: Path):
    _, out = study()
    assert not (out / "mlflow.db").exists() and not (out / "tb").exists()
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"report_to": "wandb", "tasks": [{"id": "uti_classification"}]}))
    with pytest.raises(ConfigError, match=r"bad.yaml: report_to.0: Input should be 'tensorboard' or 'mlflow'"):
        load_study(path)


def test_mlflow_logs_nothing_into_the_study_output(study, tmp_path: Path, monkeypatch, capfd):
    """MLflow's and alembic's INFO lines (creating the SQLite store) stay out of the study's output,
    whether MLflow is imported during the tracking step or was already; their levels are put back."""
    import logging
    import subprocess
    import sys

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    # a fresh process, where the tracking step is the first to import MLflow
    code = ("import logging, sys; from pathlib import Path; from clinalign.study.tracking import report_to; "
            "out = Path(sys.argv[1]); out.mkdir(); "
            "report_to(['mlflow'], {'study': {'name': 'q', 'config': {'a': 1}}, 'tasks': {}}, out); print('done')")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "fresh")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr[-2000:]
    assert "INFO" not in proc.stderr and "Creating initial MLflow database tables" not in proc.stderr
    assert (tmp_path / "fresh" / "mlflow.db").is_file()

    import mlflow  # noqa: F401  already imported: its loggers are configured at INFO

    logging.getLogger("mlflow").setLevel(logging.INFO)
    capfd.readouterr()
    study(report_to="mlflow")
    captured = capfd.readouterr()
    assert "INFO mlflow" not in captured.out + captured.err and "alembic" not in captured.out + captured.err
    assert logging.getLogger("mlflow").level == logging.INFO and "MLFLOW_LOGGING_LEVEL" not in __import__("os").environ
