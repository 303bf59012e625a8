"""The data commands end to end through the CLI: errors name file:line: field, exit 2, write nothing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from clinalign.cli import run as cli
from clinalign.data.io import read_records
from clinalign.data.pairs import preference_pairs
from clinalign.data.splits import split_records
from clinalign.synthetic import generate
from clinalign.tasks import get_task


class Result:
    def __init__(self, code: int, output: str):
        self.exit_code, self.output = code, output


@pytest.fixture
def run(capsys):
    def _run(*args: str) -> Result:
        code = cli(list(args))
        out = capsys.readouterr()
        return Result(code, out.out + out.err)

    return _run


def good_line(i: int, label: str = "yes") -> str:
    return json.dumps({"id": f"r{i}", "text": f"Patient {i} with dysuria and positive nitrites.", "label": label})


@pytest.fixture
def uti_file(tmp_path: Path, run) -> Path:
    path = tmp_path / "uti.jsonl"
    res = run("data", "generate", "uti_classification", "--n", "200", "--seed", "7", "--out", str(path))
    assert res.exit_code == 0, res.output
    return path


def test_generate_is_deterministic_and_validates(tmp_path: Path, uti_file: Path, run):
    again = tmp_path / "again.jsonl"
    run("data", "generate", "uti_classification", "--n", "200", "--seed", "7", "--out", str(again))
    assert again.read_bytes() == uti_file.read_bytes()
    other = tmp_path / "other.jsonl"
    run("data", "generate", "uti_classification", "--n", "200", "--seed", "8", "--out", str(other))
    assert other.read_bytes() != uti_file.read_bytes()
    res = run("data", "validate", "uti_classification", str(uti_file))
    assert res.exit_code == 0, res.output
    assert "200" in res.output


@pytest.mark.parametrize(
    "line, expected",
    [
        ("{not json", ":2: record: invalid JSON"),
        (json.dumps({"id": "x", "label": "yes"}), ":2: text: missing field"),
        (json.dumps({"id": "x", "text": 42, "label": "yes"}), ":2: text: "),
        (json.dumps({"id": "x", "text": "dysuria", "label": "maybe"}), ":2: label: "),
        (json.dumps({"id": "x", "text": "", "label": "no"}), ":2: text: "),
        (json.dumps({"id": "r0", "text": "another note", "label": "no"}), ":2: id: duplicate id 'r0'"),
        ("[1, 2]", ":2: record: expected a JSON object"),
        # a line cut off at its end is reported at its end, not where the cut string began
        ('{"id": "x", "text": "dysuria, fre',
         ":2: record: invalid JSON (string opened at column 21 is not closed; the line ends at column 34)"),
        ('{"id": "x", "label": "yes"', ":2: record: invalid JSON (Expecting ',' delimiter at column 27, "
                                       "the end of the line: is the line truncated?)"),
    ],
)
def test_validate_reports_file_line_field(tmp_path: Path, line: str, expected: str, run):
    path = tmp_path / "bad.jsonl"
    path.write_text(good_line(0) + "\n" + line + "\n" + good_line(2) + "\n")
    res = run("data", "validate", "uti_classification", str(path))
    assert res.exit_code == 2
    assert f"{path}{expected}" in res.output


def test_validate_non_utf8_and_csv(tmp_path: Path, run):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(good_line(0).encode() + b"\n" + b'{"id": "x", "text": "caf\xe9", "label": "no"}\n')
    res = run("data", "validate", "uti_classification", str(path))
    assert res.exit_code == 2
    assert f"{path}:2: record: not valid UTF-8" in res.output

    csv_path = tmp_path / "notes.csv"
    csv_path.write_text('id,text,label\na1,"Dysuria, frequency; UA nitrite positive",yes\na2,Sprained ankle,maybe\n')
    res = run("data", "validate", "uti_classification", str(csv_path))
    assert res.exit_code == 2
    assert f"{csv_path}:3: label: " in res.output
    csv_path.write_text('id,text,label\na1,"Dysuria, frequency; UA nitrite positive",yes\na2,Sprained ankle,no\n')
    assert run("data", "validate", "uti_classification", str(csv_path)).exit_code == 0


def test_bad_input_writes_nothing(tmp_path: Path, run):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good_line(0) + "\n{oops\n")
    for cmd in (["sft", "--out", str(tmp_path / "sft.jsonl")], ["pairs", "--out", str(tmp_path / "p.jsonl")],
                ["split", "--out", str(tmp_path / "splits")]):
        res = run("data", cmd[0], "uti_classification", str(bad), *cmd[1:])
        assert res.exit_code == 2
        assert f"error: {bad}:2: record: invalid JSON" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_split_is_stratified_and_seeded(uti_file: Path):
    task = get_task("uti_classification")
    recs = read_records(uti_file, task.record_type)
    parts = split_records(task, recs, val=0.1, test=0.2, seed=3)
    ids = [r.id for p in parts.values() for r in p]
    assert sorted(ids) == sorted(r.id for r in recs)  # a partition: nothing lost, nothing twice
    share = Counter(r.label for r in recs)["yes"] / len(recs)
    for name, frac in (("test", 0.2), ("val", 0.1)):
        part = parts[name]
        assert abs(len(part) - frac * len(recs)) <= 2
        assert abs(Counter(r.label for r in part)["yes"] / len(part) - share) < 0.05
    assert [r.id for r in split_records(task, recs, seed=3)["test"]] == [r.id for r in parts["test"]]
    assert [r.id for r in split_records(task, recs, seed=4)["test"]] != [r.id for r in parts["test"]]


def test_split_cli_and_pairs_and_sft(tmp_path: Path, uti_file: Path, run):
    res = run("data", "split", "uti_classification", str(uti_file), "--out", str(tmp_path / "s"), "--seed", "1")
    assert res.exit_code == 0, res.output
    assert {p.name for p in (tmp_path / "s").iterdir()} == {"train.jsonl", "val.jsonl", "test.jsonl"}
    res = run("data", "pairs", "uti_classification", str(uti_file), "--out", str(tmp_path / "p.jsonl"))
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 200
    assert all(r["chosen"] != r["rejected"] and {"prompt", "chosen", "rejected"} <= r.keys() for r in rows)
    assert {r["chosen"] for r in rows} == {"yes", "no"}
    res = run("data", "sft", "uti_classification", str(uti_file), "--out", str(tmp_path / "sft.jsonl"))
    rows = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert len(rows) == 200 and all(r["completion"] in ("yes", "no") for r in rows)


def test_pairs_unknown_strategy_is_an_error(uti_file: Path, tmp_path: Path, run):
    res = run("data", "pairs", "uti_classification", str(uti_file), "--out",
              str(tmp_path / "p.jsonl"), "--strategy", "nonsense")
    assert res.exit_code == 2
    assert "error: unknown strategy 'nonsense'" in res.output
    assert not (tmp_path / "p.jsonl").exists()


def test_all_strategies_for_every_task():
    from clinalign.tasks import all_tasks

    for task in all_tasks():
        recs = generate(task, 20, seed=1)
        pairs = preference_pairs(task, recs, strategy="all", seed=0)
        assert {p["strategy"] for p in pairs} == set(task.rejected_builders), task.id
        assert all(p["chosen"] != p["rejected"] for p in pairs)


def test_study_summary_says_when_max_train_kept_fewer_records_than_n():
    from clinalign.report.summary import records_note

    split = {"records": 80, "train": 36, "val": 8, "test": 12, "dropped": 0}
    assert records_note(split, 56, 36) == "56 of 80 records used (max_train: 36 training records kept)"
    assert records_note({**split, "dropped": 3}, 53, None) == "53 of 80 records used (3 dropped as duplicates)"
    assert records_note(split, 80, None) is None


@pytest.mark.parametrize(("argv", "expected"), [
    (["evaluate"], "No such command 'evaluate'"),
    (["data", "split", "--no-such-flag"], "No such option"),
    (["data", "validate"], "Missing argument"),
])
def test_usage_mistakes_are_one_message_and_exit_2(argv: list[str], expected: str, capsys):
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


@pytest.mark.parametrize("encoding, name", [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16"), ("utf-16-be", "UTF-16"),
                                            ("utf-32", "UTF-32")])
def test_a_utf16_or_utf32_file_is_one_line_naming_the_encoding(tmp_path: Path, encoding: str, name: str, capsys):
    for suffix in (".jsonl", ".csv"):
        path = tmp_path / f"notes{suffix}"
        text = ("".join(good_line(i) + "\n" for i in range(6)) if suffix == ".jsonl"
                else "id,text,label\n" + "".join(f"r{i},dysuria,yes\n" for i in range(6)))
        path.write_text(text, encoding=encoding)
        assert cli(["data", "validate", "uti_classification", str(path)]) == 2
        assert capsys.readouterr().err.splitlines() == [f"{path}: this file is {name}; save it as UTF-8",
                                                        f"error: 1 problem(s) in {path}"]


def test_a_utf8_file_with_a_byte_order_mark_reads_as_utf8(tmp_path: Path, run):
    path = tmp_path / "notes.jsonl"
    path.write_text("".join(good_line(i) + "\n" for i in range(3)), encoding="utf-8-sig")
    res = run("data", "validate", "uti_classification", str(path))
    assert res.exit_code == 0, res.output


def test_a_csv_missing_a_column_is_one_problem_on_the_header(tmp_path: Path, capsys):
    path = tmp_path / "notes.csv"
    path.write_text("id,text,Lable\n" + "".join(f"r{i},dysuria,yes\n" for i in range(50)))
    assert cli(["data", "validate", "uti_classification", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:1: label: missing column (the header has: id, text, Lable); did you mean to rename 'Lable' to 'label'?",
        f"error: 1 problem(s) in {path}"]
    path.write_text("id,note\n" + "".join(f"r{i},dysuria\n" for i in range(50)))  # nothing like the columns
    assert cli(["data", "sft", "uti_classification", str(path), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {path}:1: text: missing column (the header has: id, note) (and 1 more)"]
    assert not (tmp_path / "o.jsonl").exists()
