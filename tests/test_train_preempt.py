"""SIGTERM (Slurm's warning before preemption) at every phase of a training run (train/preempt.py): exit
75 (RESUMABLE) with a message saying what was kept, and `--resume` completes the run. The training
phase itself is tested in test_faults.py (in process) and test_train_distributed.py (torchrun)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clinalign.cli import run
from clinalign.errors import RESUMABLE
from helpers import sigterm_on_call, uti_stage_files

pytestmark = pytest.mark.slow  # signals a training process


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("preempt")
    uti_stage_files(d, 16, seed=4)
    return d


def _args(stage, model, files, out, *extra):
    return ["train", stage, "--model", str(model), "--data", str(files / f"{stage}.jsonl"), "--out", str(out),
            "--batch-size", "4", "--max-steps", "3", "max_length=256", "progress=false", "lora_rank=4",
            "lora_dropout=0", *extra]


def _adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "final" / "adapter_model.safetensors"))


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_sigterm_while_reading_the_data_writes_nothing_and_exits_75(tiny_model_dir, files, tmp_path, monkeypatch,
                                                                    capsys, stage):
    from clinalign.train import dpo, sft

    recipe = sft if stage == "sft" else dpo
    sigterm_on_call(monkeypatch, recipe, "tokenize_rows", 1)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    assert run(_args(stage, tiny_model_dir, files, out)) == RESUMABLE == 75
    assert signal.getsignal(signal.SIGTERM) == before  # the run's handler is gone with the run
    err = capsys.readouterr().err
    assert ("error: SIGTERM during the checks before training (data, config, model): stopped; nothing was "
            "written. Run the same command with --resume to continue") in err and "Traceback" not in err
    assert not out.exists()
    monkeypatch.undo()
    assert run(_args(stage, tiny_model_dir, files, out, "--resume")) == 0 and (out / "final").is_dir()


def test_sigterm_during_the_reference_pass_exits_75_and_resume_completes(tiny_model_dir, files, tmp_path,
                                                                         monkeypatch, capsys):
    """Stopped in the middle of the reference pass (its second batch of four): nothing of the pass is
    kept; --resume runs it again and ends exactly where an uninterrupted run does."""
    from clinalign.train import ref_cache

    straight = tmp_path / "straight"
    assert run(_args("dpo", tiny_model_dir, files, straight)) == 0
    sigterm_on_call(monkeypatch, ref_cache, "pair_logps", 2)
    out = tmp_path / "run"
    assert run(_args("dpo", tiny_model_dir, files, out)) == RESUMABLE
    err = capsys.readouterr().err
    assert f"error: SIGTERM during the reference pass: stopped; {out / 'config.yaml'} is written; the reference " \
           f"log-probs are kept in {out / 'ref_logps'} only once the pass is complete" in err, err
    assert "--resume starts an interrupted pass again from its first pair). Run the same command with --resume" in err
    assert (out / "config.yaml").is_file() and not list(out.rglob("*.safetensors"))
    assert not (out / "checkpoints").exists() and not (out / "final").exists()
    monkeypatch.undo()
    assert run(_args("dpo", tiny_model_dir, files, out, "--resume")) == 0
    a, b = _adapter(straight), _adapter(out)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert len(list((out / "ref_logps").glob("ref-logps-*.safetensors"))) == 1


def test_sigterm_while_final_is_written_completes_it_and_exits_75(tiny_model_dir, files, tmp_path, monkeypatch,
                                                                   capsys):
    from clinalign.train import checkpoint

    sigterm_on_call(monkeypatch, checkpoint, "save_final", 1)
    out = tmp_path / "run"
    assert run(_args("sft", tiny_model_dir, files, out)) == RESUMABLE
    err = capsys.readouterr().err
    assert (f"error: SIGTERM while final/ was written: {out / 'final'} was completed, with checkpoint "
            f"{out / 'checkpoints' / 'step-3'}; the run is finished") in err, err
    written = _adapter(out)
    assert written and checkpoint.verify(out / "checkpoints" / "step-3") is None
    monkeypatch.undo()
    assert run(_args("sft", tiny_model_dir, files, out, "--resume")) == 0
    again = _adapter(out)
    assert all(written[k].equal(again[k]) for k in written)  # nothing left to train: the same final/


SLOW_REFERENCE = """
import time
from pathlib import Path
from clinalign.train import ref_cache

_real = ref_cache.pair_logps

def _slow(*a, **kw):  # a reference pass that takes seconds, so SIGTERM lands inside it
    Path("ref-started").touch()
    time.sleep(0.5)
    return _real(*a, **kw)

ref_cache.pair_logps = _slow
"""


@pytest.mark.distributed
def test_sigterm_to_torchrun_during_the_reference_pass(tiny_model_dir, files, tmp_path):
    """What Slurm does: SIGTERM to torchrun, which passes it to both workers while they run the
    reference pass; each worker says so and exits 75; --resume then completes the 2-process run."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_REFERENCE)  # imported by each worker at start-up
    out = tmp_path / "two"
    args = [*_args("dpo", tiny_model_dir, files, out), "--batch-size", "2", "parallel=ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
              "clinalign.cli", *args]
    proc = subprocess.Popen(launch, env={**env, "PYTHONPATH": f"{hook}{os.pathsep}{env.get('PYTHONPATH', '')}"},
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not (tmp_path / "ref-started").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=120)
    assert log.count("error: SIGTERM during the reference pass: stopped;") == 2, log[-3000:]  # each worker
    # torchrun itself ends with its own SignalException (exit 1), not its workers' 75: the Slurm script
    # requeues on the signal it passed on (test_faults.py::test_slurm_script_requeues_a_preempted_run)
    assert proc.returncode == 1 and "Received 15 death signal" in log, log[-3000:]
    assert not (out / "checkpoints").exists() and not list(out.rglob("*.safetensors"))
    done = subprocess.run([*launch, "--resume"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "final" / "adapter_model.safetensors").is_file()
