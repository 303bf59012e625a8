"""Settings chosen on the validation split by a search (study/tune.py, Optuna): the study's `tune:` block
checked at load, a planted best setting found and scored alone on the test split, the best epoch's
weights kept, a killed search resumed without repeating finished trials, two workers sharing one
search, and the test-split ledger counting configurations across runs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from clinalign.data.io import read_jsonl, read_records, write_jsonl
from clinalign.errors import ConfigError
from clinalign.study.config import load_study
from clinalign.tasks import get_task

UTI = get_task("uti_classification")
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
SIGNS = {"yes": ("Urine culture grew E. coli.", "Dysuria and frequency, nitrite positive.",
                 "Pyuria with burning on urination."),
         "no": ("Ankle sprain after a fall.", "Cough and congestion, viral.", "Headache, normal exam.")}


def planted(n: int, seed: int = 0) -> list:
    """UTI records whose label is plainly in the text (one of three signs per label), each with six
    random words so that no two are near-duplicates (which would bind them to one split)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = "yes" if i % 2 else "no"
        text = " ".join([*rng.sample(WORDS, 6), rng.choice(SIGNS[label])])
        out.append(UTI.record_type(id=f"fx-{i}", text=text, label=label, note_type="clinic note"))
    return out


def write_study(tmp: Path, model: Path, n: int = 48, **extra) -> Path:
    """A one-task study of the planted records; full fine-tuning (the tiny model's random output head
    cannot be steered by LoRA alone): at lr 5e-3 it learns the task in 6 epochs, at 0 it cannot."""
    write_jsonl(tmp / "planted.jsonl", planted(n))
    train = {"epochs": 6, "batch_size": 4, "lr": 5e-3, "lora": False, "max_length": 256, "scheduler": "constant"}
    cfg = {"name": "tuned", "model": str(model), "seed": 0, "split": {"val": 0.25, "test": 0.25, "seed": 0},
           "sft": train, "dpo": {**train, "epochs": 1, "lr": 1e-4, "beta": 0.1}, "eval": {"batch_size": 8, "n_boot": 100},
           "tasks": [{"id": "uti_classification", "data": "planted.jsonl"}], **extra}
    (tmp / "study.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "study.yaml"


def check(tmp: Path, model: Path, **tune) -> str:
    """The ConfigError of a study whose ``tune:`` is ``tune``, without the study file's name."""
    path = write_study(tmp, model, tune=tune)
    with pytest.raises(ConfigError) as e:
        load_study(path)
    return str(e.value).removeprefix(f"{path}: ")


def test_the_tune_block_is_checked_when_the_study_is_loaded(tmp_path, tiny_model_dir):
    assert check(tmp_path, tiny_model_dir, sft={"learning_rate": [1e-3]}) == (
        "tune.sft.learning_rate: not a training setting (did you mean 'lr'?)")
    assert check(tmp_path, tiny_model_dir, sft={"lora_dropot": [0.0]}) == (
        "tune.sft.lora_dropot: not a training setting (did you mean 'lora_dropout'?)")
    assert check(tmp_path, tiny_model_dir, sft={"seed": [1, 2]}) == (
        "tune.sft.seed: not searched (set by the study, or where the run happens)")
    assert check(tmp_path, tiny_model_dir, sft={"batch_size": [4, 0]}) == "tune.sft.batch_size: 0: must be >= 1"
    assert check(tmp_path, tiny_model_dir, sft={"epochs": {"low": 1, "high": 2.5}}) == (
        "tune.sft.epochs: epochs takes whole numbers: low, high and step must be integers")
    assert check(tmp_path, tiny_model_dir, sampler="grid", sft={"lr": {"low": 1e-4, "high": 1e-3}}) == (
        "tune.sft.lr: sampler: grid tries every combination: give a list of values")
    assert check(tmp_path, tiny_model_dir, sft={"lr": [1e-3, 1e-3]}) == (
        "tune.sft.lr: a list of distinct values to try, got [0.001, 0.001]")
    assert check(tmp_path, tiny_model_dir, objective="f1", sft={"lr": [1e-3]}) == (
        "tune.objective: 'f1' is not a metric of uti_classification (choose one of f1_yes, accuracy, val_loss)")
    assert check(tmp_path, tiny_model_dir, dpo={"lora_layers": [1, 2]}) == (
        "tune.dpo.lora_layers: the DPO stage continues the SFT adapter and takes its shape; search lora_layers "
        "under tune.sft")
    assert check(tmp_path, tiny_model_dir, sft={"lr": {"low": 1e-3, "high": 1e-4}}) == (
        "tune.sft: lr: low (0.001) must be below high (0.0001)")
    assert check(tmp_path, tiny_model_dir, sft={"lr": {"low": 1e-4, "hihg": 1e-3}}) == "tune.sft: lr.high: Field required"
    assert check(tmp_path, tiny_model_dir, sft={"lr": 1e-3}) == (
        "tune.sft: lr: a list of values or a range {low, high, log, step}, got 0.001")
    assert check(tmp_path, tiny_model_dir, trials=0) == "tune.trials: Input should be greater than or equal to 1"

    from clinalign.cli import run
    from clinalign.study.tune import public_storage

    assert run(["study", "tune", str(write_study(tmp_path, tiny_model_dir))]) == 2  # no tune: block, nothing to do
    assert public_storage("postgresql://ana:s3cr:et@db.example.org:5432/tune") == (
        "postgresql://ana:***@db.example.org:5432/tune")
    assert public_storage("sqlite:////runs/x/tune.sqlite") == "sqlite:////runs/x/tune.sqlite"
    path = write_study(tmp_path, tiny_model_dir, tune={"sft": {"lr": [1e-3]}}, validate=False)
    with pytest.raises(ConfigError, match=r"validate: false, but tune chooses settings on the validation split"):
        load_study(path)
    path = write_study(tmp_path, tiny_model_dir, multiplicity={"metrics": ["f1"]})
    with pytest.raises(ConfigError, match=r"multiplicity.metrics: 'f1' is not a metric of the study's tasks "
                                          r"\(did you mean 'f1_yes'\?\)"):
        load_study(path)
    # a task's tune: overrides the study's key by key, or turns the search off for that task
    path = write_study(tmp_path, tiny_model_dir, tune={"trials": 5, "storage": "search.log", "sft": {"lr": [1e-3, 2e-3]}})
    raw = yaml.safe_load(path.read_text())
    raw["tasks"] += [{"id": "hyponatremia_urine", "tune": {"trials": 2, "sft": {"epochs": {"low": 1, "high": 3}}}},
                     {"id": "clinical_reasoning", "tune": False}]
    path.write_text(yaml.safe_dump(raw))
    cfg = load_study(path)
    uti, hypo, reasoning = (cfg.tune_settings(t) for t in cfg.tasks)
    assert (uti.trials, list(uti.sft), uti.storage) == (5, ["lr"], str(tmp_path / "search.log"))
    assert (hypo.trials, list(hypo.sft), hypo.sampler) == (2, ["epochs"], "tpe")
    assert reasoning is None and [cfg.validates(t) for t in cfg.tasks] == [True, True, False]
    raw["tasks"][1]["tune"]["sft"] = {"epochs": {"low": 1, "high": 3.5}}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="tasks.hyponatremia_urine.tune.sft.epochs: epochs takes whole numbers"):
        load_study(path)


@pytest.mark.slow
def test_the_search_finds_the_planted_setting_and_only_that_one_is_scored_on_test(tmp_path, tiny_model_dir,
                                                                                   monkeypatch):
    """lr 5e-3 learns the planted task, lr 0 and 1e-7 cannot: the SFT search chooses 5e-3 on the validation
    split (the median pruner stops a hopeless trial once two have finished), DPO's trials start from that
    model, and the test split is scored once, with the chosen weights only; the chosen weights' validation
    score, recomputed, is the best one logged."""
    from clinalign.eval import predict
    from clinalign.study import validation
    from clinalign.study.runner import run_study

    path = write_study(tmp_path, tiny_model_dir, tune={
        "trials": 3, "sampler": "grid", "pruner": "median",
        "sft": {"lr": [0.0, 1.0e-7, 5.0e-3]}, "dpo": {"beta": [0.1, 0.5]}})
    scored_on_test, validated_on = [], set()
    real_predict, real_live = predict.predict_systems, validation.predict_live

    def predict_systems(task, models, records, **kw):
        scored_on_test.append({s: str(p) for s, p in models.items()})
        return real_predict(task, models, records, **kw)

    def predict_live(task, model, tokenizer, records, ev):
        validated_on.update(r.id for r in records)
        return real_live(task, model, tokenizer, records, ev)

    monkeypatch.setattr(predict, "predict_systems", predict_systems)
    monkeypatch.setattr(validation, "predict_live", predict_live)
    out = tmp_path / "out"
    results = run_study(load_study(path), out, log=lambda _m: None)
    uti = results["tasks"]["uti_classification"]
    sft, dpo = uti["_selection"]["sft"], uti["_selection"]["dpo"]

    assert sft["chosen"]["params"] == {"lr": 5.0e-3} and sft["chosen"]["value"] == 1.0
    assert sft["objective"] == {"metric": "f1_yes", "split": "validation", "higher_is_better": True}
    val = read_records(out / "data" / "uti_classification" / "val.jsonl", UTI.record_type)
    assert sft["validation_records"] == len(val) >= 12 and sft["budget"] == {"trials": 3, "timeout_s": None}
    assert sorted(t["params"]["lr"] for t in sft["trials"]) == [0.0, 1.0e-7, 5.0e-3]  # each grid point once
    for t in sft["trials"]:
        assert t["state"] in ("complete", "pruned")
        if t["state"] == "pruned":  # stopped cleanly after fewer epochs, and says so in its stage
            assert t["value"] is None and len(t["epoch_scores"]) < 6 and t["params"]["lr"] < 1e-3
            assert (out / t["stage"] / "pruned.json").is_file() and (out / t["stage"] / "run" / "final").is_dir()
        else:
            assert len(t["epoch_scores"]) == 6 and t["value"] == max(t["epoch_scores"])
    assert [t["state"] for t in sft["trials"]].count("pruned") >= 1
    chosen_sft = out / sft["chosen"]["stage"] / "run" / "final"
    for t in dpo["trials"]:  # every DPO trial continues the chosen SFT model
        config = yaml.safe_load((out / t["stage"] / "run" / "config.yaml").read_text())
        assert config["init_from"] == str(chosen_sft)
    # ... and the second one used the first one's reference log-probs (same key: no second file)
    refs = [sorted(p.name for p in (out / t["stage"] / "run" / "ref_logps").iterdir()) for t in dpo["trials"]]
    assert len(refs) == 2 and refs[0] == refs[1] and len(refs[0]) == 1
    assert uti["_settings"]["sft"]["lr"] == 5.0e-3 and uti["_settings"]["dpo"]["beta"] == dpo["chosen"]["params"]["beta"]

    # the test split: scored once, by base and the chosen SFT and DPO weights, never seen in validation
    test_ids = {r.id for r in read_records(out / "data" / "uti_classification" / "test.jsonl", UTI.record_type)}
    assert validated_on == {r.id for r in val} and not validated_on & test_ids
    assert len(scored_on_test) == 1
    assert {s: Path(p) for s, p in scored_on_test[0].items() if s != "base"} == {
        "sft": chosen_sft, "dpo": out / dpo["chosen"]["stage"] / "run" / "final"}
    for system in ("sft", "dpo"):  # the stable path of each chosen model
        assert (out / "models" / "uti_classification" / system).resolve() == (out / uti["_selection"][system]["chosen"]["stage"] / "run").resolve()
    assert uti["_test_uses"]["n_configurations"] == 1 and "scored under 1 configuration." in uti["_verdict"]
    # the default multiplicity family: the primary metric's confirmatory comparisons, the rest secondary
    family = results["study"]["multiplicity"]
    assert {(m["metric"], m["comparison"]) for m in family["members"]} == {
        ("f1_yes", "sft_vs_base"), ("f1_yes", "dpo_vs_base"), ("f1_yes", "dpo_vs_sft")}
    assert set(uti["accuracy"]["secondary"]) == set(uti["accuracy"]["p_values"]) and not uti["accuracy"]["p_values_holm"]

    # the chosen SFT weights, scored again on the validation split, give the best logged score
    rows = real_predict(UTI, {"sft": chosen_sft}, val)["sft"]
    assert UTI.metrics[0](val, [r["pred"] for r in rows]) == sft["chosen"]["value"]
    logged = read_jsonl(out / sft["chosen"]["stage"] / "run" / "val_metrics.jsonl")
    assert logged[sft["chosen"]["best_epoch"] - 1]["val_f1_yes"] == max(r["val_f1_yes"] for r in logged)

    saved = json.loads((out / "results.json").read_text())["tasks"]["uti_classification"]
    assert saved["_selection"] == json.loads(json.dumps(uti["_selection"]))
    md = (out / "report.md").read_text()
    assert "How settings were chosen:" in md and "Chosen: trial" in md and "the test split was not used" in md
    assert (out / "uti_classification_selection.png").is_file()


def _launch(tmp: Path, *args: str) -> subprocess.Popen:
    """``clinalign ARGS`` in its own process, with its own cache (and so its own test-split ledger)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CLINALIGN_CACHE": str(tmp / "cache")}
    return subprocess.Popen([sys.executable, "-m", "clinalign", *args], env=env, cwd=tmp, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(what, proc: subprocess.Popen, timeout: float = 600) -> None:
    t0 = time.monotonic()
    while not what():
        assert proc.poll() is None, f"exited {proc.returncode} first: {proc.stdout.read()[-3000:]}"
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_search_resumes_without_rerunning_finished_trials(tmp_path, tiny_model_dir, monkeypatch, sig):
    """SIGKILL (a dead worker) or SIGTERM (preemption: exit 75) while the second trial trains, after
    its first checkpoint: the re-run reuses the first trial's stage, runs the stopped trial's values
    again, resuming its stage from the checkpoint, then the third; three trials complete, each value once."""
    from clinalign.study.runner import run_study

    # 10 epochs of 3 steps, a checkpoint after each step: the signal lands at a step, not while final/ is
    # written, however fast the machine (with 2 epochs a fast one finished the trial before the signal)
    path = write_study(tmp_path, tiny_model_dir, n=24, sft={"epochs": 10, "batch_size": 4, "lora": False,
                                                             "max_length": 256, "save_every": 1},
                       tune={"trials": 3, "sampler": "grid", "pruner": "none", "sft": {"lr": [1e-3, 2e-3, 3e-3]}})
    trials = tmp_path / "out" / "stages" / "uti_classification"
    proc = _launch(tmp_path, "study", "run", str(path), "--out", "out")
    try:
        _wait_for(lambda: any((d / ".done").is_file() for d in trials.glob("sft-trial-*")) and any(
            not (d / ".done").exists() and any((d / "run" / "checkpoints").glob("step-*"))
            for d in trials.glob("sft-trial-*")), proc)
    finally:
        proc.send_signal(sig)
        log = proc.communicate(timeout=300)[0]
    if sig == signal.SIGTERM:  # the trainer checkpoints and the study stops, asking to be requeued
        assert proc.returncode == 75 and "SIGTERM at step" in log, log[-3000:]
    first = [d.name for d in trials.glob("sft-trial-*") if (d / ".done").is_file()]
    killed = [d.name for d in trials.glob("sft-trial-*") if not (d / ".done").exists()]
    assert len(first) == 1 and len(killed) == 1

    monkeypatch.setenv("CLINALIGN_CACHE", str(tmp_path / "cache"))
    logs: list[str] = []
    results = run_study(load_study(path), tmp_path / "out", log=logs.append)
    ran = results["study"]["stages_run"]
    assert f"uti_classification/{first[0]}" not in ran  # finished before the signal: reused, not trained again
    assert f"[bold]resume[/bold]    uti_classification/{killed[0]}" in logs
    sft = results["tasks"]["uti_classification"]["_selection"]["sft"]
    done = [t for t in sft["trials"] if t["state"] == "complete"]
    assert any(t["stage"].endswith(first[0]) for t in done)
    assert sorted(t["params"]["lr"] for t in done) == [1e-3, 2e-3, 3e-3]
    failed = [t for t in sft["trials"] if t["state"] == "fail"]
    assert len(failed) == 1 and failed[0]["stage"] is None  # the killed one, its values run again:
    retry = next(t for t in done if t.get("retry_of") == failed[0]["number"])
    assert retry["params"] == failed[0]["params"] and retry["stage"].endswith(killed[0])
    metrics = read_jsonl(trials / killed[0] / "run" / "metrics.jsonl")  # resumed, not restarted:
    assert [r["step"] for r in metrics] == list(range(1, len(metrics) + 1))


@pytest.mark.slow
def test_two_workers_sharing_one_storage_run_disjoint_trials(tmp_path, tiny_model_dir, monkeypatch):
    """Two `clinalign study tune` processes on one journal file: 4 trials in all, numbered 0-3, each run by
    one of them with its own values; `study run` afterwards selects from the finished search, copies the
    chosen trial's stage from the worker that ran it and trains no trial itself."""
    import optuna

    from clinalign.study.runner import run_study

    path = write_study(tmp_path, tiny_model_dir, n=24, sft={"epochs": 2, "batch_size": 4, "lora": False,
                                                             "max_length": 256},
                       tune={"trials": 4, "sampler": "random", "pruner": "none", "storage": "search.log",
                             "sft": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}})
    workers = [_launch(tmp_path, "study", "tune", str(path), "--out", f"w{i}") for i in range(2)]
    logs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    assert all("SFT: random search (Optuna, seed 0, no pruner) of 4 trials" in log for log in logs)

    (name,) = optuna.get_all_study_names(optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "search.log"))))
    study = optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "search.log"))))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3] and {t.state.name for t in trials} == {"COMPLETE"}
    assert len({t.params["lr"] for t in trials}) == 4
    by_worker = {w: {t.number for t in trials if Path(t.user_attrs["stage_dir"]).is_relative_to(tmp_path / w)}
                 for w in ("w0", "w1")}
    assert by_worker["w0"] and by_worker["w1"] and not by_worker["w0"] & by_worker["w1"]
    assert {t.user_attrs["pid"] for t in trials} == {w.pid for w in workers}

    monkeypatch.setenv("CLINALIGN_CACHE", str(tmp_path / "cache"))
    out_logs: list[str] = []
    results = run_study(load_study(path), tmp_path / "final", log=out_logs.append)
    chosen = results["tasks"]["uti_classification"]["_selection"]["sft"]["chosen"]
    best = max((t for t in trials), key=lambda t: (t.value, -t.number))
    assert chosen["trial"] == best.number and chosen["value"] == best.value
    assert any(m.startswith("[bold]copy[/bold]") and m.endswith(best.user_attrs["stage_dir"]) for m in out_logs)
    assert not any(m.startswith("[bold]run[/bold]") and "sft-trial" in m for m in out_logs)


@pytest.mark.slow
def test_the_best_epoch_weights_are_kept(tmp_path, tiny_model_dir):
    """A validation whose score peaks after epoch 2 of 3: final/ holds the weights of the end of epoch 2
    (those of a run stopped there), not the last ones; every evaluation was logged and heard."""
    from safetensors.torch import load_file

    from clinalign.data.pairs import sft_examples
    from clinalign.train.api import train
    from clinalign.train.loop import Validation

    write_jsonl(tmp_path / "sft.jsonl", sft_examples(UTI, planted(16)))
    settings = {"max_length": 256, "lr": 5e-3, "batch_size": 4, "scheduler": "constant", "lora": False}
    planted_scores, heard = iter([0.2, 0.9, 0.5]), []
    peak = Validation(lambda _m, _t: {"val_planted": next(planted_scores)}, {"val_planted": True}, primary="val_planted",
                      report=lambda k, scores: heard.append((k, scores["val_planted"])) is not None)
    final = train("sft", model=str(tiny_model_dir), data=tmp_path / "sft.jsonl", out=tmp_path / "three",
                  settings={**settings, "epochs": 3}, validation=peak)
    two = train("sft", model=str(tiny_model_dir), data=tmp_path / "sft.jsonl", out=tmp_path / "two",
                settings={**settings, "epochs": 2})
    logged = read_jsonl(tmp_path / "three" / "val_metrics.jsonl")
    assert [(r["step"], r["val_planted"], r["best"]) for r in logged] == [(4, 0.2, True), (8, 0.9, True), (12, 0.5, False)]
    assert heard == [(1, 0.2), (2, 0.9), (3, 0.5)]
    kept, at_two = load_file(str(final / "model.safetensors")), load_file(str(two / "model.safetensors"))
    last = load_file(str(next((tmp_path / "three" / "checkpoints").glob("step-*12")) / "model.safetensors"))
    assert all((kept[k] == at_two[k]).all() for k in kept)
    assert any((kept[k] != last[k]).any() for k in kept)


@pytest.mark.slow
def test_the_ledger_counts_the_configurations_a_test_split_was_scored_under(tmp_path, tiny_model_dir, monkeypatch):
    """1 after a study; 2 after a re-run with another training setting; still 2 after the first
    configuration is run again into a new output folder (the ledger lives in the cache, not the folder)."""
    from clinalign.study.runner import run_study

    monkeypatch.setenv("CLINALIGN_CACHE", str(tmp_path / "cache"))
    train = {"max_steps": 1, "batch_size": 4, "lora": True, "lora_rank": 4, "lora_alpha": 8, "max_length": 256}
    path = write_study(tmp_path, tiny_model_dir, n=24, sft=train, dpo={**train, "beta": 0.1})

    def uses(out: str, *overrides: str) -> dict:
        return run_study(load_study(path, list(overrides)), tmp_path / out, log=lambda _m: None
                         )["tasks"]["uti_classification"]["_test_uses"]

    first = uses("one")
    assert first["n_configurations"] == 1 and len(first["uses"]) == 1
    changed = uses("one", "sft.lr=2.0e-3")
    assert changed["n_configurations"] == 2 and changed["test_hash"] == first["test_hash"]
    again = uses("two")
    assert again["n_configurations"] == 2 and len(again["uses"]) == 3
    assert again["uses"][2]["config"] == first["uses"][0]["config"] != again["uses"][1]["config"]
    assert again["uses"][2]["out"] == str((tmp_path / "two").resolve())
    saved = json.loads((tmp_path / "two" / "results.json").read_text())["tasks"]["uti_classification"]
    assert saved["_test_uses"]["n_configurations"] == 2
    assert "This test split has been scored under 2 configurations" in saved["_verdict"]
    assert "p-values and intervals do not account for the other looks" in (tmp_path / "two" / "report.md").read_text()


def test_dpo_continues_the_adapter_shape_the_sft_search_selected(tmp_path, tiny_model_dir):
    """LoRA rank searched under tune.sft: the DPO stage, whose dpo: leaves the adapter's shape out, is
    checked and trained with the selected SFT adapter's shape (its layers make the prefix cache
    possible; its rank is saved in the DPO config.yaml); a shape key set under dpo: as well is refused
    at load, before any work, since the search may choose another value."""
    from clinalign.study.runner import run_study

    path = write_study(tmp_path, tiny_model_dir, n=32)
    raw = yaml.safe_load(path.read_text())
    raw["sft"] |= {"lora": True, "lora_rank": 4, "lora_alpha": 8, "lora_layers": 1, "epochs": 1, "prefix_cache": True}
    raw["dpo"] = {**{k: v for k, v in raw["dpo"].items() if k != "lora"}, "prefix_cache": True}
    raw["tune"] = {"trials": 2, "sampler": "grid", "pruner": "none", "sft": {"lora_rank": [2, 4]}}
    path.write_text(yaml.safe_dump(raw))
    results = run_study(load_study(path), tmp_path / "out", log=lambda _m: None)
    uti = results["tasks"]["uti_classification"]
    rank = uti["_selection"]["sft"]["chosen"]["params"]["lora_rank"]
    dpo_config = yaml.safe_load((tmp_path / "out" / "models" / "uti_classification" / "dpo" / "config.yaml").read_text())
    assert (dpo_config["lora"], dpo_config["lora_layers"], dpo_config["lora_rank"]) == (True, 1, rank)
    assert uti["_settings"]["dpo"]["lora_rank"] == rank

    raw["dpo"]["lora_rank"] = 4
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as e:
        load_study(path)
    assert str(e.value) == (f"{path}: dpo.lora_rank: the DPO stage continues the SFT adapter, whose lora_rank "
                            "the search chooses (tune.sft.lora_rank); leave lora_rank out of dpo:")


def test_the_readmes_tune_block_loads(tmp_path):
    """The block the README recommends for a user's own task is a valid study (with a task added)."""
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Choosing settings for your own task", 1)[1]
    block = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S)[1])
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({**block, "tasks": [{"id": "uti_classification"}]}))
    cfg = load_study(tmp_path / "mine.yaml")
    tune = cfg.tune_settings(cfg.tasks[0])
    assert (tune.trials, tune.sampler, tune.pruner) == (8, "tpe", "median")
    assert set(tune.sft) == {"lr", "lora_layers"} and set(tune.dpo) == {"lr", "beta"} and cfg.split.val == 0.2
    # the real-text check (benchmarks/real_text.py --add) runs this block, with its own split
    bench = yaml.safe_load((Path(__file__).parents[1] / "benchmarks" / "real_text_tune.yaml").read_text())
    assert bench == {k: v for k, v in block.items() if k != "split"}


@pytest.mark.slow
def test_a_trial_whose_training_stops_is_a_failed_trial_and_the_search_goes_on(tmp_path, tiny_model_dir, monkeypatch):
    """Training that stops for its settings (here a stand-in for divergence at lr 1.0) fails that trial
    only: it counts against the budget, its reason is kept, and the other value is chosen."""
    from clinalign.errors import TrainingStopped
    from clinalign.study import pipeline
    from clinalign.study.runner import run_study

    real = pipeline.run_trainer

    def run_trainer(stage, model, data, out, settings, *args, **kw):
        if settings["lr"] == 1.0:
            raise TrainingStopped("diverged at step 2 (loss 9.1, started at 7.7): lower lr (was 1.0)")
        return real(stage, model, data, out, settings, *args, **kw)

    monkeypatch.setattr(pipeline, "run_trainer", run_trainer)
    path = write_study(tmp_path, tiny_model_dir, n=24, sft={"epochs": 1, "batch_size": 4, "lora": False, "max_length": 256},
                       tune={"trials": 2, "sampler": "grid", "pruner": "none", "sft": {"lr": [1.0, 1e-3]}})
    sft = run_study(load_study(path), tmp_path / "out", log=lambda _m: None
                    )["tasks"]["uti_classification"]["_selection"]["sft"]
    assert [(t["params"]["lr"], t["state"]) for t in sorted(sft["trials"], key=lambda t: t["params"]["lr"])] == [
        (1e-3, "complete"), (1.0, "fail")]
    assert next(t for t in sft["trials"] if t["state"] == "fail")["stopped"].startswith("diverged at step 2")
    assert sft["chosen"]["params"] == {"lr": 1e-3}


def test_the_report_says_how_settings_were_chosen_and_how_often_the_test_split_was_used():
    from clinalign.report.selection import selection_data, selection_lines, selection_png, test_uses_text

    searched = {"space": {"lr": {"low": 1e-4, "high": 3e-3, "log": True, "step": None}, "lora_layers": [6, 12]},
                "budget": {"trials": 3, "timeout_s": None}, "sampler": "tpe", "pruner": "median", "seed": 0,
                "objective": {"metric": "f1_yes", "split": "validation", "higher_is_better": True},
                "validation_records": 32, "storage": "sqlite:///x", "search": "s",
                "trials": [{"number": 0, "params": {"lr": 1e-3, "lora_layers": 6}, "state": "complete", "value": 0.8,
                            "epoch_scores": [0.7, 0.8], "best_epoch": 2, "stage": "stages/t/sft-trial-a"},
                           {"number": 1, "params": {"lr": 2e-3, "lora_layers": 12}, "state": "complete", "value": 0.9,
                            "epoch_scores": [0.9, 0.85], "best_epoch": 1, "stage": "stages/t/sft-trial-b"},
                           {"number": 2, "params": {"lr": 1e-4, "lora_layers": 6}, "state": "pruned", "value": None,
                            "epoch_scores": [0.2], "best_epoch": 1, "stage": "stages/t/sft-trial-c"}],
                "chosen": {"trial": 1, "params": {"lr": 2e-3, "lora_layers": 12}, "value": 0.9, "best_epoch": 1}}
    task = {"_selection": {"sft": searched, "dpo": {"fixed": {"lr": 5e-5}, "reason": "fixed in the study file"}},
            "_test_uses": {"test_hash": "h", "n_configurations": 1, "uses": []}}
    assert selection_lines(task) == [
        "SFT: TPE search (Optuna, seed 0, median pruner) of 3 trials over lr in [0.0001, 0.003], log scale; "
        "lora_layers in {6, 12}, each scored after every epoch by f1_yes on the 32 validation records (higher is "
        "better; the test split was not used); 2 complete, 1 pruned. Chosen: trial 1 (lr=0.002, lora_layers=12), "
        "validation f1_yes 0.900 at epoch 1, whose weights were kept.",
        "DPO: settings fixed in the study file (lr=5e-05)."]
    assert test_uses_text(task) == "This test split has been scored under 1 configuration."
    task["_test_uses"] = [{"fold": 0, "test_hash": "h0", "n_configurations": 1, "uses": []},
                          {"fold": 1, "test_hash": "h1", "n_configurations": 3, "uses": []}]
    text = test_uses_text(task)
    assert text.startswith("fold 0: This test split has been scored under 1 configuration. fold 1: This test split "
                           "has been scored under 3 configurations (test-split ledger): a result chosen among")
    data = selection_data(task)
    assert [r[1:4] + r[5:] for r in data["rows"]] == [["0", "lr=0.001, lora_layers=6", "complete", "0.800", ""],
                                                      ["1", "lr=0.002, lora_layers=12", "complete", "0.900", "chosen"],
                                                      ["2", "lr=0.0001, lora_layers=6", "pruned", "", ""]]
    assert selection_png("t", task)[:8] == b"\x89PNG\r\n\x1a\n"
    assert selection_png("t", {"_selection": task["_selection"] | {"sft": task["_selection"]["dpo"]}}) is None
    assert selection_lines({}) == [] and test_uses_text({}) is None
