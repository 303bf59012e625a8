"""SFT must learn what the data contains: on a fixture task whose label is plainly in the text, the
training records are fitted (label-scoring accuracy >= 0.9) within a small step budget. This guards the
whole path a decision takes: answer tokenisation, loss on the answer tokens, LoRA placement, and label
scoring reading the answer exactly as training wrote it. (The demo's old settings, one epoch at a
linearly decayed lr, did not even fit their own training set: triage training accuracy 0.375.)"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from clinalign.data.io import write_jsonl
from clinalign.data.pairs import sft_examples
from clinalign.tasks import get_task

pytestmark = pytest.mark.slow

UTI = get_task("uti_classification")
YES = ("Urine culture grew E. coli.", "Dysuria and frequency, nitrite positive.", "Pyuria with burning on urination.")
NO = ("Ankle sprain after a fall.", "Cough and congestion, viral.", "Headache, normal exam.")
FILLER = ("Seen in clinic today.", "History of hypertension.", "Vitals stable.", "Lives with family.", "")


def learnable(n: int, seed: int) -> list:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = "yes" if i % 2 else "no"
        text = " ".join(x for x in (rng.choice(FILLER), rng.choice(YES if label == "yes" else NO),
                                    rng.choice(FILLER)) if x)
        out.append(UTI.record_type(id=f"fx-{i}", text=text, label=label, note_type="clinic note"))
    return out


def test_sft_with_default_settings_fits_a_learnable_task(tiny_model_dir: Path, tmp_path: Path):
    from clinalign.eval.predict import predict_records
    from clinalign.train.api import train

    records = learnable(32, seed=0)
    write_jsonl(tmp_path / "sft.jsonl", sft_examples(UTI, records))
    before = predict_records(UTI, tiny_model_dir, records)
    # a random-init 0.5M model: all weights train (its random output head cannot be steered by LoRA
    # adapters alone: LoRA's loss stays at 6.6 nats) with a large step; 48 steps in all
    final = train("sft", model=str(tiny_model_dir), data=tmp_path / "sft.jsonl", out=tmp_path / "run",
                  settings={"max_length": 256, "progress": False, "lr": 3e-3, "epochs": 6, "batch_size": 4,
                            "scheduler": "constant", "lora": False})
    after = predict_records(UTI, final, records)
    accuracy = sum(r["pred"] == r["gold"] for r in after) / len(after)
    assert sum(r["pred"] == r["gold"] for r in before) / len(before) < 0.75  # not solved before training
    assert accuracy >= 0.9
