"""The per-record size limit: an over-long record is refused before its text is parsed, with one
``FILE:LINE: field: N bytes, over the limit of M`` line and exit 2, and reading it costs memory near the
limit, not a multiple of the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clinalign.cli import run as cli
from clinalign.data.io import MAX_RECORD_BYTES, max_record_bytes, read_records, record_limit
from clinalign.errors import DataError
from clinalign.tasks import get_task

UTI = get_task("uti_classification")
HUGE = 50 * 1024 * 1024  # bytes of text in the one over-long record
BIG_PREFIX = '{"id": "big", "label": "yes", "text": "'


def good(i: int) -> dict:
    return {"id": f"r{i}", "text": f"Patient {i} with dysuria and positive nitrites.", "label": "yes"}


def huge_jsonl(path: Path) -> Path:
    """Two good lines around one valid record whose text is 50 MB, written without holding it whole."""
    with open(path, "w") as f:
        f.write(json.dumps(good(0)) + "\n")
        f.write(BIG_PREFIX)
        for _ in range(HUGE // (1 << 20)):
            f.write("dysuria " * (1 << 17))
        f.write('"}\n')
        f.write(json.dumps(good(2)) + "\n")
    return path


def huge_csv(path: Path) -> Path:
    with open(path, "w") as f:
        f.write("id,text,label\na1,dysuria,yes\nbig,")
        for _ in range(HUGE // (1 << 20)):
            f.write("dysuria " * (1 << 17))
        f.write(",yes\na3,fever,no\n")
    return path


PEAK = """import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"""


def peak_kib(*args: str) -> int:
    """Peak resident memory (KiB) of ``clinalign ARGS`` run in a fresh child of a fresh process, so
    no earlier child of the test process counts."""
    out = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "clinalign.cli", *args],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.parametrize("make", [huge_jsonl, huge_csv], ids=["jsonl", "csv"])
def test_a_50mb_record_costs_memory_near_the_limit_not_the_file(tmp_path: Path, make):
    suffix = ".jsonl" if make is huge_jsonl else ".csv"
    big = make(tmp_path / f"big{suffix}")
    assert big.stat().st_size > HUGE
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps(good(i)) + "\n" for i in range(3)))
    baseline = peak_kib("data", "validate", "uti_classification", str(small))
    peak = peak_kib("data", "validate", "uti_classification", str(big))
    # parsing the record would hold its bytes, its text and the parsed string: 150 MB over the baseline;
    # refused unread, the reader holds at most one limit's worth (1 MiB) plus one 64 KiB chunk
    print(f"peak {peak} KiB, baseline {baseline} KiB")
    assert peak - baseline < 16 * 1024, (peak, baseline)
    r = subprocess.run([sys.executable, "-m", "clinalign.cli", "data", "validate", "uti_classification", str(big)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    line, size = (3, HUGE + len("big,,yes")) if suffix == ".csv" else (2, HUGE + len(BIG_PREFIX) + 2)
    assert r.stderr.splitlines() == [f"{big}:{line}: record: {size} bytes, over the limit of {MAX_RECORD_BYTES} "
                                     f"(--max-record-bytes)", f"error: 1 problem(s) in {big}"]


def run(capsys, *args: str) -> tuple[int, list[str]]:
    code = cli(list(args))
    return code, capsys.readouterr().err.splitlines()


def test_each_format_names_file_line_field_and_size(tmp_path: Path, capsys):
    rows = [good(0), {**good(1), "text": "x" * 500}, good(2)]
    jl = tmp_path / "d.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    csv_file = tmp_path / "d.csv"
    csv_file.write_text("id,text,label\n" + "".join(f"{r['id']},{r['text']},{r['label']}\n" for r in rows))
    pqf = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), pqf)
    line1 = len(json.dumps(rows[1]))
    expected = {jl: f"{jl}:2: record: {line1} bytes, over the limit of 200 (--max-record-bytes)",
                csv_file: f"{csv_file}:3: record: {len('r1,,yes') + 500} bytes, over the limit of 200 "
                          f"(--max-record-bytes)",
                pqf: f"{pqf}:2: text: 500 bytes, over the limit of 200 (--max-record-bytes)"}
    for path, line in expected.items():
        code, err = run(capsys, "data", "validate", "uti_classification", str(path), "--max-record-bytes", "200")
        assert code == 2
        assert err == [line, f"error: 1 problem(s) in {path}"]
        assert run(capsys, "data", "validate", "uti_classification", str(path), "--max-record-bytes", "600")[0] == 0
    # the limit lasts as long as the command: the next reader in this process has the default again
    assert max_record_bytes() == MAX_RECORD_BYTES
    assert len(read_records(jl, UTI.record_type)) == 3


def test_a_parquet_row_over_the_limit_in_total_is_named_as_the_record(tmp_path: Path):
    pqf = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "a" * 60, "text": "b" * 60, "label": "yes"}]), pqf)
    with record_limit(100), pytest.raises(DataError) as e:
        read_records(pqf, UTI.record_type)
    assert e.value.problems == [f"{pqf}:1: record: 123 bytes, over the limit of 100 (--max-record-bytes)"]


def test_a_multiline_csv_record_is_stopped_while_it_is_read(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text('id,text,label\na,"' + "line of a quoted note\n" * 20 + '",yes\nb,x,no\n')
    with record_limit(100), pytest.raises(DataError) as e:
        read_records(path, UTI.record_type)
    assert e.value.problems == [f"{path}:2: record: at least 108 bytes, over the limit of 100 (--max-record-bytes)"]
    assert len(read_records(path, UTI.record_type)) == 2  # with the default limit it is two records


def test_every_data_command_and_training_take_the_limit(tmp_path: Path, capsys, tiny_model_dir):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(good(i)) + "\n" for i in range(40)))
    for cmd in (["split", "--out", str(tmp_path / "s")], ["sft", "--out", str(tmp_path / "sft.jsonl")],
                ["pairs", "--out", str(tmp_path / "p.jsonl")], ["audit"]):
        code, err = run(capsys, "data", cmd[0], "uti_classification", str(path), *cmd[1:], "--max-record-bytes", "50")
        assert code == 2, cmd
        assert err[0].startswith(f"error: {path}:1: record: ") and "over the limit of 50 (--max-record-bytes)" in err[0]
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"prompt": f"Note {i}: dysuria?", "completion": "yes"}) + "\n" for i in range(8)))
    code, err = run(capsys, "train", "sft", "--model", str(tiny_model_dir), "--data", str(sft), "--out",
                    str(tmp_path / "run"), "--max-record-bytes", "20")
    assert code == 2
    first = len(sft.read_text().splitlines()[0])
    assert err[-1] == f"error: {sft}:1: record: {first} bytes, over the limit of 20 (--max-record-bytes) (and 7 more)"
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "UTI?", "chosen": "yes", "rejected": "no " * 30}) + "\n")
    code, err = run(capsys, "train", "dpo", "--model", str(tiny_model_dir), "--data", str(pairs), "--out",
                    str(tmp_path / "dpo"), "--max-record-bytes", "60")
    assert code == 2 and "over the limit of 60 (--max-record-bytes)" in err[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "pairs.jsonl", "sft.jsonl"]
