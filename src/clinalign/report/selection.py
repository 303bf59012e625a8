"""How a task's training settings were chosen, from its ``_selection`` in results.json: for each trained
arm, either the search that chose them on the validation split (space, budget, sampler and pruner, every
trial's validation score, the chosen values) or the settings fixed in the study file.

``_selection`` (written by the study)::

    {"sft": {"space": {key: [choices] | {"low", "high", "log", "step"}}, "budget": {"trials", "timeout_s"},
             "sampler", "pruner", "seed", "objective": {"metric", "split", "higher_is_better"},
             "validation_records": n, "storage": url,
             "trials": [{"number", "params", "state", "value", "epoch_scores", "best_epoch", "stage"}],
             "chosen": {"trial", "params", "value", "best_epoch"}},
     "dpo": {"fixed": {...settings...}, "reason": "fixed in the study file"}}

The report calls `selection_markdown` (the per-task "How settings were chosen" part of report.md and,
rendered, of report.html) and `selection_plot` (validation score per trial) at one place each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from clinalign.report.plots import COLORS, _png
from clinalign.report.tables import LABELS, md_escape


def _value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _space(space: Mapping[str, Any]) -> str:
    out = []
    for key, dom in space.items():
        if isinstance(dom, Mapping):
            rng = f"{_value(dom.get('low'))}–{_value(dom.get('high'))}"
            out.append(f"{key} {rng}" + (" (log scale)" if dom.get("log") else ""))
        else:
            out.append(f"{key} {{{', '.join(_value(v) for v in dom)}}}")
    return ", ".join(out)


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {_value(v)}" for k, v in params.items())


def arm_text(arm: Mapping[str, Any]) -> str:
    """One arm's selection as a sentence (plain text)."""
    if "fixed" in arm:
        return str(arm.get("reason") or "fixed in the study file") + "."
    objective = arm.get("objective") or {}
    trials = arm.get("trials") or []
    states: dict[str, int] = {}
    for t in trials:
        states[t.get("state", "?")] = states.get(t.get("state", "?"), 0) + 1
    budget = arm.get("budget") or {}
    limit = f"a budget of {budget.get('trials', '?')}" + (f" or {budget['timeout_s']} s" if budget.get("timeout_s") else "")
    outcome = f" ({', '.join(f'{n} {s}' for s, n in states.items())})" if states else ""
    direction = "higher" if objective.get("higher_is_better", True) else "lower"
    text = (f"searched by {arm.get('sampler', '?')} sampling with the {arm.get('pruner', 'no')} pruner "
            f"(seed {arm.get('seed', '?')}), {len(trials)} trial(s) of {limit}{outcome}, on "
            f"{arm.get('validation_records', '?')} {objective.get('split', 'validation')} records, objective "
            f"{objective.get('metric', '?')} ({direction} is better)")
    if arm.get("space"):
        text += f"; space: {_space(arm['space'])}"
    chosen = arm.get("chosen")
    if chosen:
        value = chosen.get("value")
        text += (f"; chosen: trial {chosen.get('trial', '?')} ({_params(chosen.get('params') or {})})"
                 + (f", validation {objective.get('metric', 'score')} {value:.3f}" if isinstance(value, int | float) else "")
                 + (f" at epoch {chosen['best_epoch']}" if chosen.get("best_epoch") else ""))
    return text + "."


def selection_markdown(task_results: Mapping[str, Any]) -> str:
    """The task's "How settings were chosen" part as Markdown (escaped); empty without ``_selection``."""
    sel = task_results.get("_selection")
    if not sel:
        return ""
    return "\n".join(f"- **{md_escape(LABELS.get(arm, arm))}**: {md_escape(arm_text(v))}" for arm, v in sel.items()) + "\n"


def selection_plot(task_results: Mapping[str, Any]) -> bytes | None:
    """Validation score per trial, one marker series per searched arm, the chosen trial ringed; None when
    no arm was searched."""
    sel = {arm: v for arm, v in (task_results.get("_selection") or {}).items() if v.get("trials")}
    scored = {arm: [t for t in v["trials"] if isinstance(t.get("value"), int | float)] for arm, v in sel.items()}
    if not any(scored.values()):
        return None
    fig = Figure(figsize=(4.2, 2.8), layout="constrained")
    fig.suptitle("validation score per trial (ringed: chosen)", fontsize=9)
    ax = fig.subplots()
    for arm, trials in scored.items():
        ax.plot([t["number"] for t in trials], [t["value"] for t in trials], "o", color=COLORS.get(arm),
                label=LABELS.get(arm, arm))
        chosen = sel[arm].get("chosen") or {}
        pick = next((t for t in trials if t["number"] == chosen.get("trial")), None)
        if pick:
            ax.plot([pick["number"]], [pick["value"]], "o", ms=12, mfc="none", color="#222")
    metric = next(iter(sel.values())).get("objective", {}).get("metric", "score")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)
