"""Records what TRL's SFTTrainer (trl 1.13, transformers 5.17) makes of small data sets: the
prepared rows (input_ids, labels = -100 where TRL masks, seq_lengths when packed), one collated
batch, and a packed batch's loss through the embedded default GPT-2.

The tokenizer is assets/default-model's plus two special tokens (<|im_start|>, <|im_end|>)
and a ChatML chat template with {% generation %} markers; the TS test adds the same tokens to
the same tokenizer.json, so the fixture holds only data and expectations.

Output: test/fixtures/sft/expected.json
Run: /opt/pyref/bin/python scripts/sft_make_fixtures.py   (needs `pip install trl` in /opt/pyref)
"""
import json
import os
import tempfile
import warnings

import datasets
import torch
import transformers
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

warnings.filterwarnings("ignore")
datasets.disable_progress_bars()
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "..", "assets", "default-model")
OUT = os.path.join(HERE, "..", "test", "fixtures", "sft")

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}"
    "{{- message.content + '<|im_end|>' }}"
    "{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

TEXTS = [
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void.",
    "Jesus wept.",
    "And God said, Let there be light: and there was light.",
    "And God saw the light, that it was good.",
    "Rejoice evermore.",
    "And the evening and the morning were the first day.",
]

PROMPT_COMPLETION = [
    {"prompt": "And God said,", "completion": " Let there be light."},
    {"prompt": "In the beginning", "completion": " God created the heaven and the earth."},
    {"prompt": "Jesus", "completion": " wept."},
]

ALPACA = [
    {"instruction": "Name the first day.", "input": "", "output": "The first day."},
    {"instruction": "Finish the verse.", "input": "In the beginning", "output": "God created the heaven."},
]

MESSAGES = [
    {"messages": [
        {"role": "system", "content": "You are wise."},
        {"role": "user", "content": "Who made the light?"},
        {"role": "assistant", "content": "God made the light."},
        {"role": "user", "content": "When?"},
        {"role": "assistant", "content": "On the first day."},
    ]},
    {"messages": [
        {"role": "user", "content": "Say amen."},
        {"role": "assistant", "content": "Amen."},
    ]},
]

CONVERSATIONS = [
    {"conversations": [{"from": "user", "value": "Say amen."}, {"from": "assistant", "value": "Amen."}]},
]

CHAT_PROMPT_COMPLETION = [
    {"prompt": [{"role": "user", "content": "Who made the light?"}],
     "completion": [{"role": "assistant", "content": "God made the light."}]},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say amen."}],
     "completion": [{"role": "assistant", "content": "Amen."}]},
]


def alpaca_format(ex):
    if ex["input"]:
        head = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                f"### Instruction:\n{ex['instruction']}\n\n### Input:\n{ex['input']}\n\n### Response:")
    else:
        head = ("Below is an instruction that describes a task. "
                "Write a response that appropriately completes the request.\n\n"
                f"### Instruction:\n{ex['instruction']}\n\n### Response:")
    return head + "\n" + ex["output"]


def tokenizer():
    tok = AutoTokenizer.from_pretrained(MODEL)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def prepare(rows, tmp, formatting_func=None, **cfg):
    tok = tokenizer()
    model = AutoModelForCausalLM.from_pretrained(MODEL)
    args = SFTConfig(output_dir=tmp, bf16=False, report_to=[], gradient_checkpointing=False, **cfg)
    tr = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                    formatting_func=formatting_func)
    ds = tr.train_dataset
    out = {"config": cfg, "rows": []}
    for r in ds:
        row = {"input_ids": r["input_ids"], "labels": r["labels"]}
        if "seq_lengths" in r:
            row["seq_lengths"] = r["seq_lengths"]
        out["rows"].append(row)
    batch = tr.data_collator([ds[i] for i in range(min(2, len(ds)))])
    out["batch"] = {k: v.tolist() for k, v in batch.items()}
    return out, tr, batch


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        cases["text"], _, _ = prepare([{"text": t} for t in TEXTS], tmp, max_length=10)
        cases["text_field"], _, _ = prepare([{"verse": t} for t in TEXTS[:3]], tmp, dataset_text_field="verse", max_length=None)
        cases["prompt_completion"], _, _ = prepare(PROMPT_COMPLETION, tmp)
        cases["prompt_completion_full"], _, _ = prepare(PROMPT_COMPLETION, tmp, completion_only_loss=False)
        # A prompt longer than max_length leaves a row with no label: TRL drops it.
        cases["prompt_completion_trunc"], _, _ = prepare(PROMPT_COMPLETION, tmp, max_length=4)
        cases["alpaca"], _, _ = prepare(ALPACA, tmp, formatting_func=alpaca_format)
        cases["chat_assistant_only"], _, _ = prepare(MESSAGES, tmp, assistant_only_loss=True)
        cases["chat_full"], _, _ = prepare(MESSAGES, tmp)
        cases["chat_from_value"], _, _ = prepare(CONVERSATIONS, tmp)
        cases["chat_prompt_completion"], _, _ = prepare(CHAT_PROMPT_COMPLETION, tmp)
        cases["pack_bfd"], tr, batch = prepare([{"text": t} for t in TEXTS], tmp, packing=True, max_length=16)
        cases["pack_bfd_split"], _, _ = prepare([{"text": t} for t in TEXTS], tmp, packing=True, max_length=16, packing_strategy="bfd_split")
        cases["pack_wrapped"], tr_w, batch_w = prepare([{"text": t} for t in TEXTS], tmp, packing=True, max_length=16, packing_strategy="wrapped")
        # The loss transformers computes on the padding-free packed batch (position_ids reset per document).
        model = AutoModelForCausalLM.from_pretrained(MODEL, attn_implementation="sdpa").eval()
        with torch.no_grad():
            cases["pack_bfd"]["loss"] = model(**batch).loss.item()
            cases["pack_wrapped"]["loss"] = model(**batch_w).loss.item()
    data = {
        "trl": __import__("trl").__version__,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens": ["<|im_start|>", "<|im_end|>"],
        "inputs": {
            "texts": TEXTS, "prompt_completion": PROMPT_COMPLETION, "alpaca": ALPACA, "messages": MESSAGES,
            "conversations": CONVERSATIONS, "chat_prompt_completion": CHAT_PROMPT_COMPLETION,
        },
        "cases": cases,
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(data, f, indent=None, separators=(",", ":"))
    print("wrote", os.path.join(OUT, "expected.json"), {k: len(v["rows"]) for k, v in cases.items()})


if __name__ == "__main__":
    main()
