"""Settings chosen on the validation split by a search (Optuna), never by a look at the test split.

For each tuned task, ``select`` runs one search per training arm: SFT first, then DPO from the SFT model
the SFT search selected, with the same budget (``tune.trials``). Optuna proposes the values of the arm's
search space (TPE, random or grid sampler, seeded by the study's seed and the trial's number, so a
re-run proposes the same values and two workers propose different ones); each trial trains one stage
and is scored on the validation split after every epoch (study/validation.py), where Optuna's pruner
(median or successive halving) may stop it early. A trial's value is the score of the epoch whose
weights it kept (its best). The arm's selected model is the best completed trial's own weights, not
a retraining; the test split is read by nothing here.

**Trials are cached stages** (``stages/<task>/<arm>-trial-<hash of its values>``), keyed like the
study's own stages plus the trial's values: a trial whose values were tried before reuses that stage.
A trial whose training stops on its own (a non-finite or diverging loss: its values are bad) is a
failed trial that counts against the budget, and the search goes on.
**Resume.** The search lives in Optuna's storage (default ``OUT/tune.sqlite``), which knows which trials
finished, so a re-run never repeats them. A trial stopped by SIGTERM (preemption: the study exits 75)
or Ctrl-C enqueues its values again, and a trial whose worker died is failed and its values enqueued
again, so the new trial resumes the stopped stage from its last checkpoint: a dead worker is recognised
at once on its own machine (the trial records host and process id), and on other machines by Optuna's
heartbeat (RDB storages: a trial without a heartbeat for ``GRACE_S`` seconds;
``RetryHeartbeatStaleTrialCallback`` enqueues it again). A journal file has no heartbeat: a worker that died on
another machine is failed by hand (``optuna`` CLI) or by a worker later started on that machine.

**Several workers, one search.** Workers that share a storage (``tune.storage``: an RDB URL, or a
journal file on a shared disk) run disjoint trials of the same search: the search is named by the
content of what it searches (data, model, settings, space, objective), the budget counts every worker's
trials, and a trial numbered past the budget (two workers starting at once) is dropped before it
trains. Each worker waits for the others' trials before selecting, so all select the same trial; the
selected stage is copied from the worker that ran it when its folder is reachable (a shared disk),
else trained again from its values (the same stage, by content).
"""

from __future__ import annotations

import math
import os
import re
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from clinalign.data.io import read_jsonl
from clinalign.errors import RESUMABLE, ConfigError, TrainingStopped
from clinalign.hashing import fingerprint
from clinalign.study import parallel, pipeline
from clinalign.study.config import Range, TuneConfig
from clinalign.study.pipeline import PRUNED, Split, TaskRun
from clinalign.study.stages import Stage

Arm = Literal["sft", "dpo"]
#: heartbeat of a running trial in an RDB storage, and how long one may be silent before it is failed
HEARTBEAT_S, GRACE_S = 60, 300
#: how often a worker looks whether the other workers' trials have finished
POLL_S = 2.0
#: trials started after the budget was spent (two workers asking at once) are failed with this mark
SURPLUS = "surplus"


@dataclass(frozen=True)
class Selection:
    """An arm's outcome: the selected stage (its ``run/final`` holds the selected weights), the arm's
    settings with the selected values, and results.json's ``_selection[arm]``."""

    stage: Stage
    settings: dict[str, Any]
    info: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """One trial's stage and what its validation said: the score after each epoch, the epoch whose
    weights it kept (1-based), and whether the pruner stopped it."""

    stage: Stage
    scores: list[float]
    kept: int
    pruned: bool

    @property
    def value(self) -> float:
        return self.scores[self.kept - 1]


def select(run: TaskRun, split: Split, arm: Arm, settings: dict[str, Any], tune: TuneConfig,
           init: Stage | None = None) -> Selection:
    """Search ``arm``'s space on the validation split and return the selected trial (see the module
    docstring); ``init`` is the SFT stage DPO trials start from."""
    if not split.parts["val"] or run.objective is None:
        raise ConfigError(f"tasks.{run.task.id}: tune needs validation records; the split has none "
                          "(raise split.val)")
    space = tune.space(arm)
    trials = Trials(run, split, arm, settings, init)
    name = f"{run.prefix}/{arm}/{search_fingerprint(trials, tune)[:16]}"
    run.stages.log(f"[bold]tune[/bold]    {run.prefix} {arm}: {budget(tune, space)} trials over "
                   f"{', '.join(space)} on {len(split.parts['val'])} validation records ({run.objective.score})")
    study = open_search(tune, run, name, space) if parallel.is_main() else None
    if study is not None:
        _search(study, tune, space, trials)
    else:
        _follow(trials)
    number, params, source = parallel.from_main(lambda: _chosen(study, run))
    outcome = trials.train(params, copy_from=Path(source) if source else None)
    info = parallel.from_main(lambda: selection_info(study, tune, space, run, split, number, params, outcome))
    run.stages.log(f"[bold]chose[/bold]   {run.prefix} {arm}: trial {number} ({_values(params)}): "
                   f"{run.objective.score} {outcome.value:.4f} at epoch {outcome.kept}")
    return Selection(outcome.stage, {**settings, **params}, info)


class Trials:
    """How one arm's trials run: each one a cached training stage of the arm's settings with its values."""

    def __init__(self, run: TaskRun, split: Split, arm: Arm, settings: dict[str, Any], init: Stage | None):
        self.task_run, self.split, self.arm, self.settings, self.init = run, split, arm, settings, init

    def key(self) -> dict[str, Any]:
        """The arm's stage key without any trial's values: what every trial shares."""
        if self.arm == "sft":
            return pipeline.sft_key(self.task_run, self.split, self.settings)
        return pipeline.dpo_key(self.task_run, self.split, self.settings, self.init)

    def train(self, params: dict[str, Any], report: Callable[[int, dict[str, float]], bool] | None = None,
              copy_from: Path | None = None) -> Outcome:
        """The trial's stage with ``params`` over the arm's settings (cached, resumed or copied like
        any stage), and its validation scores read back from ``val_metrics.jsonl``."""
        settings = {**self.settings, **params}
        name = f"{self.arm}-trial-{fingerprint(params)[:10]}"
        run = self.task_run
        if self.arm == "sft":
            stage = pipeline.sft_stage(run, self.split, settings, name, report=report, copy_from=copy_from)
        else:  # every trial starts from the same model on the same pairs: one reference pass for all
            done = [d / "run" / "ref_logps" for d in sorted(run.stages.root.glob(f"{run.prefix}/dpo-trial-*"))
                    if d.name != name and (d / ".done").is_file() and (d / "run" / "ref_logps").is_dir()]
            stage = pipeline.dpo_stage(run, self.split, settings, self.init, name, report=report, copy_from=copy_from,
                                       reference=done[0] if done else None)
        rows = read_jsonl(stage.dir / "run" / "val_metrics.jsonl", missing_ok=True)
        score = run.objective.score
        if not rows or score not in rows[0]:
            raise ConfigError(f"{stage.dir}: no validation score {score!r} was logged; cannot select on it")
        best = [i for i, r in enumerate(rows, 1) if r.get("best")]
        kept = best[-1] if best and settings.get("restore_best", True) else len(rows)
        return Outcome(stage, [float(r[score]) for r in rows], kept, (stage.dir / PRUNED).is_file())


def search_fingerprint(trials: Trials, tune: TuneConfig) -> str:
    """What names a search: everything its trials are computed from but their values (data, model,
    prompts, settings, the SFT stage DPO starts from, seed, objective), and the space, sampler and
    pruner. The budget is not part of it: raising ``trials`` continues the same search."""
    return fingerprint({"arm": trials.arm, "stage": trials.key(), "objective": trials.task_run.objective.score,
                        "space": tune.model_dump(mode="json")[trials.arm], "sampler": tune.sampler,
                        "pruner": tune.pruner})


def budget(tune: TuneConfig, space: dict[str, Any]) -> int:
    """Trials to run: ``tune.trials``, at most every combination of a grid."""
    if tune.sampler == "grid":
        return min(tune.trials, math.prod(len(v) for v in space.values()))
    return tune.trials


# -- Optuna ----------------------------------------------------------------------------------------

def storage_url(tune: TuneConfig, out: Path) -> str:
    """The storage as given, or the default ``sqlite:///OUT/tune.sqlite``."""
    return tune.storage or f"sqlite:///{(out / 'tune.sqlite').resolve()}"


def public_storage(url: str) -> str:
    """The storage as results.json and logs show it: an RDB URL's password replaced by ``***``."""
    return re.sub(r"(://[^/:@]*):[^/@]*@", r"\1:***@", url)


def open_search(tune: TuneConfig, run: TaskRun, name: str, space: dict[str, Any]) -> Any:
    """The Optuna study of one arm's search, created or continued in its storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the study logs its own lines
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    url = storage_url(tune, run.out)
    if "://" in url:
        Path(run.out).mkdir(parents=True, exist_ok=True)
        storage: Any = optuna.storages.RDBStorage(
            url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
    else:
        from optuna.storages.journal import JournalFileBackend

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.JournalStorage(JournalFileBackend(url))
    direction = "maximize" if run.objective.higher_is_better else "minimize"
    return optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True,
                               sampler=sampler(tune, run.cfg.seed, space), pruner=pruner(tune))


def sampler(tune: TuneConfig, seed: int, space: dict[str, Any]) -> Any:
    import optuna

    if tune.sampler == "grid":
        return optuna.samplers.GridSampler(dict(space), seed=seed)
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # TPE's first trials are random; with a budget of a few trials, start modelling after 2 of them
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, tune.trials // 3)))


def pruner(tune: TuneConfig) -> Any:
    """Median: stop a trial whose best score so far is worse than the median of earlier trials' scores
    after the same epoch (once two trials have finished); successive halving: keep the best third at
    each rung (1, 3, 9 ... epochs)."""
    import optuna

    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if tune.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def suggest(trial: Any, key: str, entry: list[Any] | Range) -> Any:
    """One value of ``entry`` for ``trial`` (an integer range for integer settings)."""
    from clinalign.study.config import _is_int_setting

    if isinstance(entry, list):
        return trial.suggest_categorical(key, entry)
    if _is_int_setting(key):
        return trial.suggest_int(key, int(entry.low), int(entry.high), step=int(entry.step or 1), log=entry.log)
    return trial.suggest_float(key, entry.low, entry.high, step=entry.step, log=entry.log)


class _Surplus(Exception):
    """A trial started after the budget was spent: dropped before it trains."""


class _Stopped(Exception):
    """A trial whose training stopped on its own (a non-finite or diverging loss): a failed trial that
    counts against the budget; the search goes on."""


def _trained(trials: Trials, params: dict[str, Any], report: Callable[[int, dict[str, float]], bool]) -> Outcome:
    """``trials.train``; training that stopped for its settings (not a preemption) becomes `_Stopped`."""
    try:
        return trials.train(params, report=report)
    except TrainingStopped as e:
        if e.exit_code == RESUMABLE:
            raise
        raise _Stopped(str(e)) from None


def _search(study: Any, tune: TuneConfig, space: dict[str, Any], trials: Trials) -> None:
    """Run trials until the budget (every worker's) is spent or ``timeout_s`` has passed, then wait for
    the other workers' running trials (rank 0; under torchrun the other ranks follow, `_follow`)."""
    from optuna.trial import TrialState

    t0, n = time.monotonic(), budget(tune, space)
    while True:
        _fail_dead(study)
        all_trials = study.get_trials(deepcopy=False)
        taken = _taken(all_trials)
        waiting = any(t.state == TrialState.WAITING for t in all_trials)
        late = tune.timeout_s is not None and time.monotonic() - t0 > tune.timeout_s
        if (len(taken) < n or waiting) and not late:
            study.optimize(lambda trial: _objective(trial, study, tune, space, trials, n), n_trials=1,
                           catch=(_Surplus, _Stopped))
        elif any(t.state == TrialState.RUNNING for t in taken):
            time.sleep(POLL_S)  # another worker's trial: the selection waits for it
        else:
            break
    parallel.from_main(lambda: None)  # the other ranks: no more trials


def _follow(trials: Trials) -> None:
    """A torchrun rank other than 0: train each trial rank 0 starts, with its pruning decisions."""
    while (params := parallel.from_main(lambda: None)) is not None:
        try:
            _trained(trials, params, report=lambda _k, _s: parallel.from_main(lambda: None))
        except _Stopped:
            continue


def _taken(all_trials: list[Any]) -> list[Any]:
    """The trials that count against the budget: finished (a trial whose training stopped on its own
    included) or running, not dropped as surplus; a preempted or killed trial does not count, its
    values run again."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return [t for t in all_trials if (t.state in states or "stopped" in t.user_attrs) and not t.user_attrs.get(SURPLUS)]


def _objective(trial: Any, study: Any, tune: TuneConfig, space: dict[str, Any], trials: Trials, n: int) -> float:
    import optuna

    run = trials.task_run
    trial.set_user_attr("host", socket.gethostname())  # first: who runs it (a dead worker's trial is retried)
    trial.set_user_attr("pid", os.getpid())
    ahead = sorted(t.number for t in _taken(study.get_trials(deepcopy=False)))
    if trial.number not in ahead[:n]:
        trial.set_user_attr(SURPLUS, True)
        raise _Surplus(f"trial {trial.number}: the budget of {n} trials is spent")
    if tune.sampler != "grid":  # grid: trial k takes point k of the (seeded) grid order, on any worker
        # seeded by the trial's number: the same values on a re-run, different ones on another worker
        study.sampler = sampler(tune, run.cfg.seed + trial.number, space)
    params = {k: suggest(trial, k, entry) for k, entry in space.items()}
    parallel.from_main(lambda: params)  # the other ranks train it too
    heard: set[int] = set()

    def report(evaluation: int, scores: dict[str, float]) -> bool:
        def decide() -> bool:
            heard.add(evaluation)
            trial.report(scores[run.objective.score], evaluation)
            return trial.should_prune()

        return parallel.from_main(decide)

    try:
        outcome = _trained(trials, params, report)
    except (TrainingStopped, KeyboardInterrupt):  # preempted or interrupted: these values run again next time
        study.enqueue_trial(params, user_attrs={"retry_of": trial.number})
        raise
    except _Stopped as e:
        trial.set_user_attr("stopped", str(e))
        run.stages.log(f"trial   {run.prefix} {trials.arm} {trial.number}: {_values(params)} -> stopped: {e}")
        raise
    for k, score in enumerate(outcome.scores, 1):  # a cached stage: its scores were not heard yet
        if k not in heard:
            trial.report(score, k)
    trial.set_user_attr("stage", f"stages/{run.prefix}/{outcome.stage.dir.name}")
    trial.set_user_attr("stage_dir", str(outcome.stage.dir.resolve()))
    trial.set_user_attr("best_epoch", outcome.kept)
    run.stages.log(f"trial   {run.prefix} {trials.arm} {trial.number}: {_values(params)} -> "
                          f"{', '.join(f'{s:.4f}' for s in outcome.scores)}" + (" (pruned)" if outcome.pruned else ""))
    if outcome.pruned:
        raise optuna.TrialPruned(f"stopped after evaluation {len(outcome.scores)}")
    return outcome.value


def _fail_dead(study: Any) -> None:
    """Fail the running trials whose worker is gone, and enqueue their values again: a process of this
    machine that no longer exists at once, any other by Optuna's heartbeat (RDB storages)."""
    import optuna
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("host") != host or _alive(t.user_attrs.get("pid")):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker failed it first and enqueued it
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True  # not ours to judge: the heartbeat decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _chosen(study: Any, run: TaskRun) -> tuple[int, dict[str, Any], str | None]:
    """(number, values, stage folder) of the best completed trial; the lowest number among equals."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if not t.user_attrs.get(SURPLUS)]
    if not done:
        every = study.get_trials(deepcopy=False)
        states = [t.state.name.lower() for t in every]
        stopped = next((f"; trial {t.number}: {t.user_attrs['stopped']}" for t in every if "stopped" in t.user_attrs), "")
        raise ConfigError(f"tasks.{run.task.id}: no trial of the search completed ({', '.join(states) or 'none ran'}"
                          f"{stopped}); raise tune.trials or timeout_s, use pruner: none, or narrow the space")
    sign = 1 if run.objective.higher_is_better else -1
    best = min(done, key=lambda t: (-sign * t.value, t.number))
    return best.number, dict(best.params), best.user_attrs.get("stage_dir")


def _values(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


# -- results ---------------------------------------------------------------------------------------

def selection_info(study: Any, tune: TuneConfig, space: dict[str, Any], run: TaskRun, split: Split, number: int,
                   params: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    """results.json's ``_selection[arm]``: the space, budget, sampler, pruner and objective, every
    trial with its values, per-epoch validation scores and state, and the chosen one."""
    from optuna.trial import TrialState

    trials = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(SURPLUS) or not t.state.is_finished():
            continue
        scores = [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        trials.append({"number": t.number, "params": dict(t.params), "state": t.state.name.lower(),
                       "value": t.value if t.state == TrialState.COMPLETE else None, "epoch_scores": scores, "best_epoch": t.user_attrs.get("best_epoch"),
                       "stage": t.user_attrs.get("stage"),
                       **{k: t.user_attrs[k] for k in ("retry_of", "stopped") if k in t.user_attrs}})
    return {"space": {k: v.model_dump(mode="json") if isinstance(v, Range) else v for k, v in space.items()},
            "budget": {"trials": budget(tune, space), "timeout_s": tune.timeout_s},
            "sampler": tune.sampler, "pruner": tune.pruner, "seed": run.cfg.seed,
            "objective": {"metric": run.objective.name, "split": "validation",
                          "higher_is_better": run.objective.higher_is_better},
            "validation_records": len(split.parts["val"]), "storage": public_storage(storage_url(tune, run.out)),
            "search": study.study_name, "trials": trials,
            "chosen": {"trial": number, "params": params, "value": outcome.value, "best_epoch": outcome.kept,
                       "stage": f"stages/{run.prefix}/{outcome.stage.dir.name}"}}


def fixed_info(settings: dict[str, Any], reason: str) -> dict[str, Any]:
    """results.json's ``_selection[arm]`` for an arm whose settings were not searched."""
    return {"fixed": dict(settings), "reason": reason}
