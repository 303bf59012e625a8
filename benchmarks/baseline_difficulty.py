"""How hard is a task's synthetic data? The classical baseline (eval/baselines.py) trained on 112 and 448
records of the generator (the demo's split: val 0.05, test 0.25, seed 0), tested on the split's test
records (112) and on 160 records of another seed (448), printed per metric.

    .venv/bin/python benchmarks/baseline_difficulty.py message_triage [uti_classification ...]
"""

from __future__ import annotations

import sys

from clinalign.data.splits import split_records
from clinalign.eval import baselines
from clinalign.synthetic import generate
from clinalign.tasks import get_task


def main(task_ids: list[str]) -> None:
    for tid in task_ids:
        task = get_task(tid)
        for n in (160, 640):
            parts = split_records(task, generate(task, n, seed=0), val=0.05, test=0.25, seed=0)
            test = parts["test"] if n == 160 else generate(task, 800, seed=99)[-160:]
            rows = baselines.predict(task, parts["train"], test)
            scores = task.evaluate(test, [r["pred"] for r in rows])
            print(tid, f"train {len(parts['train'])}", f"test {len(test)}",
                  " ".join(f"{k} {v:.3f}" for k, v in scores.items()))


if __name__ == "__main__":
    main(sys.argv[1:] or ["message_triage"])
