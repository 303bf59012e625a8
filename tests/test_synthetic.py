"""The bundled synthetic generators: the same (n, seed) gives byte-identical JSON lines.

The hashes below are the generators' output recorded before they moved out of the task modules into
``clinalign.synthetic``; a change to a generator that alters any record fails here, so a change of the
bundled data is always a deliberate one (update the hash in the same commit and say why)."""

from __future__ import annotations

import hashlib
import json

import pytest

from clinalign.errors import TaskError
from clinalign.synthetic import generate, generator_for
from clinalign.tasks import get_task

RECORDED = {
    ("uti_classification", 40, 0): "a695932f1757a69a7099be07c930c38c14dfaf1fb7711efb34e99728aa6b8cae",
    ("uti_classification", 300, 7): "a60dcc8c58b2e55501480ef4d4a89a1d0f36545976eb2caea7967a8386aaa2a8",
    ("uti_classification", 2000, 3): "c9572c8d67cf0b5eda9a5b2b2526fc0c0da76309484f7a05e52a4205160b9290",
    ("hyponatremia_urine", 40, 0): "993418c16c82455283c1fbb91a76d0885547b59aba6affde1724aabc84fff4f0",
    ("hyponatremia_urine", 300, 7): "312b304334e10fe2c374b2b4f23247b42ebe57bd7a17bbfd915c583b0973a6d1",
    ("hyponatremia_urine", 2000, 3): "a6ee7b15c8812f37b64b8ac72064258b0f1abdf71a1f60dbfa02abcee85d2c5e",
    ("clinical_reasoning", 40, 0): "ee291493d0acd1506753df47c1b4ca8625c157de6647f1c390b88a6690e1cb49",
    ("clinical_reasoning", 300, 7): "a64acdd9d75166862d959127e454d331660e6e9661a0d151de8ec99b65c8390c",
    ("clinical_reasoning", 2000, 3): "cbe49299de604fdd8e34cba60ecb5547daa51228c00667417d6aa4b2792cb990",
    ("discharge_summary", 40, 0): "6c1fcb5593e7a88e22614a5bb8a85c4b0f025360fea24a892a58dc9b03447e9f",
    ("discharge_summary", 300, 7): "a306ce7ac4d79f0c2f668c6bcefa5cf6c5312f64e47f2a1c7459aa8ac822d8c9",
    ("discharge_summary", 2000, 3): "0623d55f3f5070e19531bd4295553ed33e9e6cdb6e2a94abc971301fb88415b8",
    ("message_triage", 40, 0): "34cb13addec171306640f146145bbad103a4877d954d574a7f83a5478042f20d",
    ("message_triage", 300, 7): "031637310b3801082fd25d3247859cf627d889cd54b6c06263801107d86f4a13",
    ("message_triage", 2000, 3): "3cd74eee7805e31b619013354e8de18a768752224e92df45a056ca0f019f77ed",
}


def _jsonl(records) -> bytes:
    """The lines `clinalign data generate` writes (data/io.write_jsonl's serialisation)."""
    return "".join(json.dumps(r.model_dump(mode="json"), ensure_ascii=False) + "\n" for r in records).encode()


@pytest.mark.parametrize(("task_id", "n", "seed"), sorted(RECORDED))
def test_generator_output_is_byte_identical_to_the_recorded_output(task_id, n, seed):
    records = generate(get_task(task_id), n, seed)
    assert len(records) == n
    assert hashlib.sha256(_jsonl(records)).hexdigest() == RECORDED[(task_id, n, seed)]


def test_only_the_built_in_task_gets_its_generator(tmp_path):
    """A generator is found by the task's class, not only its id: a user's task that reuses a built-in
    id (another schema) has none, and asking for records says so in one line."""
    assert generator_for(get_task("uti_classification")) is not None
    path = tmp_path / "mine.yaml"
    path.write_text("id: uti_classification\ntype: classification\ntext_fields: [note]\nlabels: ['yes', 'no']\n"
                    "prompt: 'UTI? {note}'\n")
    mine = get_task(str(path))
    assert mine.id == "uti_classification" and generator_for(mine) is None
    with pytest.raises(TaskError, match=r"^task 'uti_classification' has no synthetic generator; bring your data"):
        generate(mine, 3, 0)
