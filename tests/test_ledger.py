"""The test-split ledger: uses counted by distinct configuration, in the user's cache, safe for two
processes recording at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clinalign.errors import DataError
from clinalign.study.ledger import (
    configurations,
    count_configurations,
    ledger_dir,
    read_uses,
    record_use,
    split_hash,
)
from clinalign.synthetic import generate
from clinalign.tasks import get_task


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_counts_distinct_configurations_across_output_folders(tmp_path, cache):
    test = split_hash(generate(get_task("uti_classification"), 20, seed=0))
    assert read_uses(test) == [] and count_configurations(test) == 0

    uses = record_use(test, "cfg0aaaa", study="demo", task="uti_classification", out=tmp_path / "run1")
    assert len(uses) == 1 and count_configurations(test) == 1
    assert (uses[0].config, uses[0].study, uses[0].task) == ("cfg0aaaa", "demo", "uti_classification")
    assert uses[0].out == str((tmp_path / "run1").resolve())

    record_use(test, "cfg1bbbb", study="demo", task="uti_classification", out=tmp_path / "run1")
    assert count_configurations(test) == 2
    # the first configuration again, into a new folder: a use on record, not a new configuration
    uses = record_use(test, "cfg0aaaa", study="demo", task="uti_classification", out=tmp_path / "run2")
    assert count_configurations(test) == 2
    assert [u.config for u in uses] == ["cfg0aaaa", "cfg1bbbb", "cfg0aaaa"]  # oldest first
    assert [u.out for u in uses][-1] == str((tmp_path / "run2").resolve())
    assert configurations(uses) == ["cfg0aaaa", "cfg1bbbb"]
    # in the cache named by $CLINALIGN_CACHE, one file per use
    assert ledger_dir() == cache / "test-ledger"
    assert len(list((cache / "test-ledger" / test).glob("*.json"))) == 3
    # another split has its own record
    other = split_hash(generate(get_task("uti_classification"), 20, seed=1))
    assert other != test and count_configurations(other) == 0


def test_split_hash_is_by_content_not_order():
    recs = generate(get_task("uti_classification"), 10, seed=0)
    assert split_hash(recs) == split_hash(list(reversed(recs)))
    assert split_hash(recs) == split_hash([r.model_dump(mode="json") for r in recs])
    assert split_hash(recs) != split_hash(recs[:-1])
    changed = [recs[0].model_copy(update={"label": "no" if recs[0].label == "yes" else "yes"}), *recs[1:]]
    assert split_hash(changed) != split_hash(recs)


def test_a_hash_cannot_name_a_folder_outside_the_ledger(tmp_path):
    with pytest.raises(ValueError, match="test split hash"):
        record_use("../x", "cfg", study="s", task="t", out=tmp_path)
    with pytest.raises(ValueError, match="configuration fingerprint"):
        record_use("abc123", "a/b", study="s", task="t", out=tmp_path)
    assert not ledger_dir().exists()


def test_an_unreadable_entry_is_named_not_skipped(tmp_path):
    record_use("abc123", "cfg", study="s", task="t", out=tmp_path)
    bad = ledger_dir() / "abc123" / "00000000000000000001-1-x.json"
    bad.write_text('{"test": "abc123"')
    with pytest.raises(DataError, match=r"00000000000000000001-1-x\.json: not a test-ledger entry"):
        count_configurations("abc123")
    bad.write_text(json.dumps({"test": "abc123", "config": "c"}))  # fields missing
    with pytest.raises(DataError, match="not a test-ledger entry"):
        read_uses("abc123")


_WRITER = """
import sys, time
from clinalign.study.ledger import record_use
who, start, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
for k in range(n):
    record_use("shared0", f"{who}-{k}", study="s", task="t", out=".")
    record_use("shared0", "common", study="s", task="t", out=who)
"""


def test_two_processes_recording_at_once_lose_nothing(tmp_path, cache):
    n = 40
    start = time.time() + 3  # both start writing at the same moment, after their imports
    env = {**os.environ, "CLINALIGN_CACHE": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, who, str(start), str(n)], env=env, cwd=tmp_path)
             for who in ("p0", "p1")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    uses = read_uses("shared0")
    assert len(uses) == 4 * n
    assert set(configurations(uses)) == {f"p{i}-{k}" for i in (0, 1) for k in range(n)} | {"common"}
    assert count_configurations("shared0") == 2 * n + 1
    # the two writers really overlapped in time: their entries interleave
    order = [Path(u.out).name for u in uses if u.config == "common"]
    assert sorted(order) == ["p0"] * n + ["p1"] * n
    switches = sum(a != b for a, b in zip(order, order[1:], strict=False))
    assert switches > 1, "the processes ran one after the other: the test proves nothing"
