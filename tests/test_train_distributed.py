"""2 processes (torchrun, gloo, CPU) with batch b match 1 process with batch 2b: DDP and FSDP2.

Tolerance: 1e-5 on every metric row's loss and on every final weight (absolute); the difference is
only float summation order (gradients averaged across processes vs summed in one batch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from clinalign.cli import run
from clinalign.synthetic import generate

TOL = 1e-5


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    from clinalign.data.pairs import preference_pairs
    from clinalign.tasks import get_task

    task = get_task("uti_classification")
    path = tmp_path_factory.mktemp("dist") / "pairs.jsonl"
    rows = preference_pairs(task, generate(task, 16, seed=7), seed=0)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _args(model, data, out, batch, *extra):
    # full fine-tuning (no dropout anywhere): the runs differ only in how the batch is split
    return ["train", "dpo", "--model", str(model), "--data", str(data), "--out", str(out), "--no-lora",
            "--batch-size", str(batch), "--max-steps", "4", "--epochs", "3", "--lr", "1e-4", "--beta", "0.5", "max_length=256",
            "progress=false", "grad_accum=2", *extra]


def _torchrun(args, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "clinalign.cli", *args]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]


def _rows(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(out):
    return load_file(str(next((out / "final").glob("*.safetensors"))))


@pytest.fixture(scope="module")
def single(tiny_model_dir, pairs_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out"
    assert run(_args(tiny_model_dir, pairs_file, out, 4)) == 0
    return out


@pytest.mark.distributed
@pytest.mark.parametrize("parallel", ["ddp", "fsdp2"])
def test_two_processes_match_one(tiny_model_dir, pairs_file, single, tmp_path, parallel):
    out = tmp_path / parallel
    _torchrun(_args(tiny_model_dir, pairs_file, out, 2, f"parallel={parallel}"), tmp_path)
    one, two = _rows(single), _rows(out)
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    for a, b in zip(one, two, strict=True):
        for k in ("loss", "reward_margin", "reward_accuracy", "chosen_reward", "rejected_reward"):
            assert abs(a[k] - b[k]) <= TOL, (k, a[k], b[k])
    assert one[-1]["loss"] != one[0]["loss"]  # the weights really moved
    w1, w2 = _weights(single), _weights(out)
    assert w1.keys() == w2.keys()
    for k in w1:
        assert (w1[k] - w2[k]).abs().max() <= TOL, k
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4"]


@pytest.mark.distributed
def test_sigterm_to_torchrun_checkpoints_every_process_and_resumes(tiny_model_dir, pairs_file, tmp_path):
    """What Slurm does before preemption: SIGTERM to the launcher, which passes it on to each worker.
    Every process stops at the same step with one checkpoint, and the resumed 2-process run ends where
    an uninterrupted 1-process run with the same global batch does."""
    import signal
    import time

    from clinalign.train import checkpoint

    args = ["train", "dpo", "--model", str(tiny_model_dir), "--data", str(pairs_file), "--no-lora", "--epochs", "40",
            "--max-steps", "40", "--lr", "1e-4", "--beta", "0.5", "max_length=256", "progress=false", "grad_accum=2"]
    one = tmp_path / "one"
    assert run([*args, "--out", str(one), "--batch-size", "4"]) == 0
    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "clinalign.cli", *args, "--out", str(out), "--batch-size", "2", "parallel=ddp"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=120)
    assert "SIGTERM at step" in log, log[-3000:]
    ckpts = sorted((out / "checkpoints").iterdir())
    assert len(ckpts) == 1 and checkpoint.verify(ckpts[0]) is None, ckpts
    stopped = json.loads((ckpts[0] / "state.json").read_text())["step"]
    assert 2 <= stopped < 40 and not (out / "final").exists()
    assert {p.name for p in ckpts[0].glob("rng-rank*.pt")} == {"rng-rank0.pt", "rng-rank1.pt"}
    _torchrun([*args, "--out", str(out), "--batch-size", "2", "parallel=ddp", "--resume"], tmp_path)
    assert [r["step"] for r in _rows(out)] == list(range(1, 41))
    w1, w2 = _weights(one), _weights(out)
    for k in w1:
        assert (w1[k] - w2[k]).abs().max() <= TOL, k


GROUP_FREED = """
import gc, os, torch
from clinalign.train import distributed

def threads():
    return len(os.listdir("/proc/self/task"))

before = threads()
with distributed.held("ddp", "gloo", "cpu"):
    info = distributed.init("ddp", "gloo", "cpu")  # a recipe's own, nested
    model = distributed.wrap(torch.nn.Linear(4, 2), "ddp", info)  # DDP imports torch._dynamo here
    model(torch.randn(3, 4)).sum().backward()
    del model
    distributed.shutdown()
gc.collect()
print(f"rank {info.rank}: threads {before} before, {threads()} after", flush=True)
"""


@pytest.mark.distributed
def test_the_process_group_and_its_threads_are_gone_when_the_run_ends(tmp_path):
    """After a DDP run the group is freed, gloo's threads with it. A group kept alive to interpreter exit
    (torch.distributed.nn.functional imported after it was created holds it in its functions' defaults)
    lets a gloo thread release a finished collective's tensors during finalization: the worker aborts
    ("terminate called without an active exception", exit -6) after its outputs are written."""
    script = tmp_path / "group_freed.py"
    script.write_text(GROUP_FREED)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(script)], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = sorted(x for x in res.stdout.splitlines() if x.startswith("rank "))
    assert len(lines) == 2
    for line in lines:
        before, after = (int(w) for w in line.replace(",", "").split() if w.isdigit())
        assert after == before, line


WORKER_EXIT = """
import atexit
from clinalign import cli
from clinalign.train import distributed

atexit.register(lambda: print("exit functions ran", flush=True))


class Finalized:
    def __del__(self):
        print("interpreter finalization ran", flush=True)


kept = Finalized()  # freed when the interpreter finalizes its modules

def run():
    with distributed.held("ddp", "gloo", "cpu"):
        pass
    print("outputs written", end="")  # still in stdout's buffer when the worker ends
    return 3

cli.run = run
cli.main()
print("not reached")
"""


def test_a_worker_that_created_a_group_ends_with_its_code_its_output_and_its_exit_functions(tmp_path):
    """`clinalign` in a process that created a process group ends without interpreter finalization
    (distributed.exit_worker), where gloo threads of a group torch still holds can abort it: the exit
    code is the command's, buffered output is flushed, the exit functions run, finalization does not."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", WORKER_EXIT], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert res.returncode == 3, res.stderr[-3000:]
    assert res.stdout.startswith("outputs written") and "exit functions ran" in res.stdout, res.stdout
    assert "not reached" not in res.stdout and "interpreter finalization ran" not in res.stdout
