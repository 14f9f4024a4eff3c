"""RoPE scaling variants (yarn, dynamic NTK, longrope) against transformers.

    /opt/pyref/bin/python scripts/make_rope_fixtures.py

Writes test/fixtures/models/rope.json (inverse frequencies and attention scaling from
transformers' ROPE_INIT_FUNCTIONS, and the state a dynamic/longrope rotary embedding goes
through over a sequence of forward calls) and three tiny causal-LM fixtures in the format of
make_model_fixtures.py whose sequence length crosses the original context, so the
length-dependent types take their scaled branch.
"""
import json
import os
import sys

import torch
import transformers as tf
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_fixtures import ROOT, build, tiny  # noqa: E402

HD = 16  # head dim of the configs below (hidden 64 / 4 heads)


def cfg(rope, max_pos=64, **kw):
    return tf.LlamaConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=1, intermediate_size=32,
                          vocab_size=10, max_position_embeddings=max_pos, rope_parameters=rope, **kw)


def longrope_factors(n, lo, hi):
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


CASES = {
    "yarn": (dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=16), 64),
    "yarn_mscale": (dict(rope_type="yarn", rope_theta=500000.0, factor=8.0, original_max_position_embeddings=32,
                         mscale=0.707, mscale_all_dim=0.707, beta_fast=16, beta_slow=2), 256),
    "yarn_attention_factor_no_truncate": (dict(rope_type="yarn", rope_theta=10000.0, factor=2.0, attention_factor=1.3,
                                               original_max_position_embeddings=16, truncate=False), 32),
    "yarn_implicit_original": (dict(rope_type="yarn", rope_theta=10000.0, factor=4.0), 64),
    "dynamic": (dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0), 16),
    "longrope": (dict(rope_type="longrope", rope_theta=10000.0, original_max_position_embeddings=16,
                      short_factor=longrope_factors(HD // 2, 1.0, 1.5), long_factor=longrope_factors(HD // 2, 1.0, 6.0)), 64),
}


def init_case(rope, max_pos, seq_len=None):
    c = cfg(dict(rope), max_pos)
    fn = ROPE_INIT_FUNCTIONS[c.rope_parameters["rope_type"]]
    inv, scale = fn(c, "cpu", seq_len=seq_len) if seq_len is not None else fn(c, "cpu")
    return {"inv_freq": inv.tolist(), "attention_scaling": float(scale)}


def stateful(rope, max_pos, lengths):
    """inv_freq and scaling after each forward at the given sequence lengths (positions 0..L-1)."""
    c = cfg(dict(rope), max_pos)
    emb = tf.models.llama.modeling_llama.LlamaRotaryEmbedding(c)
    x = torch.zeros(1, 1, HD)
    steps = []
    for L in lengths:
        pos = torch.arange(L)[None]
        cos, _ = emb(x, pos)
        steps.append({"len": L, "inv_freq": emb.inv_freq.tolist(), "attention_scaling": float(emb.attention_scaling),
                      "cos_last": cos[0, -1].tolist()})
    return steps


def main():
    out = {"head_dim": HD, "cases": {}}
    for name, (rope, max_pos) in CASES.items():
        entry = {"config": {"max_position_embeddings": max_pos, "rope_parameters": rope}, "init": init_case(rope, max_pos)}
        if rope["rope_type"] in ("dynamic", "longrope"):
            entry["steps"] = stateful(rope, max_pos, [8, 24, 40, 30, 10, 50])
        out["cases"][name] = entry
    with open(os.path.join(ROOT, "rope.json"), "w") as f:
        json.dump(out, f, indent=1)
    # Whole models: T=8 positions against an original context of 4, so scaling is active.
    dec = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               tie_word_embeddings=False, pad_token_id=0)
    models = [
        ("llama_yarn_lm", dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=4), 16),
        ("llama_dynamic_lm", dict(rope_type="dynamic", rope_theta=10000.0, factor=3.0), 4),
        ("llama_longrope_lm", dict(rope_type="longrope", rope_theta=10000.0, original_max_position_embeddings=4,
                                   short_factor=longrope_factors(4, 1.0, 1.2), long_factor=longrope_factors(4, 1.0, 5.0)), 16),
    ]
    for name, rope, max_pos in models:
        build(name, tf.LlamaConfig, tf.LlamaForCausalLM, tiny(**dec, max_position_embeddings=max_pos, rope_parameters=rope),
              "lm", "left", torch.float16)


if __name__ == "__main__":
    main()
