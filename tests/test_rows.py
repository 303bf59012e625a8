"""One reader for JSONL (data/io) and one validator for prompt/chosen/rejected rows (data/rows), used
by training, export and the audit alike, with the same FILE:LINE: field: message errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clinalign.cli import run
from clinalign.data.io import read_jsonl
from clinalign.data.rows import PairRow, read_rows
from clinalign.errors import DataError
from clinalign.synthetic import generate


def _pairs(tmp_path: Path, *rows: dict) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GOOD = {"prompt": "p", "chosen": "a", "rejected": "b", "id": "x1"}


@pytest.mark.parametrize(("bad", "problem"), [
    ({"prompt": "p", "chosen": "a"}, "rejected: missing field"),
    ({"prompt": "p", "chosen": "", "rejected": "b"}, "chosen: expected non-empty text"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, "prompt: expected non-empty text or a list of chat "
                                                    "messages (got int)"),
    ({"prompt": [], "chosen": "a", "rejected": "b"}, "prompt: expected non-empty text"),
])
def test_every_reader_of_pairs_reports_the_same_problem(tmp_path, capsys, bad, problem):
    from clinalign.export.pairs import convert_rows
    from clinalign.train.data import load_rows

    path = _pairs(tmp_path, GOOD, bad)
    expected = f"{path}:2: {problem}"
    for read in (lambda: read_rows(path, PairRow), lambda: load_rows("dpo", path),
                 lambda: convert_rows(path, "openai-dpo")):
        with pytest.raises(DataError) as e:
            read()
        assert e.value.problems[0].startswith(expected), e.value.problems
    records = tmp_path / "uti.jsonl"
    from clinalign.data.io import write_jsonl
    from clinalign.tasks import get_task

    write_jsonl(records, generate(get_task("uti_classification"), 6, seed=1))
    assert run(["data", "audit", "uti_classification", str(records), "--pairs", str(path)]) == 2
    assert expected in capsys.readouterr().err


def test_rows_keep_tracing_columns_but_training_reads_only_its_fields(tmp_path):
    from clinalign.train.data import load_rows

    path = _pairs(tmp_path, GOOD, {**GOOD, "prompt": [{"role": "user", "content": "q"}], "strategy": "s"})
    assert [r for _, r in read_rows(path, PairRow)][1]["strategy"] == "s"
    assert load_rows("dpo", path)[1] == {"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}


def test_read_jsonl_names_the_broken_line(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2\n')
    with pytest.raises(DataError, match=rf"{path}:3: record: invalid JSON"):
        read_jsonl(path)
    path.write_text('{"id": 1}\n\n{"id": 2}\n')
    assert read_jsonl(path) == [{"id": 1}, {"id": 2}]
    assert read_jsonl(tmp_path / "none.jsonl", missing_ok=True) == []
    with pytest.raises(DataError, match="file not found"):
        read_jsonl(tmp_path / "none.jsonl")
