"""Adapters saved by Python peft 0.21 that name their base model by a path relative to the
repository root (base_model_name_or_path as from_pretrained was given it, which is what peft
records), and the logits peft's AutoPeftModelFor* gives when loading the adapter folder alone.
The sequence-classification adapter has 3 labels on a base whose config.json has 2 (peft needs
num_labels=3; peft-ts reads the count off the saved classifier), the token one 5.

Output: test/fixtures/autopeft/{gpt2_base,bert_base}/, {clm,seqcls,tokcls}_adapter/, expected.json
Run from the repository root: /opt/pyref/bin/python scripts/autopeft_make_fixtures.py
"""
import json
import os
import shutil
import warnings

import torch
from peft import (AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification, AutoPeftModelForTokenClassification,
                  LoraConfig, get_peft_model)
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification,
                          BertConfig, BertForSequenceClassification, BertTokenizerFast, GPT2Config, GPT2LMHeadModel)

warnings.filterwarnings("ignore")
ROOT = "test/fixtures/autopeft"  # relative on purpose: this string is what the adapters record
assert os.path.isdir("test/fixtures"), "run from the repository root"
INPUT_IDS = [[1, 5, 9, 3, 7, 2], [4, 4, 8, 11, 6, 1]]


def flat(t):
    return [round(float(x), 7) for x in t.flatten().tolist()]


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".default." in n or n.endswith(".default"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def logits(m):
    m.eval()
    with torch.no_grad():
        return m(input_ids=torch.tensor(INPUT_IDS)).logits


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    torch.manual_seed(0)
    gpt2 = f"{ROOT}/gpt2_base"
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0,
                               eos_token_id=0)).save_pretrained(gpt2)
    bert = f"{ROOT}/bert_base"
    BertForSequenceClassification(BertConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                                             intermediate_size=32, vocab_size=64, max_position_embeddings=32,
                                             pad_token_id=0)).save_pretrained(bert)  # 2 labels
    # a 64-word WordPiece tokenizer, so the CLI can run on this base
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + ("and the of to in he that was for his it with is they unto "
             "lord god said him be shall all not them from have my which me thou thee this their but were by i israel "
             "king son people land up out day house moses came come go went man an as so egypt david jesus earth").split()
    assert len(words) == 64, len(words)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(bert)
    exp = {"input_ids": INPUT_IDS}

    pm = get_peft_model(AutoModelForCausalLM.from_pretrained(gpt2),
                        LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], task_type="CAUSAL_LM"))
    randomise(pm, 1)
    pm.save_pretrained(f"{ROOT}/clm_adapter")
    exp["clm"] = flat(logits(AutoPeftModelForCausalLM.from_pretrained(f"{ROOT}/clm_adapter")))

    pm = get_peft_model(AutoModelForSequenceClassification.from_pretrained(bert, num_labels=3, ignore_mismatched_sizes=True),
                        LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"], task_type="SEQ_CLS"))
    randomise(pm, 2)
    pm.save_pretrained(f"{ROOT}/seqcls_adapter")
    exp["seqcls"] = flat(logits(AutoPeftModelForSequenceClassification.from_pretrained(
        f"{ROOT}/seqcls_adapter", num_labels=3, ignore_mismatched_sizes=True)))

    pm = get_peft_model(AutoModelForTokenClassification.from_pretrained(bert, num_labels=5, ignore_mismatched_sizes=True),
                        LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"], task_type="TOKEN_CLS"))
    randomise(pm, 3)
    pm.save_pretrained(f"{ROOT}/tokcls_adapter")
    exp["tokcls"] = flat(logits(AutoPeftModelForTokenClassification.from_pretrained(
        f"{ROOT}/tokcls_adapter", num_labels=5, ignore_mismatched_sizes=True)))

    for a in ["clm", "seqcls", "tokcls"]:
        os.remove(f"{ROOT}/{a}_adapter/README.md")  # the template card is 5 KB of placeholders
        cfg = json.load(open(f"{ROOT}/{a}_adapter/adapter_config.json"))
        print(a, "base_model_name_or_path =", cfg["base_model_name_or_path"], "task_type =", cfg["task_type"])
    with open(f"{ROOT}/expected.json", "w") as f:
        json.dump(exp, f)


main()
