"""Does SFT learn what the data contains? Train one SFT run on a task's synthetic data (split as the demo:
val 0.05, test 0.25, seed 0), then report, side by side with the classical baseline on the same split:
label-scoring accuracy/F1 on 40 training records (does it even fit?) and on the test split, the
predicted-label distribution (a collapsed prior shows here), and the mean loss per answer token split
into *decision* tokens (where the allowed answers branch) and *format* tokens (forced by the answer's
shape).

    .venv/bin/python benchmarks/sft_learning.py message_triage runs/probe '{"epochs": 3, "lr": 2e-3, ...}'

The third argument is the training settings (TrainConfig keys) as JSON; '{"skip_train": true}'
measures the base model. Prints one JSON line; also OUT/res.json.
"""
import collections
import json
import sys
import time
from pathlib import Path

import torch

from clinalign.data.io import write_jsonl
from clinalign.data.pairs import sft_examples
from clinalign.data.splits import split_records
from clinalign.eval.inference import predict_closed_set
from clinalign.models.loading import load_model, load_tokenizer, resolve_model_path
from clinalign.synthetic import generate
from clinalign.tasks import get_task
from clinalign.train.tokenize import answer_ids, prompt_ids


def baseline(task, train, test):
    """The issue's original baseline (fixed C=10), kept so figures compare across commits."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    X = [task.prompt(r) for r in train]  # noqa: N806
    y = [task.answer(r) for r in train]
    m = make_pipeline(TfidfVectorizer(ngram_range=(1,2), sublinear_tf=True), LogisticRegression(C=10, class_weight="balanced", max_iter=2000))
    m.fit(X, y)
    return list(m.predict([task.prompt(r) for r in test]))

def decision_loss(task, model, tok, recs):
    """mean NLL on decision tokens (where choices branch) vs forced format tokens."""
    dec, fmt = [], []
    for r in recs:
        p = prompt_ids(tok, task.prompt(r))
        choices = [answer_ids(tok, task.prompt(r), p, c) for c in task.choices_for(r)]
        gold = answer_ids(tok, task.prompt(r), p, task.answer(r))
        ids = torch.tensor([p + gold])
        with torch.no_grad():
            lg = model(input_ids=ids).logits[0, len(p)-1:-1].float()
        lp = lg.log_softmax(-1).gather(-1, torch.tensor(gold)[:, None]).squeeze(-1)
        for j in range(len(gold)):
            nxt = {c[j] for c in choices if len(c) > j and c[:j] == gold[:j]}
            (dec if len(nxt) > 1 else fmt).append(-float(lp[j]))
    return sum(dec)/max(1,len(dec)), sum(fmt)/max(1,len(fmt)), len(dec)/len(recs), len(fmt)/len(recs)

def main():
    tid, out = sys.argv[1], Path(sys.argv[2])
    settings = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    n = int(settings.pop("n", 160))
    task = get_task(tid)
    recs = generate(task, n, seed=0)
    sp = split_records(task, recs, val=0.05, test=0.25, seed=0)
    train, test = sp["train"], sp["test"]
    out.mkdir(parents=True, exist_ok=True)
    res = {"task": tid, "settings": settings, "n_train": len(train), "n_test": len(test)}
    bp = baseline(task, train, test)
    res["baseline"] = task.evaluate(test, bp)
    base = resolve_model_path("default")
    tok = load_tokenizer(base)
    if settings.get("skip_train"):
        path = base
    else:
        write_jsonl(out / "sft.jsonl", sft_examples(task, train))
        from clinalign.train.api import train as tr
        t0 = time.time()
        s = {k: v for k, v in settings.items() if k not in ("skip_train",)}
        path = tr("sft", model=base, data=out / "sft.jsonl", out=out / "run", settings=s, seed=0)
        res["train_s"] = round(time.time() - t0, 1)
        res["final_loss"] = [json.loads(x)["loss"] for x in (out / "run" / "metrics.jsonl").read_text().splitlines()][-5:]
    model = load_model(path).eval()
    t0 = time.time()
    with torch.inference_mode():
        for name, rs in (("train", train[:40]), ("test", test)):
            rows = predict_closed_set(task, model, tok, rs, batch_size=8)
            preds = [r["pred"] for r in rows]
            res[name] = task.evaluate(rs, preds)
            res[name + "_pred_dist"] = collections.Counter(preds).most_common(4)
        res["dec_fmt_loss_train"] = decision_loss(task, model, tok, train[:24])
    res["eval_s"] = round(time.time() - t0, 1)
    print(json.dumps(res))
    (out / "res.json").write_text(json.dumps(res, indent=1))

main()
