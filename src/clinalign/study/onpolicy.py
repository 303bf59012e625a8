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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clinalign.data.io import write_json, write_jsonl
from clinalign.errors import ConfigError
from clinalign.study.stages import StageRunner
from clinalign.tasks.base import Task

#: keys of the study's ``dpo:`` section read here, not by the trainer
KEYS = ("pairs", "rounds", "samples", "temperature")
#: the arms ``dpo.pairs`` may list, and the system each becomes when both are trained
ARMS = {"builder": "dpo", "on_policy": "dpo_onpolicy"}
ONPOLICY_SYSTEM = ARMS["on_policy"]


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


def run_rounds(stages: StageRunner, sp: str, task: Task, train: list[Any], opts: dict[str, Any],
               settings: dict[str, Any], *, base_model: str, base_fp: str, data_fp: str, init: Path | None, init_fp: str,
               seed: int, batch_size: int, train_fn: Callable[..., None], max_new_tokens: int | None = None,
               max_prompt_tokens: int | None = None) -> tuple[Path, str]:
    """(last round's stage dir, its fingerprint). ``max_new_tokens`` / ``max_prompt_tokens``: the study's
    evaluation settings (None: the task's length, whole prompts), so the policy is sampled as it is tested."""
    from clinalign.study.onpolicy_pairs import load_policy, sample_pairs

    limits = {k: v for k, v in (("max_new_tokens", max_new_tokens), ("max_prompt_tokens", max_prompt_tokens)) if v}
    # pairs normalised: a two-arm study reuses a single-arm on-policy study's samples, and vice versa
    sampling = {"pairs": "on_policy", **{k: opts[k] for k in KEYS if k != "pairs"}, **limits}

    policy, policy_fp = init, init_fp if init else base_fp
    out, fp = Path(), ""
    for r in range(1, opts["rounds"] + 1):
        src = policy if policy is not None else Path(base_model)

        def sample(d: Path, _resume: bool, src: Path = src, r: int = r) -> None:
            model, tok, mfp = load_policy(str(src))
            pairs, stats = sample_pairs(task, model, tok, train, samples=opts["samples"],
                                        temperature=float(opts["temperature"]), seed=seed + r,
                                        batch_size=batch_size, fingerprint=mfp, **limits)
            if not pairs:
                raise ConfigError(f"round {r}: every prompt's samples tied; no on-policy pairs "
                                  "(raise dpo.samples or dpo.temperature)")
            write_jsonl(d / "pairs.jsonl", pairs)
            write_json(d / "stats.json", {"round": r, **stats})

        sdir, sfp = stages.run(f"{sp}/dpo_round{r}_sample", {"policy": policy_fp, "data": data_fp,
                                                              "records": [x.id for x in train],
                                                              **sampling, "seed": seed + r}, sample)

        def fit(d: Path, resume: bool, sdir: Path = sdir, init_from: Path | None = policy) -> None:
            train_fn("dpo", base_model, sdir / "pairs.jsonl", d / "run", settings, seed, resume, init_from=init_from)

        out, fp = stages.run(f"{sp}/dpo_round{r}", {"model": base_fp, "init": policy_fp, "pairs": sfp,
                                                    "train": settings, "seed": seed}, fit)
        policy, policy_fp = out / "run" / "final", fp
    return out, fp


def round_stats(dpo_dir: Path) -> list[dict[str, Any]]:
    """Per round up to ``dpo_dir``'s (a ``dpo_round<R>`` stage): records, samples, pairs, ties skipped,
    mean judge score (closed-set: sample_accuracy) and samples/s; [] for off-policy DPO."""
    name = Path(dpo_dir).name
    if not name.startswith("dpo_round"):
        return []
    last = int(name.removeprefix("dpo_round"))
    return [json.loads((Path(dpo_dir).parent / f"dpo_round{r}_sample" / "stats.json").read_text())
            for r in range(1, last + 1)]



