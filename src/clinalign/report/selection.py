"""How a task's settings were chosen, and how often its test split has been looked at, for the report.

From results.json's ``_selection`` (per arm: the search on the validation split, study/tune.py, or the
settings fixed in the study file) and ``_test_uses`` (the test-split ledger, study/ledger.py). Plain
text (the renderers escape it), data for the HTML page, and a PNG of the validation score per trial.
A k-fold study holds both once per fold (a list, each naming its fold).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from clinalign.report.plots import COLORS, _png

ARM_NAMES = {"sft": "SFT", "dpo": "DPO", "dpo_onpolicy": "on-policy DPO"}
STATE_MARKERS = {"complete": "o", "pruned": "x", "fail": "s"}


def per_fold(value: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """(label, dict) per split of a task-level entry (``_split``, ``_selection``, ``_test_uses``): the one
    split's dict unlabelled, or each fold's of a k-fold study labelled ``fold k``."""
    if not value:
        return []
    if isinstance(value, Mapping):
        return [("", value)]
    return [(f"fold {v['fold']}", v) for v in value]


def _prefixed(value: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """`per_fold` with each label as a prefix of the text it heads (``fold k: ``)."""
    return [(f"{label}: " if label else "", v) for label, v in per_fold(value)]


def _num(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _space(space: Mapping[str, Any]) -> str:
    parts = []
    for key, entry in space.items():
        if isinstance(entry, Mapping):
            scale = ", log scale" if entry.get("log") else (f", step {_num(entry['step'])}" if entry.get("step") else "")
            parts.append(f"{key} in [{_num(entry['low'])}, {_num(entry['high'])}]{scale}")
        else:
            parts.append(f"{key} in {{{', '.join(_num(v) for v in entry)}}}")
    return "; ".join(parts)


def _values(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_num(v)}" for k, v in params.items())


def arm_sentence(arm: str, info: Mapping[str, Any]) -> str:
    """One arm's selection in a sentence a reviewer can check against results.json."""
    name = ARM_NAMES.get(arm, arm)
    if "fixed" in info:
        return f"{name}: settings {info.get('reason', 'fixed in the study file')}" + (
            f" ({_values(info['fixed'])})." if info["fixed"] else ".")
    states = [t["state"] for t in info.get("trials", [])]
    counted = {s: states.count(s) for s in ("complete", "pruned", "fail") if s in states}
    obj, chosen = info["objective"], info["chosen"]
    direction = "higher" if obj["higher_is_better"] else "lower"
    pruner = "no pruner" if info["pruner"] == "none" else f"{info['pruner'].replace('_', ' ')} pruner"
    return (f"{name}: {info['sampler'].upper() if info['sampler'] == 'tpe' else info['sampler']} search "
            f"(Optuna, seed {info['seed']}, {pruner}) of "
            f"{info['budget']['trials']} trials over {_space(info['space'])}, each scored after every epoch by "
            f"{obj['metric']} on the {info['validation_records']} validation records ({direction} is better; "
            f"the test split was not used); {', '.join(f'{n} {s}' for s, n in counted.items())}. "
            f"Chosen: trial {chosen['trial']} ({_values(chosen['params'])}), validation {obj['metric']} "
            f"{chosen['value']:.3f} at epoch {chosen['best_epoch']}, whose weights were kept.")


def selection_lines(task_results: Mapping[str, Any]) -> list[str]:
    """The task's "How settings were chosen": one sentence per arm (and fold)."""
    return [f"{label}{arm_sentence(arm, info)}" for label, sel in _prefixed(task_results.get("_selection"))
            for arm, info in sel.items() if arm != "fold"]


def test_uses_text(task_results: Mapping[str, Any]) -> str | None:
    """"This test split has been scored under N configuration(s)", and for N > 1 why its p-values are
    then optimistic; None without a ledger record."""
    out = []
    for label, uses in _prefixed(task_results.get("_test_uses")):
        n = uses["n_configurations"]
        text = f"{label}This test split has been scored under {n} configuration{'s' if n != 1 else ''}"
        if n > 1:
            text += (" (test-split ledger): a result chosen among several looks at the same test items is "
                     "optimistic, and its p-values and intervals do not account for the other looks")
        out.append(text + ".")
    return " ".join(out) or None


def selection_data(task_results: Mapping[str, Any]) -> dict[str, Any]:
    """What the HTML page shows of the selection: its sentences, the trial table, the test-split note."""
    rows = []
    for label, sel in _prefixed(task_results.get("_selection")):
        for arm, info in sel.items():
            for t in info.get("trials", []) if arm != "fold" else []:
                chosen = t["number"] == info["chosen"]["trial"]
                rows.append([f"{label}{ARM_NAMES.get(arm, arm)}", str(t["number"]), _values(t["params"]), t["state"],
                             ", ".join(f"{s:.3f}" for s in t["epoch_scores"]),
                             "" if t["value"] is None else f"{t['value']:.3f}", "chosen" if chosen else ""])
    return {"lines": selection_lines(task_results),
            "head": ["arm", "trial", "values", "state", "validation score per epoch", "value", ""], "rows": rows,
            "test_uses": test_uses_text(task_results)}


def selection_png(task_id: str, task_results: Mapping[str, Any]) -> bytes | None:
    """The validation score of every trial, per searched arm: the kept (best) epoch's score, or the last
    one a pruned trial reached; the chosen trial ringed. None when no arm was searched."""
    panels = [(label, arm, info) for label, sel in _prefixed(task_results.get("_selection"))
              for arm, info in sel.items() if arm != "fold" and info.get("trials")]
    if not panels:
        return None
    fig = Figure(figsize=(3.4 * len(panels), 2.9), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, arm, info) in zip(axes, panels, strict=True):
        color = COLORS.get(arm, "#4c78a8")
        for state, marker in STATE_MARKERS.items():
            pts = [(t["number"], _shown(t)) for t in info["trials"] if t["state"] == state and _shown(t) is not None]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=state)
        chosen = next((t for t in info["trials"] if t["number"] == info["chosen"]["trial"]), None)
        if chosen is not None and _shown(chosen) is not None:
            ax.scatter([chosen["number"]], [_shown(chosen)], s=160, facecolors="none", edgecolors="black",
                       label="chosen")
        ax.set_xlabel("trial")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"validation {info['objective']['metric']}")
        ax.set_title(f"{label}{ARM_NAMES.get(arm, arm)}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{task_id}: settings search", fontsize=10)
    return _png(fig)


def _shown(trial: Mapping[str, Any]) -> float | None:
    """A trial's point: its value, or a pruned trial's last validation score."""
    v = trial.get("value")
    if v is None:
        scores: Sequence[float] = trial.get("epoch_scores") or []
        v = scores[-1] if scores else None
    return v if isinstance(v, int | float) and not math.isnan(v) else None
