"""Training and study under the faults a hospital cluster has (issue #15): each fault is caused here, on
the tiny model, and must end in a clear message and no lost work."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clinalign.cli import run
from clinalign.errors import RESUMABLE, WriteError
from clinalign.synthetic import generate
from clinalign.train import checkpoint

STEPS = 16  # 32 examples / batch 4 = 8 steps per epoch, 2 epochs


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory):
    from clinalign.data.pairs import sft_examples
    from clinalign.tasks import get_task

    task = get_task("uti_classification")
    path = tmp_path_factory.mktemp("faults") / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in sft_examples(task, generate(task, 32, seed=5))))
    return path


def _args(model, data, out, *extra):
    return ["train", "sft", "--model", str(model), "--data", str(data), "--out", str(out), "--batch-size", "4",
            "--epochs", "2", "--save-every", "3", "--lr", "1e-3", "max_length=256", "lora_dropout=0.1",
            "progress=false", "lora_rank=4", *extra]


@pytest.fixture(scope="module")
def straight(tiny_model_dir, sft_data, tmp_path_factory):
    """The run that never met a fault: what every recovered run must end as, bit for bit."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert run(_args(tiny_model_dir, sft_data, out)) == 0
    return out


def _adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "final" / "adapter_model.safetensors"))


def _same_final(a: Path, b: Path) -> None:
    x, y = _adapter(a), _adapter(b)
    assert x.keys() == y.keys() and x
    for k in x:
        assert x[k].equal(y[k]), k


def _steps(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def _forward_hook(monkeypatch, fault):
    """Wrap the SFT recipe's forward: ``fault(call_number, loss)`` returns the loss to use (1-based calls,
    one per optimizer step here)."""
    from clinalign.train import sft

    real, calls = sft.sft_forward, [0]

    def forward(*a, **kw):
        calls[0] += 1
        return fault(calls[0], real(*a, **kw))

    monkeypatch.setattr(sft, "sft_forward", forward)


class _InfGrad(torch.autograd.Function):
    """Identity forward, infinite backward: a finite loss whose gradients overflow (bf16 style)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


def test_nonfinite_loss_stops_at_that_step_keeping_the_last_checkpoint(tiny_model_dir, sft_data, tmp_path,
                                                                       monkeypatch, capsys):
    out = tmp_path / "run"
    _forward_hook(monkeypatch, lambda n, loss: loss * float("nan") if n >= 5 else loss)
    assert run(_args(tiny_model_dir, sft_data, out)) == 2
    err = capsys.readouterr().err
    assert f"non-finite loss at step 5: training stopped, final/ not written; last good checkpoint: " \
           f"{out / 'checkpoints' / 'step-3'}" in err and "Traceback" not in err
    assert not (out / "final").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3"]
    assert checkpoint.verify(out / "checkpoints" / "step-3") is None
    assert all(torch.isfinite(v).all() for v in load_file(str(out / "checkpoints" / "step-3" / "model.safetensors")).values())
    assert _steps(out) == [1, 2, 3, 4]


@pytest.mark.parametrize("clip", ["max_grad_norm=1.0", "max_grad_norm=null"])
def test_nonfinite_gradient_with_a_finite_loss_also_stops(tiny_model_dir, sft_data, tmp_path, monkeypatch, capsys,
                                                           clip):
    out = tmp_path / "run"
    _forward_hook(monkeypatch, lambda n, loss: _InfGrad.apply(loss) if n == 2 else loss)
    assert run(_args(tiny_model_dir, sft_data, out, clip)) == 2
    err = capsys.readouterr().err
    assert "non-finite gradient at step 2" in err and "last good checkpoint: none" in err
    assert not (out / "final").exists()


def test_a_bounded_number_of_bad_batches_can_be_skipped(tiny_model_dir, sft_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _forward_hook(monkeypatch, lambda n, loss: loss * float("nan") if n in (5, 11) else loss)
    assert run(_args(tiny_model_dir, sft_data, out, "skip_nonfinite=2")) == 0
    err = capsys.readouterr().err
    assert "non-finite loss at step 5: batch skipped without an update (1 of skip_nonfinite=2)" in err
    assert "(2 of skip_nonfinite=2)" in err
    assert _steps(out) == [s for s in range(1, STEPS + 1) if s not in (5, 11)]
    assert all(torch.isfinite(v).all() for v in _adapter(out).values())
    # one more bad batch than allowed: stopped at the third, and the budget is kept across --resume
    out2 = tmp_path / "run2"
    _forward_hook(monkeypatch, lambda n, loss: loss * float("nan") if n in (2, 4, 5) else loss)
    assert run(_args(tiny_model_dir, sft_data, out2, "skip_nonfinite=2")) == 2
    assert "non-finite loss at step 5: training stopped" in capsys.readouterr().err
    assert json.loads((out2 / "checkpoints" / "step-3" / "state.json").read_text())["nonfinite_skipped"] == 1


def test_weights_that_are_not_finite_are_never_saved(tiny_model_dir, tmp_path):
    from clinalign.errors import TrainingStopped
    from clinalign.models.loading import load_tokenizer
    from clinalign.train.config import TrainConfig
    from clinalign.train.distributed import DistInfo
    from clinalign.train.loop import load_policy, optimizer_and_schedule

    cfg = TrainConfig(model=str(tiny_model_dir), lora_rank=4)
    model = load_policy(cfg, str(tiny_model_dir))
    opt, sched = optimizer_and_schedule(model, cfg, 10)
    info = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
    good = checkpoint.save(tmp_path, info, model, opt, sched, "none", {"step": 1})
    name, p = next((n, p) for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        p.view(-1)[0] = float("inf")
    with pytest.raises(TrainingStopped, match=rf"weight {name} is not finite.*last good checkpoint: {good}"):
        checkpoint.save(tmp_path, info, model, opt, sched, "none", {"step": 2})
    with pytest.raises(TrainingStopped, match="not writing .*final: weight"):
        checkpoint.save_final(tmp_path, info, model, load_tokenizer(tiny_model_dir), "none")
    assert not (tmp_path / "final").exists() and not (tmp_path / "checkpoints" / "step-2").exists()


@pytest.mark.slow  # signals a training process
def test_sigterm_writes_a_checkpoint_and_exits_resumable(tiny_model_dir, sft_data, straight, tmp_path,
                                                          monkeypatch, capsys):
    out = tmp_path / "run"

    def preempt(n, loss):
        if n == 7:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step, as Slurm's does
        return loss

    _forward_hook(monkeypatch, preempt)
    before = signal.getsignal(signal.SIGTERM)
    assert run(_args(tiny_model_dir, sft_data, out)) == RESUMABLE == 75
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the loop's only while it runs
    err = capsys.readouterr().err
    assert f"SIGTERM at step 7: checkpoint {out / 'checkpoints' / 'step-7'} written" in err
    assert checkpoint.verify(out / "checkpoints" / "step-7") is None and not (out / "final").exists()
    monkeypatch.undo()
    assert run(_args(tiny_model_dir, sft_data, out, "--resume")) == 0
    _same_final(straight, out)
    assert _steps(out) == list(range(1, STEPS + 1))


def test_corrupted_checkpoints_are_detected_and_the_one_before_is_used(tiny_model_dir, sft_data, straight,
                                                                       tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(straight, out)
    shutil.rmtree(out / "final")  # as if killed after the last checkpoint
    ck = out / "checkpoints"
    assert sorted(int(p.name[5:]) for p in ck.iterdir()) == [3, 6, 9, 12, 15, 16]
    flip = ck / "step-16" / "model.safetensors"
    data = bytearray(flip.read_bytes())
    data[-1] ^= 0xFF
    flip.write_bytes(bytes(data))  # same size, one bit pattern changed
    with open(ck / "step-15" / "optimizer.pt", "r+b") as f:
        f.truncate(100)  # cut short
    (ck / "step-12" / "manifest.json").unlink()  # a rename that did not finish
    assert run(_args(tiny_model_dir, sft_data, out, "--resume")) == 0
    err = capsys.readouterr().err
    assert f"checkpoint {ck / 'step-16'} is damaged (model.safetensors does not match its checksum)" in err
    assert f"checkpoint {ck / 'step-15'} is damaged (optimizer.pt is 100 bytes, the manifest says" in err
    assert f"checkpoint {ck / 'step-12'} is damaged (no manifest.json" in err
    _same_final(straight, out)  # resumed from step-9 and ended exactly where the straight run did
    assert _steps(out) == list(range(1, STEPS + 1))


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tiny_model_dir, sft_data, straight, tmp_path,
                                                                     monkeypatch, capsys):
    out = tmp_path / "run"
    real_save = torch.save

    def full_disk(obj, f, *a, **kw):
        if str(f).endswith(os.path.join(".tmp-step-6", "optimizer.pt")):
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 1024 vs 512")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full_disk)
    assert run(_args(tiny_model_dir, sft_data, out)) == 2
    err = capsys.readouterr().err
    assert f"could not write {out / 'checkpoints' / '.tmp-step-6' / 'optimizer.pt'}: [enforce fail" in err
    assert f"the last good checkpoint {out / 'checkpoints' / 'step-3'} is intact" in err and "--resume" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3"]  # no half-written one left
    assert checkpoint.verify(out / "checkpoints" / "step-3") is None
    monkeypatch.undo()
    assert run(_args(tiny_model_dir, sft_data, out, "--resume")) == 0
    _same_final(straight, out)


def test_a_failed_output_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, capsys):
    from clinalign.data.io import write_text_atomic

    target = tmp_path / "results.json"
    target.write_text("old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(WriteError, match=rf"could not write {target}: No space left on device; the previous "
                                         "version is untouched"):
        write_text_atomic(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    out = tmp_path / "gen.jsonl"
    assert run(["data", "generate", "uti_classification", "--n", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"could not write {out}: No space left on device" in err
    assert not out.exists()


@pytest.mark.parametrize("worker,signalled,rc,requeued", [
    ("trap 'exit 75' TERM; touch started; while true; do sleep 0.05; done", True, 0, True),  # preempted
    ("exit 0", False, 0, False),  # finished
    ("exit 2", False, 2, False),  # a real error is not retried forever
])
def test_slurm_script_requeues_a_preempted_run(tmp_path, worker, signalled, rc, requeued):
    import subprocess
    import time

    root = Path(__file__).resolve().parents[1]
    bin_dir, log = tmp_path / "bin", tmp_path / "scontrol.log"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(f"#!/bin/bash\n{worker}\n")  # stands in for torchrun + clinalign
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {log}\n[ "$1" = show ] && echo node1\ntrue\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "42",
           "SLURM_JOB_NODELIST": "node1", "SLURM_NNODES": "1"}
    proc = subprocess.Popen(["bash", str(root / "scripts" / "slurm_dpo.sbatch")], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if signalled:
        deadline = time.monotonic() + 20
        while not (tmp_path / "started").exists():  # training is running (and the script's trap is set)
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == rc, out
    calls = log.read_text().splitlines() if log.exists() else []
    assert ("requeue 42" in calls) == requeued, calls


def test_a_full_disk_anywhere_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """Writes outside atomic_path (a copy, a log) fail with an OSError; the CLI turns the disk's errors
    into one line naming the file, exit 2, and leaves other errors (bugs) as tracebacks."""
    from clinalign.rate import export

    dbp = tmp_path / "r.sqlite"
    from rate_server import seed_db

    seed_db(dbp, raters=("a",), admin=None)
    target = tmp_path / "p.jsonl"

    def full(con, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(export, "export_pairs", full)
    assert run(["rate", "export", "--db", str(dbp), "--pairs", str(target)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {target}: No space left on device (free space or fix the disk, then run the command again)\n"

    def bug(con, path):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "x")

    monkeypatch.setattr(export, "export_pairs", bug)
    with pytest.raises(FileNotFoundError):
        run(["rate", "export", "--db", str(dbp), "--pairs", str(target)])
