# Fixtures for test/train*.test.ts and test/data*.test.ts, computed by torch/transformers.
# Run: /opt/pyref/bin/python scripts/make_train_fixtures.py
import json, math, torch
from transformers import get_scheduler
from transformers import PreTrainedTokenizerFast
from tokenizers import Tokenizer, models

OUT_T = "test/fixtures/train"
OUT_D = "test/fixtures/data"

# --- schedulers: lr used at each optimizer step (what Trainer logs as learning_rate) ---
def lrs(name, warmup, total, base=1e-3, **kw):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    s = get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=total, scheduler_specific_kwargs=kw or None)
    out = []
    for _ in range(total + 2):
        out.append(s.get_last_lr()[0])
        opt.step(); s.step()
    return out

cases = []
for name, warm, total, kw in [
    ("linear", 5, 20, {}), ("linear", 0, 7, {}), ("cosine", 5, 20, {}), ("cosine", 0, 9, {}),
    ("constant", 0, 6, {}), ("constant_with_warmup", 4, 10, {}),
    ("cosine_with_restarts", 3, 20, {"num_cycles": 3}), ("polynomial", 2, 12, {"power": 2.0, "lr_end": 1e-5}),
    ("inverse_sqrt", 4, 12, {}), ("cosine_with_min_lr", 2, 10, {"min_lr_rate": 0.1}),
]:
    cases.append({"name": name, "warmup": warm, "total": total, "kwargs": kw, "base": 1e-3, "lrs": lrs(name, warm, total, **kw)})
json.dump(cases, open(f"{OUT_T}/schedulers.json", "w"))

# --- AdamW: 3 steps, one decayed and one non-decayed group ---
g = torch.Generator().manual_seed(0)
w0 = torch.randn(3, 4, generator=g); b0 = torch.randn(4, generator=g)
w = torch.nn.Parameter(w0.clone()); b = torch.nn.Parameter(b0.clone())
opt = torch.optim.AdamW([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}],
                        lr=0.01, betas=(0.9, 0.98), eps=1e-6)
steps = []
for i in range(3):
    gw = torch.randn(3, 4, generator=g); gb = torch.randn(4, generator=g)
    w.grad = gw.clone(); b.grad = gb.clone()
    opt.step()
    steps.append({"gw": gw.flatten().tolist(), "gb": gb.flatten().tolist(), "w": w.detach().flatten().tolist(), "b": b.detach().flatten().tolist()})
json.dump({"lr": 0.01, "beta1": 0.9, "beta2": 0.98, "eps": 1e-6, "wd": 0.1, "w0": w0.flatten().tolist(), "b0": b0.flatten().tolist(), "steps": steps},
          open(f"{OUT_T}/adamw.json", "w"))

# --- clip_grad_norm_ ---
a = torch.nn.Parameter(torch.zeros(5)); c = torch.nn.Parameter(torch.zeros(2, 3))
a.grad = torch.randn(5, generator=g) * 2; c.grad = torch.randn(2, 3, generator=g) * 2
ga, gc = a.grad.clone(), c.grad.clone()
n = torch.nn.utils.clip_grad_norm_([a, c], 1.0)
json.dump({"ga": ga.tolist(), "gc": gc.flatten().tolist(), "norm": n.item(), "ca": a.grad.tolist(), "cc": c.grad.flatten().tolist()},
          open(f"{OUT_T}/clip.json", "w"))

# --- chat templates rendered by transformers' apply_chat_template ---
vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, "<|im_end|>": 3}
tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
chatml = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
          "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
zephyr = ("{{ bos_token }}{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}"
          "\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
          "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")
msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}]
out = []
for tname, tpl in [("chatml", chatml), ("zephyr", zephyr)]:
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.chat_template = tpl
    for m in [msgs, msgs[1:]]:
        for agp in [False, True]:
            out.append({"template": tpl, "name": tname, "messages": m, "addGenerationPrompt": agp,
                        "bosToken": "<s>", "eosToken": "</s>",
                        "expected": tok.apply_chat_template(m, tokenize=False, add_generation_prompt=agp)})
json.dump(out, open(f"{OUT_D}/chat_templates.json", "w"), indent=1)
print("ok")
