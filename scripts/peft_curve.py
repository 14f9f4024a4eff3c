"""Python side of bench/curve_bf16.ts: the same LoRA fine-tuning run, step for step, in peft.

  peft_curve.py prepare OUT [--model DIR] [--steps 200] [--batch 8] [--seq 128] [--r 16]
      writes OUT/adapter-init (peft save_pretrained of the untrained LoRA adapter) and
      OUT/batches.json (the token ids of every step, in order), so both sides start from the
      same weights and see the same batches. The base is the embedded default model (read in
      place, never copied).
  peft_curve.py train OUT MODE [--threads 2] [--lr 1e-3] [--warmup 10]
      MODE fp32 | autocast-bf16 (torch.autocast('cpu', bfloat16): TrainingArguments bf16=True)
      | bf16 (the whole model in torch_dtype=bfloat16, adapters float32: Python's fastest CPU setup).
      Prints one JSON line: per-step loss, gradient norm (before clipping), learning rate.

The loop is the one transformers' Trainer runs for one micro-batch per step: forward with
labels = input_ids, backward, clip the gradient norm at 1.0, AdamW (weight decay 0, as
TrainingArguments' default), linear schedule with warm-up. Dropout is 0, so the runs are
deterministic. Used by benchmarks only, never by the tests.
"""
import argparse
import json
import math
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ['c_attn', 'c_proj', 'c_fc']


def token_stream(model_dir):
    """The fine-tuning text: prompt + completion of every kjv_complete_train row, one verse a line."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model_dir, 'tokenizer.json'))
    ids = []
    with open(os.path.join(ROOT, 'assets', 'data', 'kjv_complete_train.jsonl')) as f:
        for line in f:
            row = json.loads(line)
            ids.extend(tok.encode(row['prompt'] + row['completion'] + '\n').ids)
    return ids


def prepare(a):
    import torch
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(0)
    os.makedirs(a.out, exist_ok=True)
    ids = token_stream(a.model)
    # Cut into T-token blocks; each epoch visits them in a fresh seeded order (fixed here, once).
    blocks = [ids[i:i + a.seq] for i in range(0, len(ids) - a.seq + 1, a.seq)]
    rng = random.Random(0)
    order = []
    while len(order) < a.steps * a.batch:
        e = list(range(len(blocks)))
        rng.shuffle(e)
        order.extend(e)
    batches = [[blocks[order[s * a.batch + b]] for b in range(a.batch)] for s in range(a.steps)]
    with open(os.path.join(a.out, 'batches.json'), 'w') as f:
        json.dump({'model': os.path.abspath(a.model), 'batch': a.batch, 'seq': a.seq, 'steps': a.steps,
                   'blocks': len(blocks), 'tokens': len(ids), 'batches': batches}, f)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    cfg = LoraConfig(task_type='CAUSAL_LM', r=a.r, lora_alpha=2 * a.r, lora_dropout=0.0,
                     target_modules=TARGETS, fan_in_fan_out=True)
    peft = get_peft_model(model, cfg)
    peft.save_pretrained(os.path.join(a.out, 'adapter-init'))
    n_train = sum(p.numel() for p in peft.parameters() if p.requires_grad)
    print(json.dumps({'blocks': len(blocks), 'tokens': len(ids), 'epochs': round(a.steps * a.batch / len(blocks), 2),
                      'trainable': n_train}))


def lr_at(step, n, warmup, lr):
    """transformers' get_linear_schedule_with_warmup, as the Trainer applies it before step `step`."""
    if step < warmup:
        return lr * step / max(1, warmup)
    return lr * max(0.0, (n - step) / max(1, n - warmup))


def train(a):
    import torch
    from transformers import AutoModelForCausalLM
    from peft import PeftModel
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    with open(os.path.join(a.out, 'batches.json')) as f:
        data = json.load(f)
    dtype = torch.bfloat16 if a.mode == 'bf16' else torch.float32
    model = AutoModelForCausalLM.from_pretrained(data['model'], dtype=dtype)
    # autocast_adapter_dtype (peft's default) keeps the LoRA weights float32 on a bf16 base.
    peft = PeftModel.from_pretrained(model, os.path.join(a.out, 'adapter-init'), is_trainable=True)
    peft.train()
    params = [p for p in peft.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in params), 'trainable weights must be float32'
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    n = len(data['batches'])
    losses, norms, lrs = [], [], []
    t0 = time.time()
    for step, b in enumerate(data['batches']):
        x = torch.tensor(b, dtype=torch.long)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=a.mode == 'autocast-bf16'):
            out = peft(input_ids=x, attention_mask=torch.ones_like(x), labels=x)
        out.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        lr = lr_at(step, n, a.warmup, a.lr)
        for g in opt.param_groups:
            g['lr'] = lr
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
        norms.append(float(norm))
        lrs.append(lr)
    secs = time.time() - t0
    print(json.dumps({'impl': 'python peft', 'mode': a.mode, 'torch': torch.__version__, 'threads': a.threads,
                      'seconds': round(secs, 2), 'loss': losses, 'grad_norm': norms, 'lr': lrs}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest='cmd', required=True)
    q = sub.add_parser('prepare')
    q.add_argument('out')
    q.add_argument('--model', default=os.path.join(ROOT, 'assets', 'default-model'))
    q.add_argument('--steps', type=int, default=200)
    q.add_argument('--batch', type=int, default=8)
    q.add_argument('--seq', type=int, default=128)
    q.add_argument('--r', type=int, default=16)
    t = sub.add_parser('train')
    t.add_argument('out')
    t.add_argument('mode', choices=['fp32', 'autocast-bf16', 'bf16'])
    t.add_argument('--threads', type=int, default=2)
    t.add_argument('--lr', type=float, default=1e-3)
    t.add_argument('--warmup', type=int, default=10)
    a = p.parse_args()
    prepare(a) if a.cmd == 'prepare' else train(a)


if __name__ == '__main__':
    sys.exit(main())
