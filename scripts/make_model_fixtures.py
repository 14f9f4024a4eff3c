"""Tiny random Hugging Face models of every architecture/head that src/models implements.

Run with the reference Python (torch + transformers):
    /opt/pyref/bin/python scripts/make_model_fixtures.py            # writes test/fixtures/models/
    /opt/pyref/bin/python scripts/make_model_fixtures.py --verify-saved DIR
        # loads each DIR/<name>/ (written by our savePretrained, see test/models_save.test.ts
        # with PEFT_TS_SAVE_DIR=DIR) in transformers and checks its logits against expected.

Each fixture folder holds config.json + model.safetensors (weights stored in float16 or
bfloat16 to keep them small) and expected.safetensors: inputs (a padded batch), labels, and
the logits + loss that transformers computes in float32 from exactly those stored weights.
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file, load_file
import transformers as tf

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "models")
V = 100  # vocab
B, T = 2, 8


def tiny(**kw):
    base = dict(vocab_size=V)
    base.update(kw)
    return base


def fixtures():
    llama3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    dec = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)
    bert = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=32)
    rob = dict(bert, max_position_embeddings=40, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    dist = dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=32)
    g = dict(n_positions=32, n_embd=32, n_layer=2, n_head=4)
    return [
        # name, config class, model class, config kwargs, task, padding side, store dtype
        ("gpt2_lm", tf.GPT2Config, tf.GPT2LMHeadModel, tiny(**g), "lm", "left", torch.float16),
        ("gpt2_seqcls", tf.GPT2Config, tf.GPT2ForSequenceClassification, tiny(**g, num_labels=3, pad_token_id=0), "seq", "right", torch.bfloat16),
        ("bert_seqcls", tf.BertConfig, tf.BertForSequenceClassification, tiny(**bert, num_labels=3), "seq", "right", torch.float16),
        ("bert_regression", tf.BertConfig, tf.BertForSequenceClassification, tiny(**bert, num_labels=1), "reg", "right", torch.float16),
        ("bert_tokcls", tf.BertConfig, tf.BertForTokenClassification, tiny(**bert, num_labels=5), "tok", "right", torch.bfloat16),
        ("roberta_seqcls", tf.RobertaConfig, tf.RobertaForSequenceClassification, tiny(**rob, num_labels=3), "seq", "right", torch.float16),
        ("roberta_tokcls", tf.RobertaConfig, tf.RobertaForTokenClassification, tiny(**rob, num_labels=4), "tok", "right", torch.float16),
        ("distilbert_seqcls", tf.DistilBertConfig, tf.DistilBertForSequenceClassification, tiny(**dist, num_labels=2), "seq", "right", torch.float16),
        ("distilbert_tokcls", tf.DistilBertConfig, tf.DistilBertForTokenClassification, tiny(**dist, num_labels=3), "tok", "right", torch.bfloat16),
        ("llama_lm", tf.LlamaConfig, tf.LlamaForCausalLM,
         tiny(**dec, num_key_value_heads=2, rope_parameters=llama3, tie_word_embeddings=False, pad_token_id=0), "lm", "left", torch.float16),
        ("llama_seqcls", tf.LlamaConfig, tf.LlamaForSequenceClassification,
         tiny(**dec, num_key_value_heads=2, num_labels=3, pad_token_id=0), "seq", "right", torch.float16),
        ("qwen2_lm", tf.Qwen2Config, tf.Qwen2ForCausalLM,
         tiny(**dec, num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True), "lm", "left", torch.bfloat16),
        ("mistral_lm", tf.MistralConfig, tf.MistralForCausalLM,
         tiny(**dec, num_key_value_heads=1, head_dim=16, sliding_window=4, tie_word_embeddings=False), "lm", "right", torch.float16),
    ]


def make_inputs(gen, pad_side, pad_id):
    ids = torch.randint(3, V, (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.long)
    npad = 3
    if pad_side == "left":
        mask[1, :npad] = 0
    else:
        mask[1, T - npad:] = 0
    ids[mask == 0] = pad_id
    return ids, mask


def build(name, cfg_cls, model_cls, kw, task, pad_side, store_dtype):
    torch.manual_seed(sum(map(ord, name)))
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    cfg = cfg_cls(**kw)
    model = model_cls(cfg).eval()
    # Larger weights than the 0.02 init so logits carry signal.
    with torch.no_grad():
        for pn, p in model.named_parameters():
            if "norm" in pn.lower() and pn.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))
    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    model.to(store_dtype).save_pretrained(out)
    # The reference: the stored (rounded) weights, loaded back in float32, eager attention.
    ref = model_cls.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    pad_id = kw.get("pad_token_id")
    ids, mask = make_inputs(gen, pad_side, pad_id if pad_id is not None else 0)
    extra = {}
    if task == "lm":
        labels = ids.clone()
        labels[mask == 0] = -100
    elif task == "seq":
        labels = torch.randint(0, kw["num_labels"], (B,), generator=gen)
    elif task == "reg":
        labels = torch.randn(B, generator=gen)
    else:
        labels = torch.randint(0, kw["num_labels"], (B, T), generator=gen)
        labels[mask == 0] = -100
        labels[0, 0] = -100
    if name.startswith("bert"):
        tt = torch.zeros(B, T, dtype=torch.long)
        tt[:, T // 2:] = 1
        extra["token_type_ids"] = tt
    with torch.no_grad():
        o = ref(input_ids=ids, attention_mask=mask, labels=labels, **extra)
    tensors = {
        "input_ids": ids.to(torch.int32),
        "attention_mask": mask.to(torch.int32),
        "labels": labels.to(torch.int32) if labels.dtype == torch.long else labels.float(),
        "logits": o.logits.float().contiguous(),
        "loss": o.loss.float().reshape(1),
    }
    for k, v in extra.items():
        tensors[k] = v.to(torch.int32)
    save_file(tensors, os.path.join(out, "expected.safetensors"))
    print(f"{name}: logits {tuple(o.logits.shape)} loss {o.loss.item():.5f}")


def verify_saved(d):
    ok = True
    for name, cfg_cls, model_cls, kw, task, pad_side, dt in fixtures():
        saved = os.path.join(d, name)
        if not os.path.isdir(saved):
            print(f"{name}: not saved under {d}")
            ok = False
            continue
        exp = load_file(os.path.join(ROOT, name, "expected.safetensors"))
        m, info = model_cls.from_pretrained(saved, attn_implementation="eager", output_loading_info=True)
        m.eval()
        bad_keys = [k for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)]
        kwargs = {"input_ids": exp["input_ids"].long(), "attention_mask": exp["attention_mask"].long()}
        if "token_type_ids" in exp:
            kwargs["token_type_ids"] = exp["token_type_ids"].long()
        with torch.no_grad():
            lg = m(**kwargs).logits
        err = (lg - exp["logits"]).abs().max().item() / exp["logits"].abs().max().item()
        cfg = json.load(open(os.path.join(saved, "config.json")))
        good = err < 1e-5 and cfg["architectures"] == [model_cls.__name__] and not bad_keys
        ok &= good
        print(f"{name}: {'ok' if good else 'MISMATCH'} rel err {err:.2e} architectures {cfg['architectures']} {[(k, info[k]) for k in bad_keys]}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--verify-saved":
        verify_saved(sys.argv[2])
    os.makedirs(ROOT, exist_ok=True)
    for f in fixtures():
        build(*f)
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(ROOT) for fn in fns)
    print(f"total fixture size {total / 1024:.1f} KiB")
