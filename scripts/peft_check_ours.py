"""Verifies adapters saved by peft-ts with Python peft 0.21 + transformers.

For each case folder (made by test/peft_compat.test.ts with PEFT_TS_EXPORT_DIR=<dir>):
  <case>/adapter/   adapter saved by peft-ts (PeftModel.savePretrained)
  <case>/merged/    mergeAndUnload() model saved by peft-ts (model.savePretrained)
  <case>/ours.json  base model folder, inputs and peft-ts's logits
loads the base model with transformers, the adapter with peft.PeftModel.from_pretrained, and
compares logits with ours (and the merged model loaded by plain transformers).

Usage:
  PEFT_TS_EXPORT_DIR=/tmp/peft-ts-export node --test dist/test/peft_compat.test.js
  /opt/pyref/bin/python scripts/peft_check_ours.py /tmp/peft-ts-export [--tol 1e-4]
Exit status 0 when every case agrees.
"""
import argparse
import json
import os
import sys
import warnings

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

warnings.filterwarnings("ignore")


def check(case_dir, tol):
    info = json.load(open(os.path.join(case_dir, "ours.json")))
    auto = AutoModelForSequenceClassification if info["task"] == "SEQ_CLS" else AutoModelForCausalLM
    ids = torch.tensor(info["input_ids"])
    ours = torch.tensor(info["logits"]).reshape(info["shape"])
    # float32 whatever dtype the base checkpoint is stored in (transformers 5 defaults to dtype="auto")
    # ours.json may name the attention implementation that computes the reference (Gemma 2's
    # soft-capping needs eager; Falcon's alibi is right in sdpa only).
    kw = {"attn_implementation": info["attn_implementation"]} if "attn_implementation" in info else {}
    base = auto.from_pretrained(info["base_dir"], dtype=torch.float32, **kw).eval()
    pm = PeftModel.from_pretrained(base, os.path.join(case_dir, "adapter")).eval()
    with torch.no_grad():
        theirs = pm(input_ids=ids).logits
    d_adapter = ((theirs - ours).abs() / (1 + ours.abs())).max().item()
    # our merge_and_unload outputs: the adapter's, unless a tied embedding was merged (the lm head changes too)
    ours_merged = torch.tensor(info.get("merged_logits", info["logits"])).reshape(info["shape"])
    with torch.no_grad():
        theirs_merged = pm.merge_and_unload()(input_ids=ids).logits
    d_peft_merge = ((theirs_merged - ours_merged).abs() / (1 + ours_merged.abs())).max().item()
    merged = auto.from_pretrained(os.path.join(case_dir, "merged"), dtype=torch.float32, **kw).eval()
    with torch.no_grad():
        d_merged = ((merged(input_ids=ids).logits - ours_merged).abs() / (1 + ours_merged.abs())).max().item()
    ok = d_adapter <= tol and d_merged <= tol and d_peft_merge <= tol
    print(f"{'OK  ' if ok else 'FAIL'} {os.path.basename(case_dir)}: adapter in peft vs ours {d_adapter:.2e}, "
          f"peft merge_and_unload vs ours {d_peft_merge:.2e}, merged in transformers vs ours {d_merged:.2e}")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    cases = sorted(d for d in os.listdir(a.root) if os.path.exists(os.path.join(a.root, d, "ours.json")))
    if not cases:
        sys.exit(f"no case folders with ours.json under {a.root}")
    results = [check(os.path.join(a.root, c), a.tol) for c in cases]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
