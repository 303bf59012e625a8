"""Tasks declared in YAML: loading, record validation, parser, metrics, pair builders and the errors a
user sees for a bad declaration (file, line, key)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from clinalign.cli import run as cli
from clinalign.data.io import read_records
from clinalign.data.pairs import preference_pairs
from clinalign.errors import DataError, TaskError
from clinalign.synthetic import generate
from clinalign.tasks import get_task
from clinalign.tasks.declared import fact_recall, omit_fact, rouge_l, truncate_half

EXAMPLES = Path(__file__).resolve().parents[1] / "configs" / "tasks"

CLS = """id: triage_note
type: classification
text_fields: [note, vitals]
label_field: acuity
labels: [high, medium, low_risk]
positive_label: high
prompt: "Vitals: {vitals}\\nNote: {note}\\nAcuity?"
"""


def _task(tmp_path: Path, text: str = CLS, name: str = "task.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return get_task(str(path)), path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_examples_load():
    cls = get_task(str(EXAMPLES / "example_classification.yaml"))
    gen = get_task(EXAMPLES / "example_generation.yaml")
    assert cls.id == "sepsis_note" and cls.choices == ("sepsis", "no_sepsis") and cls.is_closed_set
    assert [m.name for m in cls.metrics] == ["f1_sepsis", "f1_macro", "accuracy"]
    assert gen.id == "radiology_impression" and gen.choices is None and gen.max_new_tokens == 96
    assert [m.name for m in gen.metrics] == ["rouge_l", "fact_recall"]
    assert gen.default_strategy == "omit_fact" and cls.default_strategy == "wrong_label"
    rec = cls.record_type(id="1", note="Febrile, lactate 4.1.", label="sepsis")
    assert cls.prompt(rec).endswith("no_sepsis.\n\nFebrile, lactate 4.1.\n")


def test_classification_records_prompt_and_file_line_errors(tmp_path: Path):
    task, _ = _task(tmp_path)
    good = {"id": "1", "note": "chest pain", "vitals": "HR 120", "acuity": "high"}
    recs = read_records(_jsonl(tmp_path / "ok.jsonl", [good, {**good, "id": "2", "acuity": "low_risk"}]),
                        task.record_type)
    assert task.prompt(recs[0]) == "Vitals: HR 120\nNote: chest pain\nAcuity?"
    assert task.answer(recs[1]) == "low_risk" and task.stratum(recs[1]) == "low_risk"
    bad = _jsonl(tmp_path / "bad.jsonl", [
        good,
        {**good, "id": "2", "acuity": "urgent"},
        {"id": "3", "note": "x", "acuity": "low_risk"},
        {**good, "id": "4", "note": "   "},
    ])
    with pytest.raises(DataError) as e:
        read_records(bad, task.record_type)
    problems = e.value.problems
    assert len(problems) == 3
    assert problems[0].startswith(f"{bad}:2: acuity: ") and "'high', 'medium' or 'low_risk'" in problems[0]
    assert problems[1] == f"{bad}:3: vitals: missing field"
    assert problems[2] == f"{bad}:4: note: Value error, empty text"
    csv = tmp_path / "d.csv"
    csv.write_text("id,note,vitals,acuity\n1,chest pain,HR 120,high\n2,cough,HR 80,mild\n")
    with pytest.raises(DataError, match=r"d.csv:3: acuity: "):
        read_records(csv, task.record_type)


def test_numeric_labels_read_as_text(tmp_path: Path):
    task, _ = _task(tmp_path, CLS.replace("[high, medium, low_risk]", "[0, 1]").replace("positive_label: high",
                                                                                        "positive_label: 1"))
    assert task.choices == ("0", "1")
    rec = read_records(_jsonl(tmp_path / "n.jsonl", [{"id": "a", "note": "n", "vitals": "v", "acuity": 1}]),
                       task.record_type)[0]
    assert task.answer(rec) == "1"


@pytest.mark.parametrize("text, label", [
    ("High.", "high"), ("**HIGH**", "high"), ("Acuity: low risk", "low_risk"), ("low-risk", "low_risk"),
    ("low_risk", "low_risk"), ("medium, I think. Medium.", "medium"),
    ("high or medium", None), ("unclear", None), ("", None), ("highest", None),
])
def test_classification_parser(tmp_path: Path, text: str, label: str | None):
    task, _ = _task(tmp_path)
    assert task.parse(text) == label


def test_parser_prefers_the_longer_label(tmp_path: Path):
    task = get_task(str(EXAMPLES / "example_classification.yaml"))
    assert task.parse("No sepsis.") == "no_sepsis" and task.parse("Sepsis") == "sepsis"
    assert task.parse("sepsis or no_sepsis") is None


def test_classification_metrics_and_pairs(tmp_path: Path):
    task, _ = _task(tmp_path)
    golds = ["high", "low_risk", "high", "medium"]
    recs = [task.record_type(id=str(i), note="n", vitals="v", acuity=g) for i, g in enumerate(golds)]
    preds = ["high", "high", None, "medium"]
    scores = task.evaluate(recs, preds)
    # high: tp 1, gold 2, predicted 2 -> 0.5; low_risk: 0; medium: 1 -> macro 0.5; accuracy 2/4
    assert scores == pytest.approx({"f1_high": 0.5, "f1_macro": 0.5, "accuracy": 0.5})
    by_name = {m.name: m for m in task.metrics}
    assert by_name["accuracy"].test == "mcnemar" and by_name["f1_macro"].test == "paired_bootstrap"
    assert by_name["accuracy"].per_item(recs[0], "high") == 1.0
    rng = random.Random(3)
    wrong = [task.rejected_builders["wrong_label"](recs[0], rng) for _ in range(30)]
    assert set(wrong) == {"medium", "low_risk"}
    one_each = preference_pairs(task, recs, strategy="wrong_label", seed=1)
    assert len(one_each) == 4 and all(p["chosen"] != p["rejected"] for p in one_each)
    # the default is prior-neutral: 3 labels x ceil(4 / 3) pairs, each label chosen and rejected twice
    pairs = preference_pairs(task, recs, seed=1)
    assert len(pairs) == 6 and all(p["chosen"] != p["rejected"] for p in pairs)
    assert Counter(p["chosen"] for p in pairs) == Counter(p["rejected"] for p in pairs) == {
        "high": 2, "medium": 2, "low_risk": 2}
    assert pairs == preference_pairs(task, recs, seed=1)
    only_acc, _ = _task(tmp_path, CLS + "metrics: [accuracy]\n", "acc.yaml")
    assert [m.name for m in only_acc.metrics] == ["accuracy"]


def test_declared_tasks_have_no_generator(tmp_path: Path):
    task, _ = _task(tmp_path)
    with pytest.raises(TaskError, match="has no synthetic generator; bring your data"):
        generate(task, 3, 0)
    with pytest.raises(TaskError, match="no synthetic generator"):
        generate(get_task(str(EXAMPLES / "example_generation.yaml")), 1, 0)


def test_generation_metrics_and_builders(tmp_path: Path):
    task = get_task(str(EXAMPLES / "example_generation.yaml"))
    rec = task.record_type(id="1", findings="Right lower lobe opacity. No effusion.",
                           impression="Right lower lobe pneumonia. No pleural effusion.",
                           key_findings=["right lower lobe pneumonia", "no pleural effusion"])
    assert task.prompt(rec).endswith("findings:\nRight lower lobe opacity. No effusion.\n")
    # rouge-score tokens: [right lower lobe pneumonia no pleural effusion] vs [pneumonia in the right lower lobe]:
    # LCS "right lower lobe" = 3, precision 3/6, recall 3/7
    m = task.evaluate([rec, rec], ["Pneumonia in the right lower lobe.", None])
    f = 2 * (3 / 6) * (3 / 7) / (3 / 6 + 3 / 7)
    assert m["rouge_l"] == pytest.approx(f / 2) and m["fact_recall"] == 0.0
    assert task.evaluate([rec], [rec.impression]) == {"rouge_l": pytest.approx(1.0), "fact_recall": 1.0}
    assert task.evaluate([rec], ["RIGHT  lower lobe pneumonia"])["fact_recall"] == 0.5
    omitted = task.rejected_builders["omit_fact"](rec, random.Random(0))
    assert omitted in ("Right lower lobe pneumonia.", "No pleural effusion.")
    assert fact_recall(rec.key_findings, omitted) == 0.5
    assert task.rejected_builders["truncate"](rec, random.Random(0)) == "Right lower lobe"
    assert task.parse("<|im_start|>assistant\nPneumonia.<|im_end|>") == "Pneumonia."
    assert task.parse("  Pneumonia.<|im_end|>") == "Pneumonia." and task.parse("<|im_end|>") is None
    with pytest.raises(DataError, match=r"g.jsonl:1: key_findings.1: Value error, empty text"):
        read_records(_jsonl(tmp_path / "g.jsonl", [{"id": "1", "findings": "x", "impression": "y",
                                                    "key_findings": ["ok", " "]}]), task.record_type)


def test_rouge_fact_recall_and_builders_directly():
    assert rouge_l("a b c d", "a b c d") == pytest.approx(1.0) and rouge_l("a b", "") == 0.0
    assert rouge_l("the cat sat", "dog ran") == 0.0
    assert fact_recall([], "anything") == 1.0 and fact_recall(["x"], None) == 0.0
    one = omit_fact("Stable right lower lobe nodule, no follow-up needed.", ["stable right lower lobe nodule"],
                    random.Random(0))
    assert one == "no follow-up needed."
    assert omit_fact("Normal chest.", ["nodule"], random.Random(0)) == truncate_half("Normal chest.") == "Normal"
    assert truncate_half("Normal.") == "Normal."  # nothing to cut: pairs skip a rejected equal to the chosen


@pytest.mark.parametrize("text, where, message", [
    (CLS.replace("labels:", "labelz:"), ":5: labelz", "unknown key (did you mean 'labels'? allowed:"),
    (CLS.replace("labels: [high, medium, low_risk]\n", ""), ": labels", "missing key"),
    (CLS.replace("classification", "regression"), ":2: type", "'regression' is not a task type"),
    ("id: x\nprompt: '{note}'\n", ": type", "missing key"),
    (CLS.replace("positive_label: high", "positive_label: urgent"), ":6: positive_label", "is not one of labels"),
    (CLS.replace("{note}", "{body}"), ":7: prompt", "placeholder {body} is not a text field"),
    (CLS.replace("{note}", "{note"), ":7: prompt", "not a valid template"),
    (CLS.replace('"Vitals: {vitals}\\nNote: {note}\\nAcuity?"', "Acuity?"), ":7: prompt", "never includes"),
    (CLS + "metrics: [auroc]\n", ":8: metrics", "unknown metric 'auroc'"),
    (CLS.replace("positive_label: high\n", "") + "metrics: [f1]\n", ":7: metrics", "needs positive_label"),
    (CLS.replace("[high, medium, low_risk]", "[yes, no]"), ":5: labels", "quote labels"),
    (CLS.replace("[high, medium, low_risk]", "[high]"), ":5: labels", "at least 2 items"),
    (CLS.replace("[high, medium, low_risk]", "[high, High]"), ":5: labels", "differ only in case"),
    (CLS.replace("label_field: acuity", "label_field: note"), ":3: text_fields", "must be distinct"),
    (CLS.replace("[note, vitals]", "[note, vital signs]"), ":3: text_fields.1", "not a valid name"),
    (CLS.replace("id: triage_note", "id: my task"), ":1: id", "'my task' is not a valid task id"),
    ("id: x\ntype: generation\ntext_field: a\nreference_field: b\nprompt: '{a}'\nmetrics: [fact_recall]\n",
     ":6: metrics", "needs facts_field"),
    ("id: x\ntype: generation\ntext_field: a\nprompt: '{a}'\n", ": reference_field", "missing key"),
    ("id: x\ntype: [classification\n", ":3", "not valid YAML"),
    ("- just\n- a list\n", "", "expected a mapping"),
])
def test_bad_declarations_name_file_line_and_key(tmp_path: Path, text: str, where: str, message: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TaskError) as e:
        get_task(str(path))
    msg = str(e.value)
    assert msg.startswith(f"{path}{where}"), msg
    assert message in msg and "\n" not in msg


def test_missing_file_and_unknown_task(tmp_path: Path):
    with pytest.raises(TaskError, match=r"nope.yaml: task file not found"):
        get_task(str(tmp_path / "nope.yaml"))
    with pytest.raises(TaskError, match="unknown task 'nope'"):
        get_task("nope")


def test_cli_validate_with_task_file(tmp_path: Path, capsys):
    task_file = EXAMPLES / "example_classification.yaml"
    data = _jsonl(tmp_path / "notes.jsonl", [{"id": "1", "note": "lactate 4", "label": "sepsis"},
                                              {"id": "2", "note": "sprain", "label": "maybe"}])
    assert cli(["data", "validate", "--task-file", str(task_file), str(data)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:2: label:" in err
    _jsonl(data, [{"id": "1", "note": "lactate 4", "label": "sepsis"}])
    assert cli(["data", "validate", "--task-file", str(task_file), str(data)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(CLS.replace("labels:", "labelz:"))
    assert cli(["data", "validate", "--task-file", str(bad), str(data)]) == 2
    assert f"error: {bad}:5: labelz: unknown key" in capsys.readouterr().err
