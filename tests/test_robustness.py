"""Readers and parsers never crash on hostile input; writers never leave a partial file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clinalign.data.io import read_records
from clinalign.errors import DataError
from clinalign.synthetic import generate
from clinalign.tasks import all_tasks

TASKS = all_tasks()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@HYP
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".csv", ".parquet"]), task_i=st.integers(0, len(TASKS) - 1))
def test_arbitrary_bytes_end_in_data_error(tmp_path_factory, data: bytes, suffix: str, task_i: int):
    path = tmp_path_factory.mktemp("fuzz") / f"in{suffix}"
    path.write_bytes(data)
    task = TASKS[task_i]
    try:
        read_records(path, task.record_type)
    except DataError as e:
        assert e.problems and all(p.startswith(str(path)) for p in e.problems)


@HYP
@given(rows=st.lists(json_values, min_size=1, max_size=5), task_i=st.integers(0, len(TASKS) - 1))
def test_random_json_end_in_data_error(tmp_path_factory, rows, task_i: int):
    path = tmp_path_factory.mktemp("fuzz") / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = TASKS[task_i]
    try:
        recs = read_records(path, task.record_type)
    except DataError as e:
        assert all(":" in p for p in e.problems)
    else:  # anything accepted must be usable by the task
        for r in recs:
            assert isinstance(task.prompt(r), str)


@HYP
@given(text=st.text(max_size=300), task_i=st.integers(0, len(TASKS) - 1))
def test_parsers_return_answer_or_none(text: str, task_i: int):
    task = TASKS[task_i]
    out = task.parse(text)
    assert out is None or isinstance(out, str)
    if out is not None and task.choices is not None:
        assert out in task.choices


def test_parsers_accept_their_own_answers():
    for task in TASKS:
        for rec in generate(task, 30, seed=5):
            assert task.parse(task.answer(rec)) == (task.answer(rec) if task.is_closed_set else task.answer(rec).strip())


@pytest.mark.slow  # kills a writer process many times
def test_killed_writer_leaves_old_or_new_file(tmp_path: Path):
    """SIGKILL `data generate` at staggered moments: the output is always the old file or the whole new one."""
    out = tmp_path / "data.jsonl"
    old = '{"old": true}\n'
    n = 3000
    cmd = [sys.executable, "-m", "clinalign.cli", "data", "generate", "uti_classification", "--n", str(n),
           "--out", str(out)]
    outcomes = set()
    for delay in (0.3, 0.8, 1.2, 1.6, 2.0, 2.5, 3.0, 4.0, 8.0):
        out.write_text(old)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": "src"})
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        text = out.read_text()
        if text == old:
            outcomes.add("old")
        else:
            lines = text.splitlines()
            assert len(lines) == n and all(json.loads(x)["id"] for x in lines)
            outcomes.add("new")
    # a killed writer may leave its hidden temp file, never a visible partial output
    assert all(p.name == "data.jsonl" or p.name.startswith(".data.jsonl.") for p in tmp_path.iterdir())
    assert "old" in outcomes
