"""peft 0.21's adapter composition on tiny random models: add_weighted_adapter for every
deterministic combination type, several active adapters at once (base_model.set_adapter with a
list), and get_layer_status / get_model_status.

Output: test/fixtures/peft_weighted/<case>/{base/, a/, b/, c/, expected.json}
  expected.json: inputs, logits with ['a', 'b'] active, and per combination: for every LoRA
  layer the new adapter's A and B (not for *svd: SVD signs are arbitrary) and its delta weight.
Run: /opt/pyref/bin/python scripts/peft_weighted_fixtures.py
"""
import json
import os
import shutil
import warnings

import torch
from peft import LoraConfig, get_peft_model
from peft.peft_model import get_layer_status, get_model_status
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

warnings.filterwarnings("ignore")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "peft_weighted")
INPUT_IDS = [[1, 5, 9, 3, 7, 2], [4, 4, 8, 11, 6, 0]]


def flat(t):
    return [float("%.7g" % x) for x in t.detach().flatten().tolist()]


def randomise(model, adapter, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if f".{adapter}." in n or n.endswith(f".{adapter}"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def logits(model):
    with torch.no_grad():
        return model(input_ids=torch.tensor(INPUT_IDS)).logits


def status_json(s):
    d = dict(s.__dict__)
    return d


COMBOS = [
    # (name, adapters, weights, kwargs)
    ("linear", ["a", "b"], [0.7, -0.4], {}),
    ("cat", ["a", "b", "c"], [0.7, -0.4, 1.3], {}),
    ("svd", ["a", "b", "c"], [0.7, -0.4, 1.3], {}),
    ("svd_rank3", ["a", "c"], [1.0, 0.5], {"combination_type": "svd", "svd_rank": 3}),
    ("ties", ["a", "b"], [0.7, 0.9], {"density": 0.5}),
    ("ties_frequency", ["a", "b"], [0.7, -0.9], {"combination_type": "ties", "density": 0.6, "majority_sign_method": "frequency"}),
    ("ties_svd", ["a", "b"], [0.7, 0.9], {"density": 0.5}),
    ("magnitude_prune", ["a", "b"], [0.7, 0.9], {"density": 0.3}),
    ("magnitude_prune_svd", ["a", "b", "c"], [0.7, 0.9, -0.2], {"density": 0.5}),
    ("single", ["c"], [2.0], {"combination_type": "svd"}),
    ("dare_ties_one", ["a"], [1.5], {"combination_type": "dare_ties", "density": 0.5}),
]


def make_case(name, build, configs):
    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    torch.manual_seed(0)
    base = build().eval()
    base.save_pretrained(os.path.join(out, "base"))
    pm = get_peft_model(base, configs["a"], adapter_name="a")
    for i, k in enumerate(["b", "c"]):
        pm.add_adapter(k, configs[k])
    for i, k in enumerate(["a", "b", "c"]):
        randomise(pm, k, 10 + i)
    pm.eval()
    for k in ["a", "b", "c"]:
        pm.set_adapter(k)
        pm.save_pretrained(os.path.join(out, "tmp"), selected_adapters=[k])
        src = os.path.join(out, "tmp", k)  # peft saves a non-"default" adapter in a subfolder
        shutil.copytree(src, os.path.join(out, k), ignore=shutil.ignore_patterns("a", "b", "c", "README.md"))
        shutil.rmtree(os.path.join(out, "tmp"))
    exp = {"input_ids": INPUT_IDS}
    # several active adapters: outputs summed
    pm.base_model.set_adapter(["a", "b"])
    exp["active_ab"] = flat(logits(pm))
    exp["layer_status_ab"] = [status_json(s) for s in get_layer_status(pm)]
    exp["model_status_ab"] = status_json(get_model_status(pm))
    pm.base_model.disable_adapter_layers()
    exp["disabled_layers"] = flat(logits(pm))
    exp["model_status_disabled"] = status_json(get_model_status(pm))
    pm.base_model.enable_adapter_layers()
    pm.base_model.merge_adapter(["a"])
    exp["model_status_merged_a"] = status_json(get_model_status(pm))
    pm.base_model.unmerge_adapter()
    pm.set_adapter("a")
    exp["combos"] = {}
    for cname, adapters, weights, kw in COMBOS:
        kw = dict(kw)
        ctype = kw.pop("combination_type", cname)
        new = f"m_{cname}"
        pm.add_weighted_adapter(adapters, weights, new, combination_type=ctype, **kw)
        layers = {}
        for lname, mod in pm.base_model.model.named_modules():
            if hasattr(mod, "lora_A") and (new in mod.lora_A or new in mod.lora_embedding_A):
                emb = new in mod.lora_embedding_A
                A = mod.lora_embedding_A[new] if emb else mod.lora_A[new].weight
                B = mod.lora_embedding_B[new] if emb else mod.lora_B[new].weight
                rec = {"A_shape": list(A.shape), "B_shape": list(B.shape)}
                if "svd" in ctype:  # SVD signs are arbitrary: compare B @ A * scaling
                    rec["delta"] = flat(mod.get_delta_weight(new))
                else:
                    rec["A"] = flat(A)
                    rec["B"] = flat(B)
                layers[lname] = rec
        cfg = pm.peft_config[new]
        tm = cfg.target_modules
        exp["combos"][cname] = {
            "adapters": adapters, "weights": weights, "combination_type": ctype, "kwargs": kw,
            "r": cfg.r, "lora_alpha": cfg.lora_alpha, "target_modules": sorted(tm) if isinstance(tm, set) else tm,
            "layers": layers,
        }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(exp, f)
    print(name, "ok", sorted(exp["combos"]))


def gpt2():
    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32,
                                      bos_token_id=0, eos_token_id=0))


def llama():
    return LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                        num_key_value_heads=1, intermediate_size=32, vocab_size=64,
                                        max_position_embeddings=32, bos_token_id=0, eos_token_id=0, pad_token_id=0))


if __name__ == "__main__":
    make_case("gpt2", gpt2, {
        "a": LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "attn.c_proj"]),
        "b": LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn", "c_fc"]),
        "c": LoraConfig(r=2, lora_alpha=2, target_modules=["c_attn"]),
    })
    make_case("llama", llama, {
        "a": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "embed_tokens"]),
        "b": LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "embed_tokens"], use_rslora=True),
        "c": LoraConfig(r=2, lora_alpha=6, target_modules=["v_proj", "embed_tokens"]),
    })
