"""Builds tiny random transformers models, applies peft 0.21 LoRA variants, randomises the
adapter weights (so outputs differ from the base), saves the adapters with peft's
save_pretrained and records peft's outputs for fixed inputs.

Output: test/fixtures/peft/<case>/{base/, adapter/, expected.json}
Run: /opt/pyref/bin/python scripts/peft_make_fixtures.py
"""
import json
import os
import shutil
import sys
import warnings

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM)

warnings.filterwarnings("ignore")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "peft")
INPUT_IDS = [[1, 5, 9, 3, 7, 2], [4, 4, 8, 11, 6, 0]]


def randomise_adapter(model, adapter, seed):
    """Gives every adapter-specific tensor (LoRA A/B, DoRA magnitude, modules_to_save copies) random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if f".{adapter}." in n or n.endswith(f".{adapter}"):
                if "lora_magnitude_vector" in n:
                    p.mul_(1 + 0.2 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def trainable_line(model):
    t, a = model.get_nb_trainable_parameters()
    return f"trainable params: {t:,d} || all params: {a:,d} || trainable%: {100 * t / a:.4f}"


def logits(model):
    with torch.no_grad():
        return model(input_ids=torch.tensor(INPUT_IDS)).logits


def flat(t):
    return [round(float(x), 7) for x in t.flatten().tolist()]


def make_case(name, build, config, extra=None, bias_random=False):
    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    torch.manual_seed(0)
    base = build()
    base.eval()
    base.save_pretrained(os.path.join(out, "base"))
    base_logits = logits(base)
    pm = get_peft_model(base, config)
    fresh_line = trainable_line(pm)
    randomise_adapter(pm, "default", 1)
    if bias_random:
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if n.endswith(".bias") and "modules_to_save" not in n and "original_module" not in n:
                    p.add_(torch.randn(p.shape, generator=g) * 0.1)
    pm.eval()
    exp = {
        "input_ids": INPUT_IDS,
        "shape": list(base_logits.shape),
        "base": flat(base_logits),
        "fresh_trainable": fresh_line,
        "lora": flat(logits(pm)),
    }
    with pm.disable_adapter():
        exp["disabled"] = flat(logits(pm))
    if extra:
        extra(pm, exp)
    pm.save_pretrained(os.path.join(out, "adapter"))
    # what peft reports after loading the saved adapter for inference / for training
    torch.manual_seed(0)
    reloaded = PeftModel.from_pretrained(build_loaded(build, out), os.path.join(out, "adapter"))
    exp["loaded_trainable"] = trainable_line(reloaded)
    exp["reloaded"] = flat(logits(reloaded))
    merged = reloaded.merge_and_unload()
    exp["merged"] = flat(logits(merged))
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(exp, f)
    print(name, exp["fresh_trainable"], "| loaded:", exp["loaded_trainable"])


def build_loaded(build, out):
    m = build().__class__.from_pretrained(os.path.join(out, "base"))
    m.eval()
    return m


def gpt2():
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=64, n_positions=32,
                                      bos_token_id=0, eos_token_id=0))


def bert():
    return BertForSequenceClassification(BertConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                                                    intermediate_size=32, vocab_size=64, max_position_embeddings=32,
                                                    num_labels=3, pad_token_id=0))


def llama():
    return LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                                        num_key_value_heads=1, intermediate_size=32, vocab_size=64,
                                        max_position_embeddings=32, bos_token_id=0, eos_token_id=0, pad_token_id=0))


def llama_tied():
    return LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                                        num_key_value_heads=1, intermediate_size=32, vocab_size=64,
                                        max_position_embeddings=32, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                                        tie_word_embeddings=True))


def llama_extra(pm, exp):
    # a second adapter (saved in adapter/second), its outputs when active
    pm.add_adapter("second", LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    randomise_adapter(pm, "second", 3)
    pm.set_adapter("second")
    pm.eval()
    exp["second"] = flat(logits(pm))
    pm.set_adapter("default")


CASES = {
    "gpt2_lora": lambda: make_case("gpt2_lora", gpt2, LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"],
                                                                 lora_dropout=0.1, task_type="CAUSAL_LM")),
    "gpt2_dora": lambda: make_case("gpt2_dora", gpt2, LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn", "c_proj"],
                                                                 use_dora=True, bias="all"), bias_random=True),
    "bert_seqcls": lambda: make_case("bert_seqcls", bert, LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"],
                                                                     task_type="SEQ_CLS", modules_to_save=["pooler"])),
    "llama_rslora": lambda: make_case("llama_rslora", llama, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                                        use_rslora=True, rank_pattern={"o_proj": 2},
                                                                        alpha_pattern={"down_proj": 3}),
                                      extra=llama_extra),
    "llama_regex_dora": lambda: make_case("llama_regex_dora", llama, LoraConfig(r=2, lora_alpha=4,
                                                                                target_modules=r".*\.(q|v)_proj",
                                                                                use_dora=True, layers_to_transform=None)),
    # LoRA on the (tied) token embedding: wte is not in peft's EMBEDDING_LAYER_NAMES, so only A/B are saved
    "gpt2_emb": lambda: make_case("gpt2_emb", gpt2, LoraConfig(r=4, lora_alpha=8, target_modules=["wte", "c_attn"],
                                                               use_rslora=True, task_type="CAUSAL_LM")),
    # DoRA on a tied embed_tokens: peft also saves embed_tokens.base_layer.weight (save_embedding_layers="auto")
    "llama_emb_dora": lambda: make_case("llama_emb_dora", llama_tied, LoraConfig(r=2, lora_alpha=4,
                                                                                 target_modules=["embed_tokens", "v_proj"],
                                                                                 use_dora=True)),
}


if __name__ == "__main__":
    os.makedirs(ROOT, exist_ok=True)
    # no arguments: every case; otherwise only the named ones
    for name in sys.argv[1:] or list(CASES):
        CASES[name]()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ROOT) for f in fs)
    print(f"total {total / 1024:.0f} KiB", file=sys.stderr)
