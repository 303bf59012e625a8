"""A hospital's own Python task, used without editing clinalign: ``module:attr`` and the ``clinalign.tasks``
entry-point group, their one-line errors, and the example task (docs/examples/readmission_task.py,
which has no synthetic generator) through the data commands and a study with ``data:``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from clinalign.cli import run as cli
from clinalign.errors import ConfigError, TaskError
from clinalign.study.config import load_study
from clinalign.synthetic import generator_for
from clinalign.tasks import get_task

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
SPEC = "readmission_task:Readmission"


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def readmission_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Discharge notes whose label follows the risk factors they state (prior admissions, how the
    patient left, follow-up), balanced, each one different."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        risky = i % 2 == 0
        dx = rng.choice(("heart failure", "COPD exacerbation", "pneumonia", "cellulitis", "hip fracture",
                         "urinary tract infection", "diabetic ketoacidosis", "atrial fibrillation"))
        prior = rng.randint(2, 6) if risky else rng.randint(0, 1)
        left = rng.choice(("against medical advice", "home alone without services", "to a shelter") if risky
                          else ("home with family", "home with home health", "to rehabilitation"))
        follow = "none arranged" if risky else f"clinic in {rng.randint(3, 10)} days"
        rows.append({"id": f"adm-{i:04d}", "readmitted": "yes" if risky else "no",
                     "note": f"{rng.randint(35, 94)}-year-old admitted for {dx}, {rng.randint(1, 15)} days in hospital. "
                             f"{prior} admissions in the past year. Discharged {left}. Follow-up: {follow}. "
                             f"Medications at discharge: {rng.randint(2, 14)}."})
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(capsys, *args: str) -> tuple[int, str]:
    code = cli(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_module_attr_loads_a_task_class_or_instance(examples_on_path, tmp_path: Path, monkeypatch):
    task = get_task(SPEC)
    assert type(task).__name__ == "Readmission" and task.id == "readmission" and task.choices == ("yes", "no")
    rec = task.record_type(id="a", note="Discharged home.", readmitted="yes")
    assert task.parse("**Yes.**") == "yes" and task.parse("yes or no") is None
    assert task.evaluate([rec, rec], ["yes", "no"]) == {"f1_yes": pytest.approx(2 / 3), "accuracy": 0.5}
    assert generator_for(task) is None  # a definition only: its records come from files
    (tmp_path / "hospital_tasks.py").write_text("from readmission_task import Readmission\n\n"
                                                "class Registry:\n    readmission = Readmission()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert get_task("hospital_tasks:Registry.readmission").id == "readmission"  # an instance, dotted attr


BROKEN = {
    "needs_missing_dep": "import not_installed_dependency\n",
    "not_tasks": "from readmission_task import Readmission, ReadmissionRecord\nfrom clinalign.tasks import Task\n"
                 "def make_task():\n    return Readmission()\n"
                 "class Half(Task):  # no prompt, answer, parse, ...\n    id = 'half'\n",
}


@pytest.mark.parametrize(("spec", "message"), [
    ("no_such_module_x:Task", "task 'no_such_module_x:Task': no module named 'no_such_module_x' (install the "
                              "package that holds it, or add its folder to PYTHONPATH)"),
    ("needs_missing_dep:Task", "task 'needs_missing_dep:Task': importing 'needs_missing_dep' failed: No module "
                               "named 'not_installed_dependency'"),
    ("readmission_task:Readmision", "task 'readmission_task:Readmision': 'readmission_task' has no attribute "
                                    "'Readmision'"),
    ("not_tasks:ReadmissionRecord", "task 'not_tasks:ReadmissionRecord': class 'ReadmissionRecord' is not "
                                    "a clinalign Task (subclass clinalign.tasks.Task)"),
    ("not_tasks:make_task", "task 'not_tasks:make_task': function 'make_task' is not a clinalign Task"),
    ("not_tasks:Half", "task 'not_tasks:Half': cannot create Half() (Can't instantiate abstract class Half"),
    ("readmission_task:", "task 'readmission_task:': expected module:attr, e.g. my_pkg.tasks:Readmission"),
    ("no_such_task", "unknown task 'no_such_task': expected one of uti_classification, hyponatremia_urine, "
                     "clinical_reasoning, discharge_summary, message_triage, a task file (.yaml) or module:attr"),
])
def test_a_task_that_cannot_load_is_one_clear_line(examples_on_path, tmp_path: Path, monkeypatch, capsys,
                                                   spec: str, message: str):
    for name, source in BROKEN.items():
        (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TaskError) as e:
        get_task(spec)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    code, out = run(capsys, "data", "validate", spec, str(tmp_path / "none.jsonl"))
    assert code == 2 and out == f"error: {e.value}\n"


def _dist_info(site: Path, package: str, entries: dict[str, str]) -> None:
    """An installed distribution as importlib.metadata finds it on sys.path: a .dist-info folder with
    METADATA and entry_points.txt (what pip writes for `[project.entry-points."clinalign.tasks"]`)."""
    info = site / f"{package}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[clinalign.tasks]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))


def test_an_installed_package_registers_tasks_by_name(examples_on_path, tmp_path: Path, monkeypatch, capsys):
    site = tmp_path / "site"
    _dist_info(site, "hospital_tasks", {"readmission": SPEC, "sepsis": "hospital_sepsis:Sepsis"})
    monkeypatch.syspath_prepend(str(site))
    task = get_task("readmission")
    assert type(task).__name__ == "Readmission" and task.id == "readmission"
    with pytest.raises(TaskError, match=r"^task 'sepsis' \(entry point hospital_sepsis:Sepsis\): no module named "
                                        r"'hospital_sepsis'"):
        get_task("sepsis")
    with pytest.raises(TaskError, match=r"expected one of uti_classification, .*message_triage, readmission, "
                                        r"sepsis, a task file"):
        get_task("sepssis")
    rows = write_rows(tmp_path / "notes.jsonl", readmission_rows(10, seed=0))
    code, out = run(capsys, "data", "validate", "readmission", str(rows))
    assert code == 0 and "readmission" in out and "10" in out
    _dist_info(tmp_path / "other", "other_tasks", {"readmission": "other:Readmission"})
    monkeypatch.syspath_prepend(str(tmp_path / "other"))
    with pytest.raises(TaskError, match="task 'readmission' is registered by more than one installed package"):
        get_task("readmission")


def test_a_task_without_a_generator_goes_through_the_data_commands(examples_on_path, tmp_path: Path, capsys):
    rows = readmission_rows(40, seed=1)
    data = write_rows(tmp_path / "notes.jsonl", rows)
    code, out = run(capsys, "data", "validate", SPEC, str(data))
    assert code == 0 and "readmission" in out and "yes 50%" in out
    code, out = run(capsys, "data", "split", SPEC, str(data), "--out", str(tmp_path / "split"), "--val", "0.1",
                    "--test", "0.3")
    assert code == 0, out
    parts = {k: [json.loads(x) for x in (tmp_path / "split" / f"{k}.jsonl").read_text().splitlines()]
             for k in ("train", "val", "test")}
    assert sorted(r["id"] for p in parts.values() for r in p) == sorted(r["id"] for r in rows)
    assert {r["readmitted"] for r in parts["test"]} == {"yes", "no"}  # stratified
    train = tmp_path / "split" / "train.jsonl"
    code, out = run(capsys, "data", "sft", SPEC, str(train), "--out", str(tmp_path / "sft.jsonl"))
    sft = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert code == 0 and [s["completion"] for s in sft] == [r["readmitted"] for r in parts["train"]]
    assert all(s["prompt"].startswith("Read this discharge note.") for s in sft)
    gold = {r["id"]: r["readmitted"] for r in parts["train"]}
    for strategy in ("balanced", "wrong_label"):  # the default for a closed set, and the task's own builder
        code, out = run(capsys, "data", "pairs", SPEC, str(train), "--strategy", strategy,
                        "--out", str(tmp_path / "pairs.jsonl"))
        pairs = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
        assert code == 0 and pairs and {p["strategy"] for p in pairs} == {strategy}
        assert all(p["chosen"] == gold[p["id"].split(":")[0]] != p["rejected"] in ("yes", "no") for p in pairs)
    assert sorted(p["id"].split(":")[0] for p in pairs) == sorted(gold)  # wrong_label: one pair per record
    out_file = tmp_path / "generated.jsonl"
    code, out = run(capsys, "data", "generate", SPEC, "--n", "5", "--out", str(out_file))
    assert code == 2 and not out_file.exists()
    assert out == ("error: task 'readmission' has no synthetic generator; bring your data (a record file: "
                   "`data:` in a study, FILE to the data commands)\n")


def _study(tmp_path: Path, model: Path, task: dict) -> Path:
    train = {"epochs": 1, "batch_size": 4, "lr": 3e-3, "lora": True, "lora_rank": 4, "lora_alpha": 8,
             "max_length": 192}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "plugin", "model": str(model), "split": {"val": 0.15, "test": 0.35, "seed": 0},
        "sft": train, "dpo": {**train, "beta": 0.1}, "eval": {"batch_size": 8, "n_boot": 100},
        "tasks": [task]}))
    return path


def test_a_study_needs_data_for_a_task_without_a_generator(examples_on_path, tmp_path: Path, tiny_model_dir: Path):
    with pytest.raises(ConfigError, match=r"study.yaml: tasks.readmission_task:Readmission.data: task 'readmission' has no synthetic "
                                          r"generator; give its records as data: FILE"):
        load_study(_study(tmp_path, tiny_model_dir, {"id": SPEC, "n": 40}))
    with pytest.raises(ConfigError, match=r"study.yaml: tasks.0.id: task 'readmission_task:Nope': "
                                          r"'readmission_task' has no attribute 'Nope'"):
        load_study(_study(tmp_path, tiny_model_dir, {"id": "readmission_task:Nope", "data": "x.jsonl"}))


@pytest.mark.slow
def test_mini_study_on_the_example_task_through_module_attr(examples_on_path, tmp_path: Path,
                                                            tiny_model_dir: Path):
    from clinalign.study.runner import run_study

    write_rows(tmp_path / "notes.jsonl", readmission_rows(40, seed=2))
    cfg = load_study(_study(tmp_path, tiny_model_dir, {"id": SPEC, "data": "notes.jsonl"}))
    out = tmp_path / "out"
    results = run_study(cfg, out, log=lambda _m: None)
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["tasks"]) == {"readmission"}
    test = [json.loads(x) for x in (out / "data" / "readmission" / "test.jsonl").read_text().splitlines()]
    for system in ("base", "sft", "dpo", "classical"):
        rows = [json.loads(x) for x in (out / "predictions" / "readmission" / f"{system}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == [r["id"] for r in test]
        accuracy = sum(r["pred"] == r["gold"] for r in rows) / len(rows)
        assert saved["tasks"]["readmission"]["accuracy"][system]["value"] == pytest.approx(accuracy)
        assert 0.0 <= saved["tasks"]["readmission"]["f1_yes"][system]["value"] <= 1.0
    assert "mcnemar" in saved["tasks"]["readmission"]["accuracy"]["test"].lower()
    assert "readmission" in (out / "report.md").read_text()
    assert results["study"]["stages_cached"] == []

