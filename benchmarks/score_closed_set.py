"""Score one trained model on a closed-set task's records by label scoring, the way the study does:
the task's metrics and the predicted-label counts. For probes outside a study (a DPO run trained by
hand from a study's SFT adapter, say).

    .venv/bin/python benchmarks/score_closed_set.py message_triage runs/demo/data/message_triage/test.jsonl RUN/final
"""
import collections
import json
import sys

import torch

from clinalign.data.io import read_records
from clinalign.eval.inference import predict_closed_set
from clinalign.models.loading import load_model, load_tokenizer
from clinalign.tasks import get_task


def main() -> None:
    task_id, records_file, path = sys.argv[1:4]
    task = get_task(task_id)
    records = read_records(records_file, task.record_type)
    tok, model = load_tokenizer(path), load_model(path).eval()
    with torch.inference_mode():
        preds = [r["pred"] for r in predict_closed_set(task, model, tok, records, batch_size=8)]
    print(json.dumps({"model": path, "metrics": task.evaluate(records, preds),
                      "predicted": collections.Counter(preds).most_common()}))


main()
