"""Prior-neutral DPO pairs (data/pairs.balanced_pairs): on skewed data every label is pushed up and down
equally often, so DPO cannot collapse the model onto the majority label."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from clinalign.data.io import write_jsonl
from clinalign.data.pairs import preference_pairs
from clinalign.synthetic import generate
from clinalign.tasks import get_task

UTI = get_task("uti_classification")
TRIAGE = get_task("message_triage")


def _skewed(n_major: int, n_minor: int, seed: int = 0) -> list:
    recs = generate(UTI, 4 * (n_major + n_minor), seed=seed)
    no = [r for r in recs if r.label == "no"][:n_major]
    yes = [r for r in recs if r.label == "yes"][:n_minor]
    assert len(no) == n_major and len(yes) == n_minor
    return no + yes


@pytest.mark.parametrize("task,records", [(UTI, _skewed(28, 12)), (TRIAGE, generate(TRIAGE, 45, seed=2))])
def test_default_pairs_push_every_label_up_and_down_equally(task, records):
    pairs = preference_pairs(task, records, seed=3)
    chosen, rejected = Counter(p["chosen"] for p in pairs), Counter(p["rejected"] for p in pairs)
    labels = {task.answer(r) for r in records}
    assert set(chosen) == set(rejected) == labels
    assert max(chosen.values()) - min(chosen.values()) <= 1
    assert max(rejected.values()) - min(rejected.values()) <= 1
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    assert len(records) <= len(pairs) < len(records) + len(labels)  # about one pair per record
    by_id = {r.id: r for r in records}
    assert all(task.answer(by_id[p["id"].split(":")[0]]) == p["chosen"] for p in pairs)  # chosen is the gold
    assert pairs == preference_pairs(task, records, seed=3) != preference_pairs(task, records, seed=4)


def test_named_builders_still_give_one_pair_per_record():
    records = _skewed(28, 12)
    pairs = preference_pairs(UTI, records, strategy="wrong_label", seed=0)
    assert len(pairs) == 40 and Counter(p["chosen"] for p in pairs) == {"no": 28, "yes": 12}


@pytest.mark.slow
def test_dpo_on_balanced_pairs_does_not_teach_the_majority_label(tiny_model_dir: Path, tmp_path: Path):
    """70/30 training labels; on a balanced test set DPO (on top of SFT) may not raise the share of the
    majority answer by more than 5 points over SFT's."""
    from clinalign.data.pairs import sft_examples
    from clinalign.eval.predict import predict_records
    from clinalign.train.api import train

    records = _skewed(28, 12, seed=1)
    test = _skewed(20, 20, seed=7)
    write_jsonl(tmp_path / "sft.jsonl", sft_examples(UTI, records))
    write_jsonl(tmp_path / "pairs.jsonl", preference_pairs(UTI, records, seed=0))
    common = {"lora": True, "lora_rank": 8, "lora_alpha": 16, "max_length": 320, "progress": False}
    sft = train("sft", model=str(tiny_model_dir), data=tmp_path / "sft.jsonl", out=tmp_path / "sft",
                settings={**common, "epochs": 3, "batch_size": 4, "lr": 3e-3})
    dpo = train("dpo", model=str(tiny_model_dir), data=tmp_path / "pairs.jsonl", out=tmp_path / "dpo",
                settings={**common, "epochs": 2, "batch_size": 4, "lr": 3e-3, "beta": 0.1}, init_from=sft)

    def majority_share(model: Path) -> float:
        rows = predict_records(UTI, model, test, batch_size=8)
        return sum(r["pred"] == "no" for r in rows) / len(rows)

    assert majority_share(dpo) <= majority_share(sft) + 0.05
