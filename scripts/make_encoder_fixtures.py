"""Tiny random encoder classifiers (ModernBERT, DeBERTa-v2) with a LoRA adapter saved by
peft 0.21, and what transformers 5.17 computes from them (eager attention).

Run with the reference Python (torch + transformers + peft):
    /opt/pyref/bin/python scripts/make_encoder_fixtures.py      # writes test/fixtures/encoders/
    /opt/pyref/bin/python scripts/make_encoder_fixtures.py --verify-ours DIR   # Python peft loads our adapters

Each case: base/ (config.json + model.safetensors in float16), adapter/ (peft LoRA with
random B, the classifier in modules_to_save as peft adds it) and expected.json: a padded
batch, labels, and base / LoRA / merged logits and losses.
"""
import json
import os
import shutil
import sys
import warnings

import torch
import transformers as tf
from peft import LoraConfig, PeftModel, get_peft_model

warnings.filterwarnings("ignore")
tf.logging.set_verbosity_error()
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "encoders")
V = 64
B, T = 2, 12


def cases():
    # local_attention 6: local layers see 3 positions either side, so the window matters at T = 12.
    mb = dict(vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2,
              max_position_embeddings=64, local_attention=6, global_attn_every_n_layers=2, pad_token_id=0,
              bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2, embedding_dropout=0.1)
    dv2 = dict(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
               max_position_embeddings=64, relative_attention=True, position_buckets=4, max_relative_positions=-1,
               pos_att_type=["p2c", "c2p"], position_biased_input=False, norm_rel_ebd="layer_norm", share_att_key=True,
               type_vocab_size=0, pad_token_id=0)
    return [
        # name, config class, model class, kwargs, task, LoRA targets
        ("modernbert_seqcls", tf.ModernBertConfig, tf.ModernBertForSequenceClassification, dict(mb, num_labels=3), "seq", ["Wqkv", "Wo"]),
        ("modernbert_mean_seqcls", tf.ModernBertConfig, tf.ModernBertForSequenceClassification,
         dict(mb, num_labels=2, classifier_pooling="mean", norm_bias=True), "seq", ["Wqkv"]),
        ("modernbert_tokcls", tf.ModernBertConfig, tf.ModernBertForTokenClassification, dict(mb, num_labels=4), "tok", ["Wqkv", "Wi"]),
        ("deberta_v2_seqcls", tf.DebertaV2Config, tf.DebertaV2ForSequenceClassification, dict(dv2, num_labels=3), "seq", None),
        ("deberta_v2_tokcls", tf.DebertaV2Config, tf.DebertaV2ForTokenClassification, dict(dv2, num_labels=4), "tok", None),
    ]


def flat(t):
    return [round(float(x), 7) for x in t.flatten().tolist()]


def build(name, cfg_cls, model_cls, kw, task, targets):
    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    seed = sum(map(ord, name))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = model_cls(cfg_cls(**kw))
    with torch.no_grad():
        for pn, p in model.named_parameters():
            if "norm" in pn.lower() and pn.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    base_dir = os.path.join(out, "base")
    model.to(torch.float16).save_pretrained(base_dir)
    load = lambda: model_cls.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager").eval()
    ref = load()
    pad = ref.config.pad_token_id
    ids = torch.randint(3, V, (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, T - 4:] = 0
    ids[mask == 0] = pad
    if task == "seq":
        labels = torch.randint(0, kw["num_labels"], (B,), generator=gen)
    else:
        labels = torch.randint(0, kw["num_labels"], (B, T), generator=gen)
        labels[mask == 0] = -100
    with torch.no_grad():
        o = ref(input_ids=ids, attention_mask=mask, labels=labels)

    lcfg = LoraConfig(task_type="SEQ_CLS" if task == "seq" else "TOKEN_CLS", r=4, lora_alpha=8, lora_dropout=0.0,
                      init_lora_weights=False, target_modules=targets)
    pm = get_peft_model(load(), lcfg)
    g2 = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n or "modules_to_save" in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=g2))
    pm.save_pretrained(os.path.join(out, "adapter"))
    os.remove(os.path.join(out, "adapter", "README.md"))
    pm = PeftModel.from_pretrained(load(), os.path.join(out, "adapter")).eval()
    with torch.no_grad():
        lo = pm(input_ids=ids, attention_mask=mask, labels=labels)
    merged = pm.merge_and_unload()
    with torch.no_grad():
        mo = merged(input_ids=ids, attention_mask=mask, labels=labels)
    exp = {
        "input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels.tolist(), "logits_shape": list(o.logits.shape),
        "base_logits": flat(o.logits), "base_loss": o.loss.item(), "lora_logits": flat(lo.logits), "lora_loss": lo.loss.item(),
        "merged_logits": flat(mo.logits), "target_modules": sorted(pm.peft_config["default"].target_modules) if hasattr(pm, "peft_config") else None,
        "task": task,
    }
    json.dump(exp, open(os.path.join(out, "expected.json"), "w"))
    print(f"{name}: logits {tuple(o.logits.shape)} loss {o.loss.item():.4f} lora {lo.loss.item():.4f}")


def verify_ours(d):
    """DIR/<case>/adapter saved by our getPeftModel (test/encoders_new.test.ts with PEFT_TS_EXPORT_DIR=DIR)
    loaded by Python peft must give DIR/<case>/ours.json's logits."""
    ok = True
    for name, _, model_cls, _, _, _ in cases():
        sub = os.path.join(d, name)
        if not os.path.isdir(sub):
            print(f"{name}: not exported under {d}")
            ok = False
            continue
        ours = json.load(open(os.path.join(sub, "ours.json")))
        base = model_cls.from_pretrained(os.path.join(ROOT, name, "base"), dtype=torch.float32, attn_implementation="eager").eval()
        pm = PeftModel.from_pretrained(base, os.path.join(sub, "adapter")).eval()
        with torch.no_grad():
            lg = pm(input_ids=torch.tensor(ours["input_ids"]), attention_mask=torch.tensor(ours["attention_mask"])).logits
        err = (lg.flatten() - torch.tensor(ours["logits"])).abs().max().item()
        ok &= err < 1e-4
        print(f"{name}: python peft loads our adapter: {'ok' if err < 1e-4 else 'MISMATCH'} max abs diff {err:.2e}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--verify-ours":
        verify_ours(sys.argv[2])
    os.makedirs(ROOT, exist_ok=True)
    only = sys.argv[1:]
    for c in cases():
        if not only or c[0] in only:
            build(*c)
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(ROOT) for fn in fns)
    print(f"total fixture size {total / 1024:.1f} KiB")
