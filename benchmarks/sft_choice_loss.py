"""Is the closed-set objective where SFT under-learns? SFT with the token NLL of the gold answer plus
lambda x the cross-entropy over every allowed answer's summed log-prob (the quantity label scoring
ranks by: gold pushed up, the model's favourite wrong answers pushed down), on a task's synthetic data
split as the demo (val 0.05, test 0.25, seed 0), LoRA on the last ``lora_layers`` with the frozen
prefix computed once per (prompt, all answers). Reports label-scoring F1 on 40 training records and
on the test split. A probe, not a trainer: the finding is in benchmarks/RESULTS.md ("SFT that fits").

    .venv/bin/python benchmarks/sft_choice_loss.py message_triage '{"epochs": 3, "lam": 1.0}'
"""
import collections
import json
import random
import sys
import time

import torch

from clinalign.data.splits import split_records
from clinalign.eval.inference import predict_closed_set
from clinalign.models.loading import load_tokenizer, resolve_model_path
from clinalign.synthetic import generate
from clinalign.tasks import get_task
from clinalign.train import loop
from clinalign.train.config import TrainConfig
from clinalign.train.packing import answer_logps, pack
from clinalign.train.tokenize import answer_ids, prompt_ids


def main() -> None:
    tid, s = sys.argv[1], json.loads(sys.argv[2])
    lam, n = s.pop("lam", 1.0), s.pop("n", 160)
    task = get_task(tid)
    sp = split_records(task, generate(task, n, seed=0), val=0.05, test=0.25, seed=0)
    train, test = sp["train"], sp["test"]
    path = resolve_model_path("default")
    tok = load_tokenizer(path)
    cfg = TrainConfig(stage="sft", lora_layers=s.get("lora_layers", 6), prefix_cache=True, lr=s.get("lr", 2e-3),
                      epochs=s.get("epochs", 3), warmup_steps=4, scheduler="constant", batch_size=4, seed=0)
    loop.seed_everything(0)
    model = loop.load_policy(cfg, path)  # behind the prefix cache: frozen layers once per (prompt, answers)
    items = []  # (prompt ids, every allowed answer's ids, index of the gold answer)
    for r in train:
        p, choices = prompt_ids(tok, task.prompt(r)), task.choices_for(r)
        items.append((p, [answer_ids(tok, task.prompt(r), p, c) for c in choices], choices.index(task.answer(r))))
    t0 = time.time()
    steps = cfg.epochs * ((len(items) + 3) // 4)
    opt, sched = loop.optimizer_and_schedule(model, cfg, steps)
    rng, step = random.Random(0), 0
    for _ in range(cfg.epochs):
        order = list(range(len(items)))
        rng.shuffle(order)
        for b in range(0, len(order), 4):
            idx = order[b:b + 4]
            batch = pack([(items[i][0], items[i][1]) for i in idx], tok.pad_token_id)
            lp = answer_logps(model, batch)
            loss_nll, loss_ce, off = 0.0, 0.0, 0
            for i in idx:
                k, g = len(items[i][1]), items[i][2]
                li = lp[off:off + k]
                off += k
                loss_nll = loss_nll - li[g] / len(items[i][1][g])
                loss_ce = loss_ce - torch.log_softmax(li, 0)[g]
            loss = (loss_nll + lam * loss_ce) / len(idx)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 14 == 0:
                print(step, round(float(loss_nll) / len(idx), 3), round(float(loss_ce) / len(idx), 3), flush=True)
    res = {"settings": s, "lam": lam, "train_s": round(time.time() - t0, 1)}
    model.eval()
    with torch.inference_mode():
        for name, rs in (("train", train[:40]), ("test", test)):
            preds = [r["pred"] for r in predict_closed_set(task, model, tok, rs, batch_size=8)]
            res[name] = task.evaluate(rs, preds)
            res[name + "_dist"] = collections.Counter(preds).most_common(4)
    print(json.dumps(res))


main()
