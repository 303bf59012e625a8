"""What a study's training stages are validated on: the task's metric on the validation split, scored
on the live model exactly as the test split is scored later, after every epoch.

Closed-set tasks rank each allowed answer by log-likelihood (eval/inference.py, the same scoring as the
test; the frozen layers' outputs are remembered across epochs when the trainer caches them), so a
validation costs a fraction of an epoch. Generation tasks would have to generate every validation
answer after every epoch, which takes minutes per epoch on a CPU: they select on the validation loss
unless the study's ``tune.objective`` names one of their metrics.

The trainer (train/) knows no task metric; the study hands it one as a ``train.loop.Validation``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from clinalign.study.config import EvalConfig
from clinalign.tasks import Task
from clinalign.tasks.base import Metric
from clinalign.train.loop import Validation

#: the trainer's own validation score (train/sft.py, train/dpo.py): lower is better
VAL_LOSS = "val_loss"

Report = Callable[[int, dict[str, float]], bool]


@dataclass(frozen=True)
class Objective:
    """The validation score a stage's best epoch (and a search's best trial) is chosen on: ``score`` as
    ``val_metrics.jsonl`` names it, the task ``metric`` it computes (None: the trainer's loss), and its
    direction."""

    score: str
    metric: Metric | None
    higher_is_better: bool

    @property
    def name(self) -> str:
        """The metric's own name (``f1_yes``; ``val_loss`` for the loss), as results and reports name it."""
        return self.metric.name if self.metric is not None else VAL_LOSS


def objective_for(task: Task, objective: str | None = None) -> Objective:
    """``objective`` (a metric of ``task``, or ``val_loss``), or by default the task's primary metric
    for closed-set tasks and the validation loss for generation tasks (see the module docstring)."""
    name = objective or (task.metrics[0].name if task.is_closed_set else VAL_LOSS)
    if name == VAL_LOSS:
        return Objective(VAL_LOSS, None, False)
    metric = next(m for m in task.metrics if m.name == name)
    return Objective(f"val_{name}", metric, metric.higher_is_better)


def task_validation(task: Task, records: Sequence[Any], ev: EvalConfig, objective: Objective,
                    report: Report | None = None) -> Validation:
    """The trainer's ``Validation`` of ``objective`` on ``records`` (the validation split); ``report``
    hears every evaluation (a search's pruner). With the loss as objective the trainer computes the
    score itself, and this one only names it primary and passes the evaluations on."""
    if objective.metric is None:
        return Validation(lambda *_: {}, {}, primary=objective.score, report=report)
    metric = objective.metric

    def scores(model: Any, tokenizer: Any) -> dict[str, float]:
        rows = predict_live(task, model, tokenizer, records, ev)
        return {objective.score: float(metric(records, [r["pred"] for r in rows]))}

    return Validation(scores, {objective.score: objective.higher_is_better}, primary=objective.score, report=report)


def predict_live(task: Task, model: Any, tokenizer: Any, records: Sequence[Any], ev: EvalConfig) -> list[dict[str, Any]]:
    """Prediction rows of the model being trained, by the evaluation settings of the test: closed-set
    answers scored (through whatever wraps the model: its frozen-layer cache, DDP), or generated."""
    from clinalign.eval.inference import predict_closed_set, predict_generation

    if task.is_closed_set and ev.closed_set_mode == "score":
        return predict_closed_set(task, model, tokenizer, list(records), batch_size=ev.batch_size,
                                  max_prompt_tokens=ev.max_prompt_tokens)
    with _generating(model) as generator:
        return predict_generation(task, generator, tokenizer, list(records), batch_size=ev.batch_size,
                                  max_new_tokens=ev.max_new_tokens or task.max_new_tokens,
                                  max_prompt_tokens=ev.max_prompt_tokens)


@contextmanager
def _generating(model: Any) -> Any:
    """The model under the trainer's wrappers, with its key/value cache on (training turns it off)."""
    from clinalign.models.layers import unwrap

    inner = unwrap(model)
    config = inner.config
    was = config.use_cache
    config.use_cache = True
    try:
        yield inner
    finally:
        config.use_cache = was
