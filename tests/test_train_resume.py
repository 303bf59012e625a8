"""A run killed with SIGKILL and resumed ends bit-identical to a run that never stopped (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from clinalign.cli import run
from clinalign.synthetic import generate


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory):
    from clinalign.data.pairs import sft_examples
    from clinalign.tasks import get_task

    task = get_task("uti_classification")
    path = tmp_path_factory.mktemp("resume") / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in sft_examples(task, generate(task, 32, seed=5))))
    return path


def _args(model, data, out):
    # lora_dropout > 0: the resumed run must also restore the RNG to match
    return ["train", "sft", "--model", str(model), "--data", str(data), "--out", str(out), "--batch-size", "4",
            "--epochs", "8", "--save-every", "7", "--lr", "1e-3", "max_length=256", "lora_dropout=0.1",
            "progress=false", "lora_rank=4"]


@pytest.mark.slow  # kills and resumes a training process
def test_sigkill_then_resume_is_bit_identical(tiny_model_dir, sft_data, tmp_path):
    ref_out, out = tmp_path / "straight", tmp_path / "killed"
    assert run(_args(tiny_model_dir, sft_data, ref_out)) == 0

    cmd = [sys.executable, "-m", "clinalign.cli", *_args(tiny_model_dir, sft_data, out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "step-14").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "final").exists()
    done = int(json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"])
    assert done < 64  # 32 examples / 4 = 8 steps per epoch x 8 epochs

    assert run([*_args(tiny_model_dir, sft_data, out), "--resume"]) == 0
    a = load_file(str(ref_out / "final" / "adapter_model.safetensors"))
    b = load_file(str(out / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and a
    for k in a:
        assert a[k].equal(b[k]), k
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    straight = [json.loads(x) for x in (ref_out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 65))  # rows after the checkpoint were redone, once
    assert [r["loss"] for r in rows] == [r["loss"] for r in straight]
