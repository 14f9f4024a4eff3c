"""Loads adapters saved by peft-ts with Python peft's AutoPeftModelFor*.from_pretrained(<adapter folder>)
alone: the base model comes from the adapter_config.json's base_model_name_or_path, which peft-ts
records as the path the base was loaded from (relative to the repository root here, so run this
from the root, as peft resolves it against the working directory). Compares logits with ours.

Usage (from the repository root):
  PEFT_TS_EXPORT_DIR=/tmp/peft-ts-export node --test dist/test/peft_auto.test.js
  /opt/pyref/bin/python scripts/autopeft_check_ours.py /tmp/peft-ts-export [--tol 1e-4]
Exit status 0 when every case agrees.
"""
import argparse
import json
import os
import sys
import warnings

import torch
from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification

warnings.filterwarnings("ignore")


def check(case_dir, tol):
    info = json.load(open(os.path.join(case_dir, "ours.json")))
    cfg = json.load(open(os.path.join(case_dir, "adapter_config.json")))
    if info["task"] == "SEQ_CLS":
        # peft reads no labels; our config.json beside the adapter has them (id2label), as a model folder would.
        labels = json.load(open(os.path.join(case_dir, "config.json")))["id2label"]
        model = AutoPeftModelForSequenceClassification.from_pretrained(
            case_dir, num_labels=len(labels), id2label={int(k): v for k, v in labels.items()}, ignore_mismatched_sizes=True)
    else:
        model = AutoPeftModelForCausalLM.from_pretrained(case_dir)
    model.eval()
    with torch.no_grad():
        got = model(input_ids=torch.tensor(info["input_ids"])).logits.flatten()
    want = torch.tensor(info["logits"])
    err = (got - want).abs().max().item()
    ok = err <= tol
    print(f"{os.path.basename(case_dir)}: base {cfg['base_model_name_or_path']} -> {type(model.get_base_model()).__name__}, "
          f"max |logits diff| {err:.2e} {'OK' if ok else 'MISMATCH'}")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    root = os.path.join(a.export_dir, "autopeft")
    cases = sorted(os.listdir(root))
    results = [check(os.path.join(root, c), a.tol) for c in cases]
    sys.exit(0 if cases and all(results) else 1)


main()
