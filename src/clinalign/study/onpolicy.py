"""On-policy and iterative DPO in a study: ``dpo: {pairs: on_policy, rounds: R, samples: K, temperature: T}``.

Round r samples K answers per training prompt from round r-1's model (round 1: the SFT model, or the
base with ``dpo_from: base``), judges them with the task (study/onpolicy_pairs.py), and trains DPO from that
model on the pairs. Sampling and training are each a cached stage (``<task>/dpo_round<r>_sample`` and
``<task>/dpo_round<r>``), keyed by the upstream model's stage fingerprint: a second run with the same
model does not re-sample. The last round is the study's "dpo" system; per-round sample accuracy / mean
judge score and samples/s are returned for the report.

``pairs: [builder, on_policy]`` trains both arms from the same SFT model and evaluates them on the same
test items: ``dpo`` on the task's builder (off-policy) pairs, exactly the single-arm stage, and
``dpo_onpolicy`` on the rounds above, so the paired tests answer "does on-policy beat off-policy?".
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from clinalign.data.io import write_json, write_jsonl
from clinalign.errors import ConfigError
from clinalign.eval.compare import ONPOLICY
from clinalign.hashing import fingerprint
from clinalign.study.onpolicy_pairs import load_policy, sample_pairs
from clinalign.study.pipeline import Model, Split, TaskRun, placed, run_trainer, trained
from clinalign.study.stages import Stage

#: keys of the study's ``dpo:`` section read here, not by the trainer
KEYS = ("pairs", "rounds", "samples", "temperature")
#: the arms ``dpo.pairs`` may list, and the system each becomes when both are trained
ARMS = {"builder": "dpo", "on_policy": ONPOLICY}


def split_settings(dpo: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(on-policy options or None, the rest for the trainer); checks the options."""
    rest = {k: v for k, v in dpo.items() if k not in KEYS}
    opts = {k: dpo[k] for k in KEYS if k in dpo}
    if not opts:
        return None, rest
    pairs = opts.get("pairs", "on_policy")
    arms = [pairs] if isinstance(pairs, str) else pairs
    if (not isinstance(arms, list) or "on_policy" not in arms or len(set(arms)) != len(arms)
            or not set(arms) <= set(ARMS)):
        raise ConfigError(f"dpo.pairs: {pairs!r}; use 'on_policy', or [builder, on_policy] to train both arms "
                          "(off-policy pairs alone are the default: leave dpo.pairs out and set the task's pairs:)")
    both = "builder" in arms
    opts = {"rounds": 1, "samples": 4, "temperature": 1.0, **opts,
            "pairs": ["builder", "on_policy"] if both else "on_policy"}
    if not isinstance(opts["rounds"], int) or opts["rounds"] < 1:
        raise ConfigError(f"dpo.rounds must be an integer >= 1, got {opts['rounds']!r}")
    if not isinstance(opts["samples"], int) or opts["samples"] < 2:
        raise ConfigError(f"dpo.samples must be an integer >= 2, got {opts['samples']!r}")
    if not float(opts["temperature"]) > 0:
        raise ConfigError(f"dpo.temperature must be > 0, got {opts['temperature']!r}")
    return opts, rest


def systems(opts: dict[str, Any] | None) -> dict[str, str]:
    """{system: arm} of the study's DPO: one "dpo" system (builder or on-policy pairs), or both arms."""
    if opts is None:
        return {"dpo": "builder"}
    if opts["pairs"] == "on_policy":
        return {"dpo": "on_policy"}
    return {ARMS[a]: a for a in opts["pairs"]}


def sample_key(run: TaskRun, policy: Model, data_fp: str, records: list[Any], opts: dict[str, Any],
               limits: dict[str, int], r: int) -> dict[str, Any]:
    # pairs normalised: a two-arm study reuses a single-arm on-policy study's samples, and vice versa
    return {"policy": policy.fp, "data": data_fp, "records": [x.id for x in records], "pairs": "on_policy",
            **{k: opts[k] for k in KEYS if k != "pairs"}, **limits, "seed": run.cfg.seed + r}


def fit_key(run: TaskRun, policy: Model, samples: Stage, settings: dict[str, Any]) -> dict[str, Any]:
    return {"model": run.base.fp, "init": policy.fp, "pairs": samples.fp, "train": settings, "seed": run.cfg.seed}


def rounds_stage(run: TaskRun, split: Split, opts: dict[str, Any], settings: dict[str, Any],
                 init: Stage | None) -> Stage:
    """On-policy DPO, round after round, from ``init``'s final weights (None: the base model); returns
    the last round's training stage. The policy is sampled with the study's evaluation settings
    (``max_new_tokens``, ``max_prompt_tokens``), so it is sampled as it is tested."""
    ev = run.cfg.eval_settings(run.entry)
    limits = {k: v for k, v in (("max_new_tokens", ev.max_new_tokens), ("max_prompt_tokens", ev.max_prompt_tokens)) if v}
    records = split.parts["train"][: run.entry.max_pairs]
    # the sample stages key on the split, the prompts and the placed trainer settings together
    data_fp = fingerprint([split.stage.fp, split.prompts, placed(settings)])
    policy = trained(init) if init else run.base
    start = policy.path if init else None  # from the base model: no adapter to continue
    for r in range(1, opts["rounds"] + 1):
        samples = run.stages.run(f"{run.prefix}/dpo_round{r}_sample",
                                 sample_key(run, policy, data_fp, records, opts, limits, r),
                                 partial(_sample, run, policy, records, opts, limits, r))
        stage = run.stages.run(f"{run.prefix}/dpo_round{r}", fit_key(run, policy, samples, settings),
                               partial(_fit, run, samples, settings, start), every_rank=True)
        policy = trained(stage)
        start = policy.path
    return stage


def _sample(run: TaskRun, policy: Model, records: list[Any], opts: dict[str, Any], limits: dict[str, int], r: int,
            out: Path, _resume: bool) -> None:
    model, tok, mfp = load_policy(str(policy.path))
    ev = run.cfg.eval_settings(run.entry)
    pairs, stats = sample_pairs(run.task, model, tok, records, samples=opts["samples"],
                                temperature=float(opts["temperature"]), seed=run.cfg.seed + r,
                                batch_size=ev.batch_size, fingerprint=mfp, **limits)
    if not pairs:
        raise ConfigError(f"round {r}: every prompt's samples tied; no on-policy pairs "
                          "(raise dpo.samples or dpo.temperature)")
    write_jsonl(out / "pairs.jsonl", pairs)
    write_json(out / "stats.json", {"round": r, **stats})


def _fit(run: TaskRun, samples: Stage, settings: dict[str, Any], start: Path | None, out: Path, resume: bool) -> None:
    run_trainer("dpo", run.base.path, samples.dir / "pairs.jsonl", out / "run", settings, run.cfg.seed, resume,
                init_from=start)


def round_stats(dpo_dir: Path) -> list[dict[str, Any]]:
    """Per round up to ``dpo_dir``'s (a ``dpo_round<R>`` stage): records, samples, pairs, ties skipped,
    mean judge score (closed-set: sample_accuracy) and samples/s; [] for off-policy DPO."""
    name = Path(dpo_dir).name
    if not name.startswith("dpo_round"):
        return []
    last = int(name.removeprefix("dpo_round"))
    return [json.loads((Path(dpo_dir).parent / f"dpo_round{r}_sample" / "stats.json").read_text())
            for r in range(1, last + 1)]



