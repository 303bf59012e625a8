"""Parquet input: the same records and the same FILE:ROW: field errors as the JSONL of the same rows."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clinalign.cli import run as cli
from clinalign.data.io import read_records
from clinalign.errors import DataError
from clinalign.synthetic import generate
from clinalign.tasks import get_task


def _both(tmp_path: Path, rows: list[dict]) -> tuple[Path, Path]:
    jl, pqf = tmp_path / "d.jsonl", tmp_path / "d.parquet"
    jl.write_text("".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), pqf)
    return jl, pqf


def _problems(path: Path, record_type) -> list[str]:
    with pytest.raises(DataError) as e:
        read_records(path, record_type)
    return [p.replace(str(path), "FILE") for p in e.value.problems]


def test_parquet_reads_like_jsonl(tmp_path: Path):
    task = get_task("clinical_reasoning")  # options: a struct column, keys differing between rows
    rows = [r.model_dump(mode="json") for r in generate(task, 12, seed=3)]
    jl, pqf = _both(tmp_path, rows)
    from_parquet = read_records(pqf, task.record_type)
    assert from_parquet == read_records(jl, task.record_type)
    assert len(from_parquet) == 12 and len({len(r.options) for r in from_parquet}) > 1
    # a map column (how a warehouse writes a key/value field) reads as the same records
    table = pa.Table.from_pylist(rows)
    maps = pa.array([list(r["options"].items()) for r in rows], type=pa.map_(pa.string(), pa.string()))
    pq.write_table(table.set_column(table.schema.get_field_index("options"), "options", maps), pqf)
    assert read_records(pqf, task.record_type) == from_parquet


def test_parquet_errors_match_jsonl(tmp_path: Path, capsys):
    task = get_task("uti_classification")
    rows = [r.model_dump(mode="json") for r in generate(task, 6, seed=1)]
    rows[1]["label"] = "maybe"
    rows[3]["text"] = None  # a null cell is an absent field, as in a JSONL row without the key
    rows[4]["id"] = rows[0]["id"]
    jl, pqf = _both(tmp_path, rows)
    expected = _problems(jl, task.record_type)
    assert [p.split(": ")[0:2] for p in expected] == [["FILE:2", "label"], ["FILE:4", "text"], ["FILE:5", "id"]]
    assert _problems(pqf, task.record_type) == expected
    assert cli(["data", "validate", "uti_classification", str(pqf)]) == 2
    assert f"{pqf}:2: label: " in capsys.readouterr().err


def test_not_parquet_is_a_data_error(tmp_path: Path):
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"x.parquet: not a readable Parquet file"):
        read_records(bad, get_task("uti_classification").record_type)


def test_export_pairs_from_parquet(tmp_path: Path):
    src = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "UTI?", "chosen": "yes", "rejected": "no"},
                                         {"prompt": "UTI?", "chosen": "no", "rejected": None}]), src)
    out = tmp_path / "v.jsonl"
    assert cli(["export", "pairs", str(src), "--format", "vertex-gemini-preference", "--out", str(out)]) == 2
    assert not out.exists()
    pq.write_table(pa.Table.from_pylist([{"prompt": "UTI?", "chosen": "yes", "rejected": "no"}]), src)
    assert cli(["export", "pairs", str(src), "--format", "vertex-gemini-preference", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["completions"][0]["completion"]["parts"] == [{"text": "yes"}]
