"""Tiny random decoder-only causal LMs of the architectures in src/models/{llama,parallel,opt}.ts
that transformers 5 has beyond Llama/Mistral/Qwen2/GPT-2, with a peft LoRA adapter each.

Run with the reference Python (torch + transformers + peft):
    /opt/pyref/bin/python scripts/make_decoder_fixtures.py        # writes test/fixtures/decoders/

Per case, test/fixtures/decoders/<name>/ holds
  config.json + model.safetensors   the base model (weights stored in float16 to stay small)
  adapter/                          a LoRA adapter saved by peft (all-linear, random A and B)
  expected.safetensors              a left- and a right-padded batch with attention masks, labels,
                                    and transformers' float32 logits for the base model, the model
                                    with the adapter and the merged model (merge_and_unload), + loss
  expected.json                     greedy and beam-search token ids (base and adapter, left-padded
                                    prompts, KV cache), peft's default target modules for the
                                    model_type (null when peft has none) and the trainable-params line.
"""
import json
import os
import shutil
import warnings

import torch
from safetensors.torch import save_file
import transformers as tf
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

warnings.filterwarnings("ignore")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "decoders")
V = 100
B, T = 2, 8
PAD = 0


def cases():
    d = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=64, pad_token_id=PAD, bos_token_id=1, eos_token_id=2)
    ln = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
              pad_token_id=PAD, bos_token_id=1, eos_token_id=2)
    return [
        # name, config class, model class, config kwargs, attention implementation of the reference
        ("qwen3_lm", tf.Qwen3Config, tf.Qwen3ForCausalLM,
         dict(d, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False,
              rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}), "eager"),
        ("gemma_lm", tf.GemmaConfig, tf.GemmaForCausalLM, dict(d, num_key_value_heads=1, head_dim=16), "eager"),
        ("gemma2_lm", tf.Gemma2Config, tf.Gemma2ForCausalLM,
         dict(d, num_hidden_layers=3, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=12, sliding_window=4,
              final_logit_softcapping=4.0, attn_logit_softcapping=2.5), "eager"),
        ("gemma3_text_lm", tf.Gemma3TextConfig, tf.Gemma3ForCausalLM,
         dict(d, num_hidden_layers=3, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, sliding_window=3,
              layer_types=["sliding_attention", "full_attention", "sliding_attention"],
              rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                               "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0}}),
         "eager"),
        ("phi3_lm", tf.Phi3Config, tf.Phi3ForCausalLM,
         dict(d, num_key_value_heads=2, partial_rotary_factor=0.5, tie_word_embeddings=False), "eager"),
        ("phi_lm", tf.PhiConfig, tf.PhiForCausalLM, dict(d, partial_rotary_factor=0.5, qk_layernorm=True), "eager"),
        ("gpt_neox_lm", tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM,
         dict(ln, intermediate_size=64, rotary_pct=0.5, rotary_emb_base=10000, use_parallel_residual=True), "eager"),
        ("gpt_neox_seq_lm", tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM,
         dict(ln, intermediate_size=64, rotary_pct=0.25, use_parallel_residual=False, attention_bias=False,
              tie_word_embeddings=True), "eager"),
        ("gptj_lm", tf.GPTJConfig, tf.GPTJForCausalLM,
         dict(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64, rotary_dim=4, pad_token_id=PAD,
              bos_token_id=1, eos_token_id=2), "eager"),
        ("falcon_lm", tf.FalconConfig, tf.FalconForCausalLM,
         dict(ln, new_decoder_architecture=True, num_kv_heads=2, ffn_hidden_size=64), "eager"),
        # alibi: transformers' eager path adds the alibi bias twice (once in the mask); its default
        # sdpa path (what users get) adds it once, as the original Falcon does: that is the reference.
        ("falcon_alibi_lm", tf.FalconConfig, tf.FalconForCausalLM,
         dict(ln, alibi=True, multi_query=True, parallel_attn=True, bias=True), "sdpa"),
        ("falcon_seq_lm", tf.FalconConfig, tf.FalconForCausalLM,
         dict(ln, multi_query=False, parallel_attn=False, bias=True, tie_word_embeddings=False), "eager"),
        ("opt_lm", tf.OPTConfig, tf.OPTForCausalLM,
         dict(ln, ffn_dim=64, do_layer_norm_before=True), "eager"),
        ("opt_350m_lm", tf.OPTConfig, tf.OPTForCausalLM,
         dict(ln, ffn_dim=64, do_layer_norm_before=False, word_embed_proj_dim=16), "eager"),
    ]


def batch(gen, side):
    ids = torch.randint(3, V, (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.long)
    if side == "left":
        mask[1, :3] = 0
    else:
        mask[1, T - 3:] = 0
    ids[mask == 0] = PAD
    labels = ids.clone()
    labels[mask == 0] = -100
    return ids, mask, labels


def randomise(model, gen):
    with torch.no_grad():
        for pn, p in model.named_parameters():
            if "norm" in pn.lower() and pn.endswith("weight"):
                # Gemma's norms are (1 + w) with w = 0 at init: a small w either way.
                p.copy_((0.0 if "gemma" in type(model).__name__.lower() else 1.0) + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))


def logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float().contiguous()


def gen_ids(model, prompts, **kw):
    t = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (t - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (t - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, eos_token_id=2, pad_token_id=PAD, **kw)
    return {"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "sequences": out.tolist(), "settings": kw}


def build(name, cfg_cls, model_cls, kw, attn):
    seed = sum(map(ord, name))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = cfg_cls(**kw)
    model = model_cls(cfg).eval()
    randomise(model, gen)
    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    model.to(torch.float16).save_pretrained(out)
    for f in ("generation_config.json",):
        if os.path.exists(os.path.join(out, f)):
            os.remove(os.path.join(out, f))
    load = lambda: model_cls.from_pretrained(out, dtype=torch.float32, attn_implementation=attn).eval()
    ref = load()
    tensors = {}
    for side in ("left", "right"):
        ids, mask, labels = batch(gen, side)
        with torch.no_grad():
            o = ref(input_ids=ids, attention_mask=mask, labels=labels)
        tensors[f"{side}_input_ids"] = ids.to(torch.int32)
        tensors[f"{side}_attention_mask"] = mask.to(torch.int32)
        tensors[f"{side}_labels"] = labels.to(torch.int32)
        tensors[f"{side}_base"] = o.logits.float().contiguous()
        tensors[f"{side}_loss"] = o.loss.float().reshape(1)
    prompts = [[1, 17, 42, 8, 33], [1, 61, 3, 90]]
    gens = {"greedy": gen_ids(ref, prompts, max_new_tokens=6),
            "beam": gen_ids(ref, prompts, max_new_tokens=5, num_beams=3, num_return_sequences=2)}

    # peft adapter on every linear layer (fused qkv / gate_up projections included), random A and B.
    lcfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM",
                      init_lora_weights=False)
    pm = get_peft_model(load(), lcfg)
    trainable = pm.get_nb_trainable_parameters()
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    pm.eval()
    pm.save_pretrained(os.path.join(out, "adapter"))
    pm = PeftModel.from_pretrained(load(), os.path.join(out, "adapter")).eval()
    for side in ("left", "right"):
        tensors[f"{side}_lora"] = logits(pm, tensors[f"{side}_input_ids"].long(), tensors[f"{side}_attention_mask"].long())
    gens["greedy_lora"] = gen_ids(pm, prompts, max_new_tokens=6)
    merged = pm.merge_and_unload()
    for side in ("left", "right"):
        tensors[f"{side}_merged"] = logits(merged, tensors[f"{side}_input_ids"].long(), tensors[f"{side}_attention_mask"].long())
    save_file(tensors, os.path.join(out, "expected.safetensors"))
    mt = cfg.model_type
    default = PEFT_TARGETS.get(mt)
    meta = {
        "model_type": mt, "architecture": model_cls.__name__, "transformers": tf.__version__,
        "peft_default_targets": sorted(default) if isinstance(default, (list, set)) else default,
        "trainable": list(trainable), "generate": gens,
        "adapter_targets": sorted(json.load(open(os.path.join(out, "adapter", "adapter_config.json")))["target_modules"]),
        "linear_names": sorted({n.split(".")[-1] for n, m in ref.named_modules() if isinstance(m, torch.nn.Linear)}),
    }
    for f in ("README.md",):
        p = os.path.join(out, "adapter", f)
        if os.path.exists(p):
            os.remove(p)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(meta, f)
        f.write("\n")
    d = (tensors["left_lora"] - tensors["left_base"]).abs().max().item()
    print(f"{name}: loss {tensors['left_loss'].item():.4f} adapter changes logits by {d:.3f}; greedy {gens['greedy']['sequences'][0][-6:]}")


SEQCLS = {
    "qwen3": "Qwen3ForSequenceClassification", "gemma": "GemmaForSequenceClassification",
    "gemma2": "Gemma2ForSequenceClassification", "gemma3_text": "Gemma3TextForSequenceClassification",
    "phi3": "Phi3ForSequenceClassification", "phi": "PhiForSequenceClassification",
    "gpt_neox": "GPTNeoXForSequenceClassification", "gptj": "GPTJForSequenceClassification",
    "falcon": "FalconForSequenceClassification", "opt": "OPTForSequenceClassification",
}


def build_seqcls(name, attn):
    """<name>/seqcls/: the LM fixture's body with a random 3-label score head (score.safetensors),
    a peft SEQ_CLS adapter (peft's default targets, score in modules_to_save) and the logits."""
    lm = os.path.join(ROOT, name)
    out = os.path.join(lm, "seqcls")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    mt = json.load(open(os.path.join(lm, "config.json")))["model_type"]
    cls = getattr(tf, SEQCLS[mt])
    gen = torch.Generator().manual_seed(sum(map(ord, name)) + 1)
    load = lambda: cls.from_pretrained(lm, dtype=torch.float32, attn_implementation=attn, num_labels=3).eval()
    model = load()
    score = (0.3 * torch.randn(model.score.weight.shape, generator=gen))
    save_file({"score.weight": score.contiguous()}, os.path.join(out, "score.safetensors"))
    exp = {}
    lm_exp = __import__("safetensors.torch", fromlist=["load_file"]).load_file(os.path.join(lm, "expected.safetensors"))

    def fresh():
        m = load()
        with torch.no_grad():
            m.score.weight.copy_(score)
        return m

    ref = fresh()
    for side in ("left", "right"):
        ids, mask = lm_exp[f"{side}_input_ids"].long(), lm_exp[f"{side}_attention_mask"].long()
        labels = torch.tensor([0, 2])
        with torch.no_grad():
            o = ref(input_ids=ids, attention_mask=mask, labels=labels)
        exp[f"{side}_labels"] = labels.to(torch.int32)
        exp[f"{side}_base"] = o.logits.float().contiguous()
        exp[f"{side}_loss"] = o.loss.float().reshape(1)
    targets = None if PEFT_TARGETS.get(mt) else ["qkv_proj"]
    pm = get_peft_model(fresh(), LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="SEQ_CLS", init_lora_weights=False))
    trainable = pm.get_nb_trainable_parameters()
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n or "modules_to_save" in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    pm.eval()
    pm.save_pretrained(os.path.join(out, "adapter"))
    rm = os.path.join(out, "adapter", "README.md")
    if os.path.exists(rm):
        os.remove(rm)
    pm = PeftModel.from_pretrained(fresh(), os.path.join(out, "adapter")).eval()
    for side in ("left", "right"):
        with torch.no_grad():
            exp[f"{side}_lora"] = pm(input_ids=lm_exp[f"{side}_input_ids"].long(),
                                     attention_mask=lm_exp[f"{side}_attention_mask"].long()).logits.float().contiguous()
    save_file(exp, os.path.join(out, "expected.safetensors"))
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"architecture": cls.__name__, "trainable": list(trainable)}, f)
        f.write("\n")
    print(f"{name} seqcls: {cls.__name__} loss {exp['left_loss'].item():.4f}")


def alibi_fixture():
    """transformers' Falcon build_alibi_tensor for head counts that are and are not powers of 2."""
    from transformers.models.falcon.modeling_falcon import build_alibi_tensor
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])
    out = {"attention_mask": mask.tolist(), "cases": {}}
    for h in (4, 6, 12, 71):
        a = build_alibi_tensor(mask, h, torch.float32).reshape(2, h, -1)
        out["cases"][str(h)] = a.flatten().tolist()
    with open(os.path.join(ROOT, "alibi.json"), "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    import sys
    only = set(sys.argv[1:])
    os.makedirs(ROOT, exist_ok=True)
    alibi_fixture()
    for c in cases():
        if not only or c[0] in only:
            build(*c)
    for c in cases():
        if not only or c[0] in only:
            build_seqcls(c[0], c[4])
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(ROOT) for fn in fns)
    print(f"total fixture size {total / 1024:.1f} KiB")
