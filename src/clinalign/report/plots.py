"""The report's figures as PNG bytes (matplotlib's object API with the Agg canvas: no pyplot state,
no display needed). Each function returns None when there is nothing to draw."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clinalign.eval.compare import BASELINE, ONPOLICY, SYSTEMS, metric_names
from clinalign.tasks.metrics import UNPARSEABLE

COLORS = {"base": "#9e9e9e", "sft": "#4c78a8", "dpo": "#f58518", ONPOLICY: "#e45756", BASELINE: "#54a24b"}
CURVES = (("loss", "loss"), ("val_loss", "validation loss"), ("reward_margin", "reward margin"),
          ("reward_accuracy", "reward accuracy"))
STAGE_TITLES = {"sft": "SFT", "dpo": "DPO", ONPOLICY: "on-policy DPO"}
#: a system's name under its bar (short: five bars share a panel)
BAR_NAMES = {"base": "base", "sft": "SFT", "dpo": "DPO", ONPOLICY: "on-policy", BASELINE: "classical"}
LINE_STYLES = ("-", "--", ":", "-.")  # a stage's folds: one color, a line style each


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _ok(x: Any) -> bool:
    return isinstance(x, int | float) and not math.isnan(x)


def bars_png(task_id: str, task_results: Mapping[str, Any]) -> bytes | None:
    """One panel per metric: base / SFT / DPO (/ on-policy DPO / classical) bars with 95% CI whiskers, each value written under its bar."""
    metrics = [m for m in metric_names(task_results) if any(_ok(task_results[m].get(s, {}).get("value"))
                                                           for s in SYSTEMS)]
    if not metrics:
        return None
    n_systems = max(sum(s in task_results[m] for s in SYSTEMS) for m in metrics)
    fig = Figure(figsize=(max(3.0, 0.75 * n_systems + 0.6) * len(metrics), 3.0), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, m in zip(axes, metrics, strict=True):
        e = task_results[m]
        present = [s for s in SYSTEMS if s in e and _ok(e[s].get("value"))]
        vals = [e[s]["value"] for s in present]
        err = np.array([[v - (e[s]["ci"][0] if _ok(e[s]["ci"][0]) else v),
                         (e[s]["ci"][1] if _ok(e[s]["ci"][1]) else v) - v] for s, v in zip(present, vals,
                                                                                            strict=True)]).T
        ax.bar(present, vals, yerr=np.clip(err, 0, None), capsize=4, color=[COLORS[s] for s in present])
        # each value under its bar, clear of the whiskers: a 0.0 bar reads as 0.000, not as a missing one
        ax.set_xticks(range(len(present)), [f"{BAR_NAMES.get(s, s)}\n{v:.3f}" for s, v in zip(present, vals, strict=True)],
                      fontsize=8)
        ax.set_title(m, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(task_id, fontsize=10)
    return _png(fig)


def curve_series(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, list[tuple[Any, float]]]:
    """(step, value) points of ``key`` per line: one line, or one per fold (rows naming a ``fold``:
    a k-fold study's stage runs once per fold)."""
    series: dict[str, list[tuple[Any, float]]] = {}
    for i, r in enumerate(rows):
        if _ok(r.get(key)):
            series.setdefault(f"fold {r['fold']}" if "fold" in r else "", []).append((r.get("step", i), r[key]))
    return series


def curves_png(task_id: str, stage: str, rows: Sequence[Mapping[str, Any]]) -> bytes | None:
    """One stage's training curves (``stage``: sft, dpo or dpo_onpolicy) against step, from its metrics.jsonl rows
    (every fold's, in a k-fold study: a line per fold); keys a run did not log are left out."""
    panels = [(k, title) for k, title in CURVES if any(_ok(r.get(k)) for r in rows)]
    if not panels:
        return None
    fig = Figure(figsize=(3.2 * len(panels), 2.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, title) in zip(axes, panels, strict=True):
        lines = curve_series(rows, key)
        for n, (label, pts) in enumerate(lines.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=COLORS[stage], ls=LINE_STYLES[n % len(LINE_STYLES)],
                    label=label or None, marker="." if len(pts) < 30 else "")
        if len(lines) > 1:
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{task_id}: {STAGE_TITLES[stage]} training", fontsize=10)
    return _png(fig)


def reliability_png(task_id: str, summaries: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    """Reliability diagram: accuracy against mean confidence per bin, one line per system, ECE in the
    legend (below the axes, clear of the lines). A point's area grows with its bin's item count, so one
    from 2 items does not look as solid as one from 200; the counts themselves are in the report's
    calibration table (text labels on the points overlapped wherever systems agree)."""
    drawn = {s: v for s, v in summaries.items() if v.get("n")}
    if not drawn:
        return None
    fig = Figure(figsize=(4.2, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color="#444", lw=1, label="perfect")
    most = max((x["count"] for v in drawn.values() for x in v["bins"]), default=1) or 1
    for s, v in drawn.items():
        b = [x for x in v["bins"] if x["count"]]
        label = f"{s} (ECE {v['ece']:.3f})" if _ok(v.get("ece")) else s
        xs, ys = [x["confidence"] for x in b], [x["accuracy"] for x in b]
        ax.plot(xs, ys, color=COLORS.get(s), lw=1.2, label=label)
        ax.scatter(xs, ys, s=[12 + 140 * x["count"] / most for x in b], color=COLORS.get(s), alpha=0.7,
                   edgecolors="white", linewidths=0.5, zorder=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=7, frameon=False)
    ax.set_title(f"{task_id}: calibration (marker area: items in the bin)", fontsize=9)
    return _png(fig)


def confusion_labels(golds: Sequence[str], preds: Sequence[str | None]) -> list[str]:
    labels = sorted(set(golds) | {p for p in preds if p is not None})
    return labels + ([UNPARSEABLE] if any(p is None for p in preds) else [])


#: a confusion panel's inches per class, and the widest figure (inches) before panels wrap to a new row
CELL_IN, MAX_WIDTH_IN = 0.42, 11.5


def confusion_png(task_id: str, per_system: Mapping[str, tuple[Sequence[str], Sequence[str | None]]]) -> bytes | None:
    """Confusion matrices (rows gold, columns predicted), one per system; unparseable is its own column.
    A panel's size grows with the number of classes and panels wrap onto rows, so a 12-class task stays
    readable at page width instead of shrinking five wide panels into one strip."""
    from sklearn.metrics import confusion_matrix

    systems = [s for s in per_system if len(per_system[s][0])]
    if not systems:
        return None
    every_pred = [p for s in systems for p in per_system[s][1]]
    labels = confusion_labels([g for s in systems for g in per_system[s][0]], every_pred)
    rows = [lab for lab in labels if lab != UNPARSEABLE]  # gold is never unparseable
    longest = max(len(x) for x in labels)
    margin = 0.6 + 0.065 * min(longest, 28)  # room for the tick labels
    width, height = margin + CELL_IN * len(labels), margin + 0.3 + CELL_IN * len(rows)
    ncols = max(1, min(len(systems), int(MAX_WIDTH_IN // width)))
    nrows = math.ceil(len(systems) / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows + 0.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    font = 8 if len(labels) <= 8 else 7
    for ax, s in zip(axes, systems, strict=False):
        golds, preds = per_system[s]
        cm = confusion_matrix(list(golds), [UNPARSEABLE if p is None else p for p in preds],
                              labels=labels)[: len(rows)]
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=font,
                        color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=font)
        ax.set_yticks(range(len(rows)), rows, fontsize=font)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("gold", fontsize=8)
        ax.set_title(s, fontsize=9)
    for ax in axes[len(systems):]:
        ax.set_axis_off()
    fig.suptitle(f"{task_id}: confusion", fontsize=10)
    return _png(fig)
