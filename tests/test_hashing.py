"""Identity by content (clinalign/hashing.py): weights are known by their bytes, a large file's hash is
computed once per (path, size, mtime), and a task's prompt fingerprint follows its rendering."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml

from clinalign import hashing
from clinalign.synthetic import generate
from clinalign.tasks import get_task
from clinalign.tasks.base import BASELINE_VIEW
from helpers import nudge_weights

HOUR_AGO = time.time_ns() - 3600 * 10**9


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("CLINALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "file-hashes.json"


@pytest.fixture
def hashed(monkeypatch) -> list[Path]:
    """Every file whose bytes are read to hash it, in order."""
    calls: list[Path] = []
    real = hashing._hash_file

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(hashing, "_hash_file", counting)
    return calls


def _big(path: Path, fill: bytes, mtime_ns: int = HOUR_AGO) -> Path:
    path.write_bytes(fill * (2 * hashing.CACHE_MIN_BYTES))
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_a_large_file_is_hashed_once_until_it_changes(cache, hashed, tmp_path):
    f = _big(tmp_path / "model.safetensors", b"a")
    first = hashing.file_fingerprint(f)
    assert hashing.file_fingerprint(f) == first and hashed == [f]  # the second call is a cache hit
    assert json.loads(cache.read_text())[str(f)][2] == first
    _big(f, b"b", mtime_ns=HOUR_AGO + 10**9)  # retrained: same size, a later mtime
    assert hashing.file_fingerprint(f) != first and len(hashed) == 2
    assert list(json.loads(cache.read_text())) == [str(f)]  # the stale entry was replaced, not kept


def test_a_fresh_file_is_not_remembered_and_small_files_are_not_cached(cache, hashed, tmp_path):
    f = _big(tmp_path / "w.bin", b"a", mtime_ns=time.time_ns())  # a same-size rewrite could keep this mtime
    hashing.file_fingerprint(f)
    hashing.file_fingerprint(f)
    assert len(hashed) == 2 and not cache.exists()
    small = tmp_path / "config.json"
    small.write_text("{}")
    os.utime(small, ns=(HOUR_AGO, HOUR_AGO))
    hashing.file_fingerprint(small)
    assert not cache.exists()


def test_an_unwritable_or_corrupt_cache_only_costs_time(monkeypatch, hashed, tmp_path):
    f = _big(tmp_path / "w.bin", b"a")
    expected = hashing._hash_file(f)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("CLINALIGN_CACHE", str(tmp_path / "a-file"))  # its folder cannot be made
    assert hashing.file_fingerprint(f) == expected
    monkeypatch.setenv("CLINALIGN_CACHE", str(tmp_path / "c"))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "file-hashes.json").write_text("{not json")
    assert hashing.file_fingerprint(f) == expected
    hashed.clear()
    assert hashing.file_fingerprint(f) == expected and hashed == []  # rewritten whole, then hit


def test_retrained_weights_of_the_same_size_change_the_model_and_adapter_fingerprints(
        cache, tiny_model_dir, adapter_run, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    adapter = tmp_path / "adapter"
    shutil.copytree(adapter_run / "final", adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(model_dir)}))
    before = {"model": hashing.model_fingerprint(model_dir), "adapter": hashing.model_fingerprint(adapter)}
    assert hashing.model_fingerprint(model_dir) == before["model"]  # the reference cache's identity is the same one
    nudge_weights(model_dir)  # same size, other bytes
    assert hashing.model_fingerprint(model_dir) != before["model"]
    assert hashing.model_fingerprint(adapter) != before["adapter"]  # an adapter's outputs depend on its base
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        hashing.model_fingerprint(tmp_path / "missing")


def test_prompt_fingerprint_follows_the_rendering(monkeypatch):
    task = get_task("hyponatremia_urine")
    records = generate(task, 6, seed=0)
    model_fp, baseline_fp = task.prompt_fingerprint(records), task.prompt_fingerprint(records, BASELINE_VIEW)
    assert task.prompt_fingerprint(records) == model_fp
    assert task.prompt_fingerprint(records[:5]) != model_fp
    cls = type(task)
    original = cls.prompt
    monkeypatch.setattr(cls, "prompt", lambda self, r: original(self, r) + "\nAnswer with the category only.")
    assert task.prompt_fingerprint(records) != model_fp
    assert task.prompt_fingerprint(records, BASELINE_VIEW) == baseline_fp  # its baseline reads lab values
    monkeypatch.setattr(cls, "max_new_tokens", cls.max_new_tokens + 1)
    changed = task.prompt_fingerprint(records)
    monkeypatch.undo()
    assert changed != task.prompt_fingerprint(records) == model_fp


def test_a_declared_task_is_fingerprinted_by_its_template(tmp_path):
    spec = {"id": "sepsis_note", "type": "classification", "text_fields": ["note"], "labels": ["sepsis", "no"],
            "prompt": "Does this note describe sepsis? Answer sepsis or no.\n\n{note}"}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(spec))
    task = get_task(path)
    records = [task.record_type(id="1", note="fever, lactate 4", label="sepsis")]
    fp = task.prompt_fingerprint(records)
    path.write_text(yaml.safe_dump({**spec, "prompt": "Sepsis? Answer sepsis or no.\n\n{note}"}))
    assert get_task(path).prompt_fingerprint(records) != fp


def test_stage_identity_holds_the_resolved_device_and_dtype(monkeypatch):
    from clinalign.study.pipeline import placed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    on_cpu = placed({"device": "auto", "dtype": "auto", "lr": 1e-3})
    assert on_cpu == placed({"device": "cpu", "dtype": "float32", "lr": 1e-3})  # the same run: one stage
    assert on_cpu == {"device": "cpu", "dtype": "float32", "lr": 1e-3}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setenv("LOCAL_RANK", "3")  # torchrun: the rank's GPU index is not part of the identity
    assert placed({"device": "auto", "dtype": "auto", "lr": 1e-3}) == {"device": "cuda", "dtype": "bfloat16",
                                                                        "lr": 1e-3}
