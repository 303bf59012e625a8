"""A 2-task mini study with the tiny fixture model, end to end: caching, resume, report shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from clinalign.errors import ConfigError
from clinalign.study import stages as S
from clinalign.study.config import load_study
from clinalign.synthetic import generate

pytestmark = pytest.mark.slow


def write_study(tmp_path: Path, model: Path, **extra) -> Path:
    train = {"epochs": 1, "batch_size": 4, "lr": 3e-3, "lora": True, "lora_rank": 4, "lora_alpha": 8,
             "max_length": 256}
    cfg = {
        "name": "mini", "model": str(model), "seed": 0,
        "split": {"val": 0.1, "test": 0.3, "seed": 0},
        "sft": dict(train), "dpo": {**train, "beta": 0.1},
        "eval": {"batch_size": 8, "n_boot": 200},
        "tasks": [{"id": "uti_classification", "n": 40}, {"id": "hyponatremia_urine", "n": 40}],
        "multiplicity": {"metrics": "all", "comparisons": "all"},  # every comparison corrected together
        **extra,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def mini_study(tiny_model_dir: Path, tmp_path_factory):
    from clinalign.study.runner import run_study

    tmp = tmp_path_factory.mktemp("study")
    cfg = load_study(write_study(tmp, tiny_model_dir))
    out = tmp / "out"
    logs: list[str] = []
    results = run_study(cfg, out, log=logs.append)
    return cfg, out, results, logs


def test_results_shape_and_report(mini_study):
    _, out, results, logs = mini_study
    for name in ("report.md", "report.html", "results.json"):
        assert (out / name).is_file()
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["tasks"]) == {"uti_classification", "hyponatremia_urine"}
    f1 = saved["tasks"]["uti_classification"]["f1_yes"]
    for system in ("base", "sft", "dpo"):
        assert 0.0 <= f1[system]["value"] <= 1.0
        lo, hi = f1[system]["ci"]
        assert lo <= f1[system]["value"] <= hi
    assert set(f1["p_values"]) == {"sft_vs_base", "dpo_vs_base", "dpo_vs_sft", "classical_vs_sft", "classical_vs_dpo"}
    assert "bootstrap" in f1["test"].lower()
    acc = saved["tasks"]["hyponatremia_urine"]["accuracy"]
    assert "mcnemar" in acc["test"].lower()
    assert saved["tasks"]["uti_classification"]["_verdict"]
    html = (out / "report.html").read_text()
    assert "uti_classification" in html and "http://" not in html and "https://" not in html
    for stage in ("sft", "dpo"):  # both stages' training curves reach the report
        assert (out / f"uti_classification_{stage}_curves.png").is_file()
    # every number traces to items
    rows = [json.loads(x) for x in (out / "predictions" / "uti_classification" / "dpo.jsonl").read_text().splitlines()]
    test = (out / "data" / "uti_classification" / "test.jsonl").read_text().splitlines()
    assert len(rows) == len(test) and all(r["pred"] in ("yes", "no") for r in rows)
    correct = sum(r["pred"] == r["gold"] for r in rows) / len(rows)
    uti_acc = saved["tasks"]["uti_classification"]["accuracy"]["dpo"]["value"]
    assert correct == pytest.approx(uti_acc)
    # what the report needs beside the numbers: provenance, where the data came from, the baseline, coverage
    import clinalign

    prov = saved["study"]["provenance"]
    assert prov["clinalign"] == clinalign.__version__ and prov["run_seconds"] > 0 and prov["cores"] >= 1
    assert saved["tasks"]["uti_classification"]["_data"] == {"source": "synthetic", "n": 40, "seed": 0}
    assert "logistic regression" in saved["tasks"]["uti_classification"]["_baseline"]
    assert f1["covers"].startswith("F1 of the answer 'yes'")
    # each task's data line is logged once its split is ready, before its first training stage
    data = next(i for i, m in enumerate(logs) if m.startswith("data uti_classification: synthetic"))
    assert data < next(i for i, m in enumerate(logs) if m.endswith("uti_classification/sft"))
    assert "train/val/test" in logs[data]


def test_second_run_trains_nothing(mini_study):
    from clinalign.study.runner import run_study

    cfg, out, results, _ = mini_study
    again = run_study(cfg, out, log=lambda _m: None)
    assert again["study"]["stages_run"] == []
    assert any(s.endswith("/dpo") for s in again["study"]["stages_cached"])
    assert again["tasks"]["uti_classification"]["f1_yes"] == results["tasks"]["uti_classification"]["f1_yes"]


def test_changed_setting_reruns_only_downstream(mini_study, tmp_path):
    from clinalign.study.runner import run_study

    cfg, out, _, _ = mini_study
    changed = cfg.model_copy(deep=True)
    changed.tasks[1].dpo = {"beta": 0.2}  # hyponatremia DPO only
    changed.tasks[1].max_pairs = 5  # ... on the pairs of 5 training records
    again = run_study(changed, out, log=lambda _m: None)
    ran = again["study"]["stages_run"]
    assert "hyponatremia_urine/dpo" in ran and "hyponatremia_urine/eval" in ran
    pairs = [json.loads(x) for x in (out / "stages" / "hyponatremia_urine" / "dpo" / "pairs.jsonl").read_text().splitlines()]
    train = [json.loads(x)["id"] for x in (out / "data" / "hyponatremia_urine" / "train.jsonl").read_text().splitlines()]
    # balanced pairs of the first 5 training records only: about one per record, every label chosen equally
    assert {p["id"].split(":")[0] for p in pairs} <= set(train[:5]) and 5 <= len(pairs) < len(train)
    assert not any(s.startswith("uti_classification") for s in ran)
    assert "hyponatremia_urine/sft" not in ran and "hyponatremia_urine/data" not in ran


def test_killed_stage_resumes(tmp_path: Path):
    calls = []

    def killed(out: Path, resume: bool) -> None:
        calls.append(resume)
        (out / "partial").write_text("checkpoint")
        raise KeyboardInterrupt

    runner = S.StageRunner(tmp_path, log=lambda _m: None)
    with pytest.raises(KeyboardInterrupt):
        runner.run("t/sft", {"lr": 1}, killed)

    def finish(out: Path, resume: bool) -> None:
        calls.append(resume)
        assert (out / "partial").read_text() == "checkpoint"  # the checkpoint survived

    runner.run("t/sft", {"lr": 1}, finish)
    assert calls == [False, True]
    runner.run("t/sft", {"lr": 1}, finish)  # cached now: not called
    assert calls == [False, True]
    runner.run("t/sft", {"lr": 2}, lambda out, resume: calls.append((resume, (out / "partial").exists())))
    assert calls[-1] == (False, False)  # new settings: a fresh folder


def test_bad_study_file(tmp_path: Path, tiny_model_dir: Path):
    with pytest.raises(ConfigError, match="tasks.0.nn: Extra inputs are not permitted"):
        path = write_study(tmp_path, tiny_model_dir)
        raw = yaml.safe_load(path.read_text())
        raw["tasks"][0]["nn"] = 3
        path.write_text(yaml.safe_dump(raw))
        load_study(path)
    with pytest.raises(ConfigError, match="task listed twice"):
        load_study(write_study(tmp_path, tiny_model_dir), ["tasks=[{id: a}, {id: a}]"])
    cfg = load_study(write_study(tmp_path, tiny_model_dir), ["sft.epochs=3", "eval.n_boot=10"])
    assert cfg.sft["epochs"] == 3 and cfg.eval.n_boot == 10


def test_kfold_split_partitions_and_stratifies():
    from clinalign.data.splits import kfold_split
    from clinalign.tasks import get_task

    task = get_task("uti_classification")
    recs = generate(task, 100, seed=1)
    tests = []
    for fold in range(5):
        parts = kfold_split(task, recs, k=5, fold=fold, val=0.1, seed=0)
        assert not {r.id for r in parts["test"]} & {r.id for r in parts["train"] + parts["val"]}
        assert len(parts["train"]) + len(parts["val"]) + len(parts["test"]) == 100
        tests += [r.id for r in parts["test"]]
    assert sorted(tests) == sorted(r.id for r in recs)  # every record tested exactly once


def test_kfold_study_reports_fold_spread(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    """2 folds, both DPO arms: the pooled test, each metric's spread over folds, and every fold's split,
    on-policy rounds and training curves, each naming its fold; the methods state what the stages ran."""
    from clinalign.report import plots
    from clinalign.study.runner import run_study
    from clinalign.train.config import DEFAULT_EPOCHS

    path = write_study(tmp_path, tiny_model_dir, folds=2, validate=True)
    raw = yaml.safe_load(path.read_text())
    raw["tasks"] = [{"id": "uti_classification", "n": 24, "sft": {"batch_size": 2}}]
    # (one epoch each, not max_steps: under max_steps a stage's saved config says epochs: null, what ran)
    raw["dpo"].update(pairs=["builder", "on_policy"], samples=2)
    del raw["dpo"]["epochs"]  # left to the trainer's default
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    drawn, curves_png = {}, plots.curves_png

    def draw(tid: str, stage: str, rows: list[dict]) -> bytes | None:
        drawn[stage] = rows
        return curves_png(tid, stage, rows)

    monkeypatch.setattr(plots, "curves_png", draw)
    results = run_study(load_study(path), out, log=lambda _m: None)
    uti = results["tasks"]["uti_classification"]
    assert uti["_n_items"] == 24  # pooled: every record tested once
    spread = uti["_folds"]["accuracy"]["sft"]
    assert len(spread["values"]) == 2 and spread["mean"] == pytest.approx(sum(spread["values"]) / 2)
    assert "accuracy over 2 folds" in (out / "report.md").read_text()
    assert (out / "stages" / "uti_classification" / "fold1" / "sft" / "run" / "val_metrics.jsonl").is_file()

    stages = out / "stages" / "uti_classification"
    assert [s["fold"] for s in uti["_split"]] == [0, 1] and sum(s["test"] for s in uti["_split"]) == 24
    for s in uti["_split"]:
        assert s == {"fold": s["fold"], **json.loads((stages / f"fold{s['fold']}" / "data" / "split.json").read_text())}
    assert [(r["fold"], r["round"]) for r in uti["_on_policy"]] == [(0, 1), (1, 1)]
    for r in uti["_on_policy"]:
        assert r == {"fold": r["fold"], **json.loads((stages / f"fold{r['fold']}" / "dpo_round1_sample" / "stats.json").read_text())}
    runs = {"sft": "sft", "dpo": "dpo", "dpo_onpolicy": "dpo_round1"}
    assert set(drawn) == set(runs)
    for system, stage in runs.items():  # each fold's own metrics.jsonl rows, naming the fold
        for fold in (0, 1):
            logged = [json.loads(x) for x in (stages / f"fold{fold}" / stage / "run" / "metrics.jsonl").read_text().splitlines()]
            assert logged and [r for r in drawn[system] if r["fold"] == fold] == [{"fold": fold, **r} for r in logged]
    md = (out / "report.md").read_text()
    assert "train/val/test records (fold 1)" in md and "on-policy fold 1 round 1:" in md

    # _settings: what each training stage ran with, read back from its saved config
    settings = json.loads((out / "results.json").read_text())["tasks"]["uti_classification"]["_settings"]
    assert set(settings["sft"]) == set(raw["sft"]) and set(settings["dpo"]) == set(raw["dpo"]) - {"pairs", "samples"} | {"epochs"}
    on_policy = {"pairs": "on_policy", "rounds": 1, "samples": 2, "temperature": 1.0}
    for system, stage in runs.items():
        saved = yaml.safe_load((stages / "fold0" / stage / "run" / "config.yaml").read_text())
        trainer = {k: v for k, v in settings[system].items() if system != "dpo_onpolicy" or k not in on_policy}
        assert trainer == {k: saved[k] for k in trainer}
    assert settings["sft"]["batch_size"] == 2  # the task's own value over the study's
    assert settings["dpo"]["epochs"] == DEFAULT_EPOCHS["dpo"]  # filled in by the trainer
    assert settings["dpo_onpolicy"] == {**settings["dpo"], **on_policy}
    assert "| SFT | batch_size 2, epochs 1, lora true, " in md  # the settings table: one task, all common


@pytest.mark.parametrize("name", ["demo.yaml", "quick.yaml", "paper.yaml"])
def test_shipped_study_configs_are_valid(name):
    """Every task exists and every task's SFT/DPO settings make a valid training config (a DPO stage
    that continues the SFT adapter in that adapter's shape, as the runner trains it)."""
    from clinalign.study.config import continued_shape
    from clinalign.study.onpolicy import split_settings
    from clinalign.tasks import get_task
    from clinalign.train.config import build_config

    cfg = load_study(Path(__file__).parent.parent / "configs" / name)
    assert cfg.tasks
    for entry in cfg.tasks:
        get_task(entry.id)
        sft = cfg.train_settings("sft", entry)
        dpo = continued_shape(cfg.dpo_from, sft, split_settings(cfg.train_settings("dpo", entry))[1])
        for stage, values in (("sft", sft), ("dpo", dpo)):
            build_config(None, values={**values, "stage": stage})
        cfg.eval_settings(entry)


def test_duplicates_share_a_split_and_a_failing_task_does_not_sink_the_study(tiny_model_dir: Path, tmp_path: Path):
    """Real exports repeat records: a planted copy (new id, same text) must end in its original's split,
    so the leakage gate passes and the audit counts the group. A task that fails (here: a bad record)
    is reported with its error while the finished task keeps its results, and the study exits non-zero."""
    from clinalign.cli import run
    from clinalign.data.io import write_jsonl
    from clinalign.study.runner import StudyFailed, run_study
    from clinalign.tasks import get_task

    uti = get_task("uti_classification")
    recs = generate(uti, 30, seed=5)
    copies = [r.model_copy(update={"id": f"{r.id}-again"}) for r in recs[:4]]  # 4 groups of 2
    write_jsonl(tmp_path / "uti.jsonl", recs + copies)
    (tmp_path / "bad.jsonl").write_text('{"id": "x1", "serum_sodium": "high"}\n')
    study = write_study(tmp_path, tiny_model_dir, tasks=[{"id": "uti_classification", "data": str(tmp_path / "uti.jsonl")},
                                                          {"id": "hyponatremia_urine", "data": str(tmp_path / "bad.jsonl")}])
    out = tmp_path / "out"
    with pytest.raises(StudyFailed) as failed:
        run_study(load_study(study), out, log=lambda _m: None)
    assert list(failed.value.failed) == ["hyponatremia_urine"]
    assert "bad.jsonl:1" in failed.value.failed["hyponatremia_urine"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["study"]["failed"] == failed.value.failed
    assert saved["tasks"]["hyponatremia_urine"]["_error"] == failed.value.failed["hyponatremia_urine"]
    done = saved["tasks"]["uti_classification"]
    assert done["_split"]["duplicate_groups"] == 4 and done["_split"]["records_in_groups"] == 8
    where = {}
    for part in ("train", "val", "test"):
        for line in (out / "data" / "uti_classification" / f"{part}.jsonl").read_text().splitlines():
            where[json.loads(line)["id"]] = part
    assert all(where[r.id] == where[f"{r.id}-again"] for r in recs[:4])
    assert "f1_yes" in done and "hyponatremia_urine" in (out / "report.md").read_text()
    # the CLI says which task failed and exits non-zero, after printing the finished task's table
    assert run(["study", "run", str(study), "--out", str(out)]) == 1


def test_results_hold_the_classical_baseline_and_the_label_distribution(mini_study):
    _, out, results, _ = mini_study
    saved = json.loads((out / "results.json").read_text())
    uti = saved["tasks"]["uti_classification"]
    test = [json.loads(x) for x in (out / "data" / "uti_classification" / "test.jsonl").read_text().splitlines()]
    baseline = [json.loads(x) for x in (out / "predictions" / "uti_classification" / "classical.jsonl").read_text().splitlines()]
    assert [r["id"] for r in baseline] == [r["id"] for r in test]
    correct = sum(r["pred"] == r["gold"] for r in baseline) / len(baseline)
    assert uti["accuracy"]["classical"]["value"] == pytest.approx(correct)
    assert {"classical_vs_sft", "classical_vs_dpo"} <= set(uti["accuracy"]["p_values_holm"])
    assert "classical" in uti["_verdict"]
    dist = uti["_label_distribution"]
    assert set(dist) == {"gold", "base", "sft", "dpo", "classical"}
    assert dist["gold"] == {k: sum(r["label"] == k for r in test) for k in ("yes", "no") if any(r["label"] == k for r in test)}
    assert all(sum(c.values()) == len(test) for c in dist.values())
    md = (out / "report.md").read_text()
    assert "| Classical |" in md and "Classical vs SFT" in md and "Predicted labels" in md


def test_a_hand_edited_or_half_deleted_stage_is_recomputed(tmp_path):
    calls, logs = [], []

    def stage(out: Path, resume: bool) -> None:
        calls.append(resume)
        (out / "run" / "final").mkdir(parents=True, exist_ok=True)
        (out / "predictions.jsonl").write_text('{"id": 1, "pred": "yes"}\n')
        (out / "run" / "final" / "adapter.bin").write_bytes(b"weights")
        (out / "run" / "checkpoints").mkdir(exist_ok=True)
        (out / "run" / "checkpoints" / "big.pt").write_bytes(b"x")

    runner = S.StageRunner(tmp_path, log=logs.append)
    runner.run("t/eval", {"a": 1}, stage)
    runner.run("t/eval", {"a": 1}, stage)
    assert calls == [False] and runner.skipped == ["t/eval"]
    d = tmp_path / "t" / "eval"
    (d / "run" / "checkpoints" / "big.pt").write_bytes(b"yy")  # intermediate state: not part of the output
    runner.run("t/eval", {"a": 1}, stage)
    assert calls == [False]
    damage = [lambda: (d / "run" / "final" / "adapter.bin").unlink(),
              lambda: (d / "predictions.jsonl").write_text('{"id": 1, "pred": "no!"}\n'),  # same size, edited
              lambda: (d / "notes.txt").write_text("hand-made")]
    for i, hurt in enumerate(damage):
        hurt()
        runner.run("t/eval", {"a": 1}, stage)
        assert calls == [False] * (i + 2)  # recomputed from nothing, not resumed
        assert not (d / "notes.txt").exists()
    assert [m for m in logs if "not trusted" in m] == [
        "[yellow]not trusted[/yellow] t/eval: run/final/adapter.bin was deleted since it finished; recomputing",
        "[yellow]not trusted[/yellow] t/eval: predictions.jsonl was changed since it finished; recomputing",
        "[yellow]not trusted[/yellow] t/eval: notes.txt was added since it finished; recomputing"]
    (d / ".done").write_text(json.loads((d / ".done").read_text())["fingerprint"])  # an older version's marker
    runner.run("t/eval", {"a": 1}, stage)
    assert len(calls) == 5 and "older clinalign" in logs[-2]


def test_a_missing_data_file_fails_when_the_study_is_loaded(tmp_path: Path, tiny_model_dir: Path, capsys):
    """A typo in a task's data:, pairs_file: or likert_csv: path is one line naming the key, before any
    folder, report or tracking file is written."""
    from clinalign.cli import run

    for key in ("data", "pairs_file", "likert_csv"):
        study = write_study(tmp_path, tiny_model_dir, tasks=[{"id": "uti_classification", key: "uti-typo.jsonl"}],
                            report_to=["mlflow"])
        with pytest.raises(ConfigError) as e:
            load_study(study)
        assert str(e.value) == (f"{study}: tasks.uti_classification.{key}: no such file: uti-typo.jsonl "
                                f"(relative to the study file: {tmp_path / 'uti-typo.jsonl'})")
        out = tmp_path / "out"
        assert run(["study", "run", str(study), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"tasks.uti_classification.{key}: no such file" in err and "Traceback" not in err
        assert not out.exists()
    (tmp_path / "folder.jsonl").mkdir()
    study = write_study(tmp_path, tiny_model_dir, tasks=[{"id": "uti_classification", "data": str(tmp_path / "folder.jsonl")}])
    with pytest.raises(ConfigError, match=r"tasks.uti_classification.data: is a folder, not a file: /"):
        load_study(study)


def test_a_study_whose_only_task_fails_says_so(tmp_path: Path, tiny_model_dir: Path, capsys):
    """The only task fails (its data file does not validate): the study prints the task's failure and
    the documented one-line error, exit 1, not a crash of the data summary."""
    from clinalign.cli import run

    (tmp_path / "bad.jsonl").write_text('{"id": "x1", "serum_sodium": "high"}\n')
    study = write_study(tmp_path, tiny_model_dir, tasks=[{"id": "hyponatremia_urine", "data": str(tmp_path / "bad.jsonl")}])
    assert run(["study", "run", str(study), "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "error: 1 of 1 task(s) failed: hyponatremia_urine" in captured.err
    assert "IndexError" not in captured.out + captured.err and "Traceback" not in captured.out + captured.err
    assert "bad.jsonl:1" in captured.out + captured.err
    assert "clinalign data summary" not in captured.out  # no task got as far as its data: no table


def test_a_generation_task_shows_a_few_outputs_on_the_page_only(tiny_model_dir: Path, tmp_path: Path):
    """A summary task's report quotes its first test items' outputs beside an excerpt of the note (the
    page only: results.json never holds record text) and names the extractive baseline."""
    from markupsafe import escape

    from clinalign.report.summary import EXAMPLES
    from clinalign.study.runner import run_study

    path = write_study(tmp_path, tiny_model_dir, tasks=[{"id": "discharge_summary", "n": 16, "eval": {"max_new_tokens": 8}}])
    raw = yaml.safe_load(path.read_text())
    raw["sft"]["max_steps"] = raw["dpo"]["max_steps"] = 1
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    results = run_study(load_study(path), out, log=lambda _m: None)
    test = [json.loads(x) for x in (out / "data" / "discharge_summary" / "test.jsonl").read_text().splitlines()]
    sft = [json.loads(x) for x in (out / "predictions" / "discharge_summary" / "sft.jsonl").read_text().splitlines()]
    page, saved = (out / "report.html").read_text(), (out / "results.json").read_text()
    assert "Example outputs" in page and "Example outputs" in (out / "report.md").read_text()
    for rec, row in list(zip(test, sft, strict=True))[:EXAMPLES]:
        assert f"Item {rec['id']}: " in page
        words = " ".join(rec["note"].split()[:6])
        assert escape(words) in page and words not in saved
        assert escape(" ".join(row["text"].split()[:3])) in page
    assert f"Item {test[EXAMPLES]['id']}: " not in page
    assert results["tasks"]["discharge_summary"]["_baseline"].startswith("extractive: ")
