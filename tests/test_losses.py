"""The DPO family against TRL 1.16 on the same log-probs.

TRL 1.16 computes its losses inline in ``DPOTrainer._compute_loss`` (no standalone loss function), so
we run that very method, bound to a namespace that carries the trainer's settings, with a stub model
whose per-token log-probs sum to the log-probs under test and precomputed reference log-probs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from clinalign.errors import ConfigError
from clinalign.train.losses import LOSSES, sft_loss
from helpers import dpo_loss, make_loss

trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
trl_kto = pytest.importorskip("trl.trainer.kto_trainer")

B, T = 6, 4  # pairs, answer tokens per sequence in the stub


class _Accel:
    device = torch.device("cpu")

    def gather_for_metrics(self, x):
        return x if isinstance(x, torch.Tensor) and x.dim() else torch.as_tensor(x).reshape(1)

    gather = gather_for_metrics


def _trl_loss(
    pc, pr, rc, rr, lengths_c, lengths_r, *, beta, loss_types, loss_weights=None, label_smoothing=0.0
):
    """Run TRL's ``_compute_loss`` on given summed log-probs; returns (loss, TRL's logged metrics)."""
    n = pc.numel()
    width = T + 2
    completion_mask = torch.zeros(2 * n, width, dtype=torch.long)
    log_probs = torch.zeros(2 * n, width - 1, dtype=torch.float64)
    for i, (logp, length) in enumerate(
        zip(torch.cat([pc, pr]), torch.cat([lengths_c, lengths_r]), strict=True)
    ):
        k = int(length)
        completion_mask[i, width - k :] = 1
        log_probs[i, width - 1 - k :] = logp / k  # k tokens summing to the sequence log-prob
    outputs = SimpleNamespace(
        log_probs=log_probs,
        entropy=torch.zeros_like(log_probs),
        mean_logits=torch.zeros_like(log_probs),
        is_top1=torch.zeros_like(log_probs, dtype=torch.bool),
    )
    model = lambda **kw: outputs  # noqa: E731
    model.training = True
    trainer = SimpleNamespace(
        model=model,
        accelerator=_Accel(),
        aux_loss_enabled=False,
        precompute_ref_logps=True,
        ld_alpha=None,
        f_divergence_type="reverse_kl",
        loss_types=loss_types,
        loss_weights=loss_weights or [1.0] * len(loss_types),
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(2 * n, width, dtype=torch.long),
        "attention_mask": torch.ones(2 * n, width, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    loss = trl_dpo.DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, trainer._metrics["train"]


def _logps(seed: int):
    g = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = (-(torch.rand(B, generator=g, dtype=torch.float64) * 20 + 0.5) for _ in range(4))
    lengths_c = torch.randint(1, T + 1, (B,), generator=g)
    lengths_r = torch.randint(1, T + 1, (B,), generator=g)
    return pc, pr, rc, rr, lengths_c, lengths_r


@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_matches_trl_per_pair(loss_type, beta):
    pc, pr, rc, rr, lc, lr = _logps(seed=int(beta * 10))
    ours = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type=loss_type, chosen_lengths=lc, rejected_lengths=lr)
    for i in range(B):  # TRL returns the batch mean: compare pair by pair
        s = slice(i, i + 1)
        trl, metrics = _trl_loss(pc[s], pr[s], rc[s], rr[s], lc[s], lr[s], beta=beta, loss_types=[loss_type])
        assert abs(float(ours.losses[i]) - float(trl)) < 1e-6
        assert abs(float(ours.chosen_rewards[i]) - metrics["rewards/chosen"][0]) < 1e-6
        assert abs(float(ours.rejected_rewards[i]) - metrics["rewards/rejected"][0]) < 1e-6
    trl_mean, _ = _trl_loss(pc, pr, rc, rr, lc, lr, beta=beta, loss_types=[loss_type])
    assert abs(float(ours.losses.mean()) - float(trl_mean)) < 1e-6


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_conservative_matches_trl(eps):
    """TRL 1.16 dropped label smoothing from its sigmoid loss; its ``aot`` loss applies exactly the cDPO
    formula -(1-eps) log sigma(h) - eps log sigma(-h) to sorted log-ratios, and for a batch of one
    sorting is the identity, so per pair it is TRL's cDPO. Also checked against the closed form."""
    pc, pr, rc, rr, lc, lr = _logps(seed=3)
    ours = dpo_loss(pc, pr, rc, rr, beta=0.2, loss_type="conservative", label_smoothing=eps)
    same = dpo_loss(pc, pr, rc, rr, beta=0.2, loss_type="sigmoid", label_smoothing=eps)
    torch.testing.assert_close(ours.losses, same.losses, rtol=0, atol=0)
    for i in range(B):
        s = slice(i, i + 1)
        trl, _ = _trl_loss(
            pc[s], pr[s], rc[s], rr[s], lc[s], lr[s], beta=0.2, loss_types=["aot"], label_smoothing=eps
        )
        assert abs(float(ours.losses[i]) - float(trl)) < 1e-6
    h = 0.2 * ((pc - rc) - (pr - rr))
    closed = [
        -(1 - eps) * math.log(1 / (1 + math.exp(-x))) - eps * math.log(1 / (1 + math.exp(x))) for x in h
    ]
    assert max(abs(a - b) for a, b in zip(ours.losses.tolist(), closed, strict=True)) < 1e-9


def test_rpo_matches_trl_sigmoid_plus_weighted_sft():
    """RPO = DPO + alpha * NLL(chosen). TRL 1.16 spells it loss_type=["sigmoid", "sft"] with weights
    [1, alpha]; its NLL is the token mean over the batch's chosen answers, equal to our per-example
    mean when the chosen answers have the same length (as here)."""
    pc, pr, rc, rr, _, lr = _logps(seed=5)
    lc = torch.full((B,), 3)
    alpha = 0.7
    ours = dpo_loss(pc, pr, rc, rr, beta=0.1, rpo_alpha=alpha, chosen_nll=-pc / lc)
    trl, _ = _trl_loss(
        pc, pr, rc, rr, lc, lr, beta=0.1, loss_types=["sigmoid", "sft"], loss_weights=[1.0, alpha]
    )
    assert abs(float(ours.losses.mean()) - float(trl)) < 1e-6
    plain = dpo_loss(pc, pr, rc, rr, beta=0.1)
    torch.testing.assert_close(ours.losses - plain.losses, alpha * (-pc / lc))


def test_ipo_without_lengths_is_the_papers_sequence_form():
    pc, pr, rc, rr, _, _ = _logps(seed=7)
    out = dpo_loss(pc, pr, rc, rr, beta=0.25, loss_type="ipo")
    torch.testing.assert_close(out.losses, ((pc - rc) - (pr - rr) - 2.0) ** 2)


def test_gradient_pushes_chosen_up_and_rejected_down():
    """For every registered paired loss; KTO's "rejected" slot is the KL estimate, tested below."""
    pc = torch.tensor([-5.0], requires_grad=True)
    pr = torch.tensor([-5.0], requires_grad=True)
    one = torch.tensor([3])
    for loss_type, cls in LOSSES.items():
        if cls.unpaired:
            continue
        pc.grad = pr.grad = None
        dpo_loss(
            pc, pr, torch.tensor([-5.0]), torch.tensor([-5.0]), loss_type=loss_type,
            chosen_lengths=one, rejected_lengths=one,
        ).losses.sum().backward()
        assert pc.grad.item() < 0 < pr.grad.item(), loss_type


def test_module_wrapper_and_errors():
    pc, pr, rc, rr, _, _ = _logps(seed=9)
    mod = make_loss("hinge", beta=0.3)
    torch.testing.assert_close(
        mod(pc, pr, rc, rr).losses, dpo_loss(pc, pr, rc, rr, beta=0.3, loss_type="hinge").losses
    )
    with pytest.raises(ConfigError, match="unknown DPO loss_type 'nope'"):
        dpo_loss(pc, pr, rc, rr, loss_type="nope")
    with pytest.raises(ConfigError, match="sigmoid loss needs reference"):
        dpo_loss(pc, pr, None, None)
    with pytest.raises(ConfigError, match="kto loss needs labels"):
        dpo_loss(pc, pr, rc, rr, loss_type="kto")
    with pytest.raises(ConfigError):
        make_loss("nope")
    with pytest.raises(ConfigError, match="chosen_nll"):
        dpo_loss(pc, pr, rc, rr, rpo_alpha=1.0)
    with pytest.raises(ConfigError, match="label_smoothing"):
        dpo_loss(pc, pr, rc, rr, label_smoothing=0.5)


def test_sft_loss_is_token_mean_cross_entropy_on_answer_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 7, 1, 2, 9]])
    keep = labels != -100
    expected = -F.log_softmax(logits, -1)[keep].gather(-1, labels[keep][:, None]).mean()
    torch.testing.assert_close(sft_loss(logits, labels), expected)
    torch.testing.assert_close(sft_loss(logits, labels, reduction="sum"), expected * keep.sum())


def _mean(logp, lengths):
    return logp / lengths


@pytest.mark.parametrize(("beta", "gamma", "eps"), [(2.0, 0.5, 0.0), (0.5, 1.2, 0.1)])
def test_simpo_matches_trl_cpo_trainer(beta, gamma, eps):
    """TRL 1.16 has SimPO as CPOTrainer(loss_type="simpo", cpo_alpha=0) on per-token mean log-probs."""
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    pc, pr, rc, rr, lc, lr = _logps(seed=11)
    ours = dpo_loss(pc, pr, None, None, beta=beta, loss_type="simpo", simpo_gamma=gamma, label_smoothing=eps,
                    chosen_lengths=lc, rejected_lengths=lr)
    trainer = SimpleNamespace(alpha=0.0, loss_type="simpo", simpo_gamma=gamma, beta=beta, label_smoothing=eps,
                              accelerator=_Accel())
    trl, trl_c, trl_r = CPOTrainer.cpo_loss(trainer, _mean(pc, lc), _mean(pr, lr))
    assert float((ours.losses - trl).abs().max()) < 1e-6
    assert float((ours.chosen_rewards - trl_c).abs().max()) < 1e-6
    assert float((ours.rejected_rewards - trl_r).abs().max()) < 1e-6
    h = beta * (pc / lc - pr / lr) - gamma  # the paper's eq. 6, by hand
    closed = -(1 - eps) * F.logsigmoid(h) - eps * F.logsigmoid(-h)
    torch.testing.assert_close(ours.losses, closed)


@pytest.mark.parametrize("beta", [0.1, 0.25])
def test_orpo_matches_trl_orpo_trainer(beta):
    """TRL's ORPO loss is nll - beta * logsigmoid(log odds), its nll the token mean over the batch's chosen
    answers: per pair (a batch of one) that is our per-example -mean log-prob."""
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    pc, pr, _, _, lc, lr = _logps(seed=13)
    ours = dpo_loss(pc, pr, None, None, beta=beta, loss_type="orpo", chosen_lengths=lc, rejected_lengths=lr)
    trainer = SimpleNamespace(beta=beta, accelerator=_Accel())
    for i in range(B):
        s = slice(i, i + 1)
        or_losses, trl_c, trl_r, _, _ = ORPOTrainer.odds_ratio_loss(trainer, _mean(pc[s], lc[s]), _mean(pr[s], lr[s]))
        trl = -pc[s] / lc[s] - or_losses.mean()  # TRL: loss = policy_nll_loss - losses.mean()
        assert abs(float(ours.losses[i]) - float(trl)) < 1e-6
        assert abs(float(ours.chosen_rewards[i]) - float(trl_c)) < 1e-6
        assert abs(float(ours.rejected_rewards[i]) - float(trl_r)) < 1e-6


def _trl_kto(logps, kl_logps, ref, ref_kl, labels, *, beta, dw, uw):
    """Run TRL 1.16's ``KTOTrainer._compute_loss`` with a stub model whose completions sum to ``logps``."""
    n, width = logps.numel(), 3
    log_probs = torch.zeros(n, width - 1, dtype=torch.float64)
    log_probs[:, -1] = logps
    outputs = SimpleNamespace(log_probs=log_probs, entropy=torch.zeros_like(log_probs),
                              mean_logits=torch.zeros_like(log_probs))
    model = lambda **kw: outputs  # noqa: E731
    model.training = True
    trainer = SimpleNamespace(
        model=model, accelerator=_Accel(), aux_loss_enabled=False, precompute_ref_logps=True, calculate_KL=True,
        loss_type="kto", beta=beta, desirable_weight=dw, undesirable_weight=uw,
        _compute_kl_logps=lambda m, b: kl_logps, _metrics={"train": defaultdict(list)}, _total_train_tokens=0,
        _tp_size=1,
    )
    mask = torch.zeros(n, width, dtype=torch.long)
    mask[:, -1] = 1
    inputs = {"input_ids": torch.zeros(n, width, dtype=torch.long), "attention_mask": torch.ones(n, width, dtype=torch.long),
              "completion_mask": mask, "label": labels, "ref_logps": ref, "ref_KL_logps": ref_kl}
    return trl_kto.KTOTrainer._compute_loss(trainer, model, inputs, return_outputs=False), trainer._metrics["train"]


@pytest.mark.parametrize(("beta", "dw", "uw"), [(0.1, 1.0, 1.0), (0.5, 1.0, 1.33)])
def test_kto_matches_trl_kto_trainer(beta, dw, uw):
    pc, pr, rc, rr, _, _ = _logps(seed=17)
    labels = torch.tensor([True, False, True, True, False, False])
    ours = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="kto", labels=labels, desirable_weight=dw,
                    undesirable_weight=uw)
    trl, metrics = _trl_kto(pc, pr, rc, rr, labels, beta=beta, dw=dw, uw=uw)
    assert abs(float(ours.losses.mean()) - float(trl)) < 1e-6
    z0 = max(0.0, float((pr - rr).mean()))
    assert abs(metrics["kl"][0] - z0) < 1e-6
    reward = beta * (pc - rc)
    assert abs(float(reward[labels].mean()) - metrics["rewards/chosen"][0]) < 1e-6
    assert abs(float(reward[~labels].mean()) - metrics["rewards/rejected"][0]) < 1e-6
    # per row, eq. 7 by hand; rewards are (better side, worse side) around the KL reference point
    for i in range(B):
        r = float(pc[i] - rc[i])
        sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
        want = dw * (1 - sig(beta * (r - z0))) if labels[i] else uw * (1 - sig(beta * (z0 - r)))
        assert abs(float(ours.losses[i]) - float(want)) < 1e-9
        margin = float(ours.chosen_rewards[i] - ours.rejected_rewards[i])
        assert abs(margin - (beta * (r - z0) if labels[i] else beta * (z0 - r))) < 1e-9


def test_kto_gradient_raises_desirable_and_lowers_undesirable():
    pc = torch.tensor([-5.0, -5.0], requires_grad=True)
    ref = torch.tensor([-5.0, -5.0])
    dpo_loss(pc, torch.tensor([-6.0, -6.0]), ref, ref, loss_type="kto", labels=torch.tensor([True, False])).losses.sum().backward()
    assert pc.grad[0].item() < 0 < pc.grad[1].item()


def _kto_worker(rank: int, world: int, init: str, rows: tuple, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        half = [t[rank::world] for t in rows]  # this rank's rows of the global batch
        torch.save(dpo_loss(*half[:4], loss_type="kto", labels=half[4]).losses, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_kto_reference_point_is_the_mean_over_every_process(tmp_path):
    """2 gloo processes with 3 rows each give each row the loss 1 process gives it in the batch of 6:
    z0 is the KL estimate of the global batch, not of the rank's rows."""
    import torch.multiprocessing as mp

    pc, pr, rc, rr, _, _ = _logps(seed=17)
    pr = rr + torch.tensor([2.0, 0.1, 0.5, 0.3, 0.2, 0.4], dtype=rr.dtype)  # z0 > 0: 0.58 global, 0.9 on rank 0
    labels = torch.tensor([True, False, True, True, False, False])
    want = dpo_loss(pc, pr, rc, rr, loss_type="kto", labels=labels).losses
    local = dpo_loss(pc[0::2], pr[0::2], rc[0::2], rr[0::2], loss_type="kto", labels=labels[0::2]).losses
    assert not torch.allclose(local, want[0::2])  # the test can tell per-rank from global
    out = str(tmp_path / "kto")
    mp.spawn(_kto_worker, args=(2, f"file://{tmp_path / 'pg'}", (pc, pr, rc, rr, labels), out), nprocs=2, join=True)
    for rank in range(2):
        torch.testing.assert_close(torch.load(f"{out}.{rank}"), want[rank::2], atol=1e-6, rtol=0)


def test_registry_says_which_losses_skip_the_reference():
    assert {n for n, s in LOSSES.items() if not s.reference} == {"simpo", "orpo"}
    assert {n for n, s in LOSSES.items() if s.unpaired} == {"kto"}
    assert {"sigmoid", "ipo", "hinge", "conservative"} <= set(LOSSES)


def test_a_loss_and_its_knobs_load_nested_or_flat_and_dump_as_set():
    """``loss: {type: simpo, gamma: 0.5}`` and the flat keys of earlier versions (with a deprecation
    warning) give the same loss; the saved config round-trips; ``beta`` stands on its own."""
    import yaml

    from clinalign.train.config import TrainConfig, build_config

    nested = build_config(None, ["loss={type: simpo, beta: 2.0, gamma: 0.7, label_smoothing: 0.1}"])
    with pytest.warns(FutureWarning, match="simpo_gamma, label_smoothing: flat loss keys are deprecated"):
        flat = build_config(None, ["simpo_gamma=0.7", "label_smoothing=0.1"], {"loss": "simpo", "beta": 2.0})
    assert nested.loss == flat.loss and type(flat.loss).__name__ == "SimPO"
    assert (flat.loss.gamma, flat.loss.label_smoothing, flat.loss.beta, flat.beta) == (0.7, 0.1, 2.0, 2.0)
    saved = yaml.safe_load(flat.dump())
    assert saved["beta"] == 2.0 and saved["loss"] == {"type": "simpo", "label_smoothing": 0.1, "gamma": 0.7}
    assert TrainConfig.model_validate(saved).loss == flat.loss  # what a run saved loads back
    assert yaml.safe_load(build_config(None, [], {"loss": "kto"}).dump())["loss"] == "kto"  # no knob set: a name
    # --loss NAME sets the type of a section that overrides started; loss.KNOB adds to a named loss
    assert build_config(None, ["loss.gamma=0.3"], {"loss": "simpo"}).loss.gamma == 0.3
    kto = build_config(None, ["loss.desirable_weight=2"], {"loss": "kto"}).loss
    assert (kto.type, kto.desirable_weight, kto.undesirable_weight) == ("kto", 2.0, 1.0)
    pc, pr, rc, rr, lc, lr = _logps(seed=19)
    torch.testing.assert_close(flat.loss(pc, pr, chosen_lengths=lc, rejected_lengths=lr).losses,
                               dpo_loss(pc, pr, rc, rr, loss_type="simpo", beta=2.0, simpo_gamma=0.7,
                                        label_smoothing=0.1, chosen_lengths=lc, rejected_lengths=lr).losses)


@pytest.mark.parametrize(("overrides", "message"), [
    (["simpo_gamma=0.5"], "config: simpo_gamma: not a knob of the sigmoid loss (its knobs: beta, rpo_alpha, "
                          "label_smoothing)"),
    (["loss={type: sigmoid, gamma: 0.5}"], "config: loss.gamma: not a knob of the sigmoid loss"),
    (["loss=ipo", "label_smoothing=0.0"], "config: label_smoothing: not a knob of the ipo loss"),
    (["loss={type: kto, desirable_weight: 2}", "desirable_weight=3"], "config: desirable_weight: given twice"),
    (["loss={type: simpo, beta: 2.0}", "beta=3"], "config: beta: given twice"),
    (["loss={type: simpo, gamma: x}"], "config: loss.gamma: Input should be a valid number"),
    (["loss=nope"], "config: loss: unknown loss 'nope'; choose one of sigmoid, conservative, hinge, ipo"),
])
def test_a_knob_of_another_loss_fails_at_load_naming_the_key(overrides, message):
    from clinalign.train.config import build_config

    with pytest.raises(ConfigError) as e:
        build_config(None, overrides, {"stage": "dpo"})
    assert str(e.value).startswith(message), str(e.value)


def test_a_study_dpo_section_takes_the_loss_section(tmp_path):
    """study/config checks each stage's settings as TrainConfig at load: the nested loss passes, a knob
    of another loss fails there with the section and key named."""
    import yaml

    from clinalign.study.config import load_study

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")

    def study(dpo):
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump({"name": "s", "model": str(tmp_path / "m"), "dpo": dpo,
                                        "tasks": [{"id": "uti_classification", "n": 20}]}))
        return path

    cfg = load_study(study({"loss": {"type": "simpo", "gamma": 0.5}}))
    assert cfg.train_settings("dpo", cfg.tasks[0])["loss"] == {"type": "simpo", "gamma": 0.5}
    with pytest.raises(ConfigError, match=r"study.yaml: dpo: loss.gamma: not a knob of the sigmoid loss"):
        load_study(study({"loss": {"type": "sigmoid", "gamma": 0.5}}))


def test_the_cli_help_and_the_readme_list_every_registered_loss_and_knob():
    import re
    from pathlib import Path

    from typer.testing import CliRunner

    from clinalign.train.cli import app

    text = " ".join(CliRunner().invoke(app, ["dpo", "--help"], env={"COLUMNS": "300"}).output.split())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = [line.split("|")[1:-1] for line in readme.splitlines() if line.startswith("| `")]
    table = {cells[0]: cells[-1] for cells in rows}  # the loss table: names | what | own knobs
    for name, cls in LOSSES.items():
        own = [k for k in cls.knobs() if k not in ("beta", "rpo_alpha")]
        assert re.search(rf"\b{name}\b" + (rf" \({', '.join(own)}\)" if own else ""), text), name
        row = next(knobs for names, knobs in table.items() if f"`{name}`" in names)
        assert sorted(re.findall(r"`(\w+)`", row)) == sorted(own), name
