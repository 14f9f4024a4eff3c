"""Tiny random encoder-decoder models (T5 v1.0, T5 v1.1 / flan layout, BART) with a LoRA
adapter saved by peft 0.21, and what transformers 5.17 computes from them.

Run with the reference Python (torch + transformers + peft):
    /opt/pyref/bin/python scripts/make_seq2seq_fixtures.py          # writes test/fixtures/seq2seq/
    /opt/pyref/bin/python scripts/make_seq2seq_fixtures.py --verify-ours DIR
        # DIR/<case>/adapter (saved by our getPeftModel, see test/seq2seq.test.ts with
        # PEFT_TS_EXPORT_DIR=DIR) loaded by Python peft must give DIR/<case>/ours.json's logits.

Each case: base/ (config.json + model.safetensors in float16), adapter/ (peft's LoRA on its
default targets, random B so it matters) and expected.json: a padded encoder batch, labels,
transformers' decoder inputs (labels shifted right), base / LoRA / merged logits and losses,
greedy and beam ids (base and with the adapter).
"""
import json
import os
import shutil
import sys
import warnings

import torch
from safetensors.torch import load_file, save_file
import transformers as tf
from peft import LoraConfig, PeftModel, get_peft_model

warnings.filterwarnings("ignore")
tf.logging.set_verbosity_error()
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "seq2seq")
V = 48
B, S, T = 2, 7, 5
NEW = 6


def cases():
    # Few relative buckets and a short max distance, so the log-spaced buckets are exercised.
    t5 = dict(vocab_size=V, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2, num_heads=2,
              relative_attention_num_buckets=8, relative_attention_max_distance=12, dropout_rate=0.1,
              decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    bart = dict(vocab_size=V, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
                pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                forced_eos_token_id=None, forced_bos_token_id=None)
    return [
        ("t5", tf.T5Config, dict(t5, feed_forward_proj="relu"), False),
        ("t5_v1_1", tf.T5Config, dict(t5, feed_forward_proj="gated-gelu", num_layers=3), True),
        ("bart", tf.BartConfig, dict(bart, scale_embedding=True), False),
    ]


def flat(t):
    return [round(float(x), 7) for x in t.flatten().tolist()]


def gen_cfg(model, eos=None, **kw):
    c = model.config
    return tf.GenerationConfig(decoder_start_token_id=c.decoder_start_token_id, eos_token_id=c.eos_token_id if eos is None else eos,
                               pad_token_id=c.pad_token_id, max_new_tokens=NEW, do_sample=False, **kw)


def generate(model, ids, mask, eos=None):
    with torch.no_grad():
        greedy = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg(model, eos, num_beams=1))
        beam = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg(model, eos, num_beams=3, length_penalty=1.0))
    return greedy.tolist(), beam.tolist()


def build(name, cfg_cls, kw, untied_head):
    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    seed = sum(map(ord, name))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = tf.AutoModelForSeq2SeqLM.from_config(cfg_cls(**kw))
    with torch.no_grad():
        for pn, p in model.named_parameters():
            if "norm" in pn.lower() and pn.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.copy_(0.5 * torch.randn(model.final_logits_bias.shape, generator=gen))
    base_dir = os.path.join(out, "base")
    model.to(torch.float16).save_pretrained(base_dir)
    if untied_head:
        # The flan-t5 / t5 v1.1 layout: tie_word_embeddings false and its own lm_head.weight.
        sd = load_file(os.path.join(base_dir, "model.safetensors"))
        sd["lm_head.weight"] = (0.3 * torch.randn((V, kw["d_model"]), generator=gen)).half()
        save_file(sd, os.path.join(base_dir, "model.safetensors"), metadata={"format": "pt"})
        cfg = json.load(open(os.path.join(base_dir, "config.json")))
        cfg["tie_word_embeddings"] = False
        cfg.pop("scale_decoder_outputs", None)
        json.dump(cfg, open(os.path.join(base_dir, "config.json"), "w"), indent=2)
    load = lambda: tf.AutoModelForSeq2SeqLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager").eval()
    ref = load()
    if untied_head:
        assert ref.lm_head.weight.data_ptr() != ref.shared.weight.data_ptr()

    c = ref.config
    ids = torch.randint(3, V, (B, S), generator=gen)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, S - 2:] = 0
    ids[mask == 0] = c.pad_token_id
    labels = torch.randint(3, V, (B, T), generator=gen)
    labels[1, T - 2:] = -100
    with torch.no_grad():
        o = ref(input_ids=ids, attention_mask=mask, labels=labels)
    dec_in = ref.prepare_decoder_input_ids_from_labels(labels=labels)
    greedy, beam = generate(ref, ids, mask)
    # An eos that the random model does produce (row 1's third token), so rows finish early.
    eos = greedy[1][3]
    greedy_eos, beam_eos = generate(ref, ids, mask, eos)

    lcfg = LoraConfig(task_type="SEQ_2_SEQ_LM", r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False)
    pm = get_peft_model(load(), lcfg)
    g2 = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=g2))
    pm.save_pretrained(os.path.join(out, "adapter"))
    os.remove(os.path.join(out, "adapter", "README.md"))
    pm = PeftModel.from_pretrained(load(), os.path.join(out, "adapter")).eval()
    with torch.no_grad():
        lo = pm(input_ids=ids, attention_mask=mask, labels=labels)
    lgreedy, lbeam = generate(pm, ids, mask)
    merged = pm.merge_and_unload()
    with torch.no_grad():
        mo = merged(input_ids=ids, attention_mask=mask, labels=labels)
    # loss of a batch without -100 (and no decoder mask): the decoder sees every label.
    exp = {
        "input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels.tolist(),
        "decoder_input_ids": dec_in.tolist(), "logits_shape": list(o.logits.shape),
        "base_logits": flat(o.logits), "base_loss": o.loss.item(),
        "lora_logits": flat(lo.logits), "lora_loss": lo.loss.item(),
        "merged_logits": flat(mo.logits),
        "greedy": greedy, "beam": beam, "eos": eos, "greedy_eos": greedy_eos, "beam_eos": beam_eos, "lora_greedy": lgreedy, "lora_beam": lbeam,
        "target_modules": sorted(pm.peft_config["default"].target_modules) if hasattr(pm, "peft_config") else None,
        "num_beams": 3, "max_new_tokens": NEW,
    }
    json.dump(exp, open(os.path.join(out, "expected.json"), "w"))
    print(f"{name}: logits {tuple(o.logits.shape)} loss {o.loss.item():.4f} lora {lo.loss.item():.4f} greedy {greedy} beam {beam}")


def verify_ours(d):
    ok = True
    for name, _, _, _ in cases():
        sub = os.path.join(d, name)
        if not os.path.isdir(sub):
            print(f"{name}: not exported under {d}")
            ok = False
            continue
        ours = json.load(open(os.path.join(sub, "ours.json")))
        base = tf.AutoModelForSeq2SeqLM.from_pretrained(os.path.join(ROOT, name, "base"), dtype=torch.float32).eval()
        pm = PeftModel.from_pretrained(base, os.path.join(sub, "adapter")).eval()
        kw = {k: torch.tensor(ours[k]) for k in ("input_ids", "attention_mask", "labels")}
        with torch.no_grad():
            lg = pm(**kw).logits
        err = (lg.flatten() - torch.tensor(ours["logits"])).abs().max().item()
        good = err < 1e-4
        ok &= good
        print(f"{name}: python peft loads our adapter: {'ok' if good else 'MISMATCH'} max abs diff {err:.2e}")
    sys.exit(0 if ok else 1)


def make_tokenizer():
    """A tiny T5-style tokenizer (Unigram, Metaspace, '$A </s>' post-processor) for the CLI tests."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, processors, trainers
    out = os.path.join(ROOT, "t5_tok")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    corpus = ["translate to upper case: hello world", "HELLO WORLD", "translate to upper case: good morning", "GOOD MORNING",
              "summarize: the cat sat on the mat", "cat on mat", "the quick brown fox jumps over the lazy dog"] * 4
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    tok.save(os.path.join(out, "tokenizer.json"))
    json.dump({"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "model_max_length": 64,
               "tokenizer_class": "T5Tokenizer"}, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
    t = tf.AutoTokenizer.from_pretrained(out)
    print("t5_tok:", t.get_vocab().__len__(), t("hello world").input_ids, t(text_target="HELLO WORLD").input_ids)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--verify-ours":
        verify_ours(sys.argv[2])
    os.makedirs(ROOT, exist_ok=True)
    if len(sys.argv) > 1 and sys.argv[1] == "--tokenizer":
        make_tokenizer()
        sys.exit(0)
    for c in cases():
        build(*c)
    make_tokenizer()
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(ROOT) for fn in fns)
    print(f"total fixture size {total / 1024:.1f} KiB")
