"""Pretrains the embedded default model (assets/default-model/) on the KJV corpus.

Run scripts/build_default_data.py first (it writes the corpus and the tokenizer). Then

    /opt/pyref/bin/python scripts/build_default_model.py [--steps N]

trains a tiny GPT-2 (4 layers, 128 wide, 4 heads, 256 positions, 4096-token vocabulary;
about 1.3 M parameters) for a fixed number of steps on 2 CPU threads (~10 minutes when the cores are idle), saves
it in Hugging Face format (config.json + model.safetensors, float32), and checks that the
result is useful: held-out perplexity, a greedy sample, and a linear probe on the frozen
features for the verse-section task that must clearly beat chance (25 %) and the same
probe on the randomly initialised model.
Seeded: the same torch build on the same CPU gives the same weights.
"""
import argparse
import json
import math
import os
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, 'assets', 'default-model')
DATA_DIR = os.path.join(ROOT, 'assets', 'data')
CORPUS_DIR = os.environ.get('DEFAULT_CORPUS_DIR', '/tmp/peft-ts-default-corpus')
SEED = 1611
BLOCK = 256
BATCH = 16


def load_blocks(tok):
    with open(os.path.join(CORPUS_DIR, 'pretrain.txt'), encoding='utf-8') as f:
        docs = f.read().split('<|endoftext|>')
    ids = []
    for d in docs:
        ids.extend(tok(d)['input_ids'])
        ids.append(tok.eos_token_id)
    n = len(ids) // BLOCK
    data = torch.tensor(ids[: n * BLOCK], dtype=torch.long).view(n, BLOCK)
    return data


def linear_probe(model, tok):
    """Logistic regression on mean-pooled last hidden states (frozen model)."""
    def feats(path):
        rows = [json.loads(l) for l in open(path, encoding='utf-8')]
        labels = sorted({r['label'] for r in rows})
        xs = []
        with torch.no_grad():
            for i in range(0, len(rows), 64):
                enc = tok([r['text'] for r in rows[i:i + 64]], return_tensors='pt', padding=True)
                h = model.transformer(**enc).last_hidden_state
                m = enc['attention_mask'].unsqueeze(-1).float()
                xs.append((h * m).sum(1) / m.sum(1))
        return torch.cat(xs), rows, labels

    xtr, rtr, labels = feats(os.path.join(DATA_DIR, 'kjv_section_train.jsonl'))
    xte, rte, _ = feats(os.path.join(DATA_DIR, 'kjv_section_test.jsonl'))
    ytr = torch.tensor([labels.index(r['label']) for r in rtr])
    yte = torch.tensor([labels.index(r['label']) for r in rte])
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    torch.manual_seed(SEED)
    clf = torch.nn.Linear(xtr.shape[1], len(labels))
    opt = torch.optim.AdamW(clf.parameters(), lr=1e-2, weight_decay=1e-2)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(clf(xtr), ytr).backward()
        opt.step()
    with torch.no_grad():
        return (clf(xte).argmax(-1) == yte).float().mean().item()


def write_reference(model, tok):
    """transformers' greedy continuations of a few prompts, for test/generate_default.test.ts.
    Only prompts whose every step has a clear argmax (gap > 0.01) are kept, so float
    differences between implementations cannot flip a token."""
    prompts = ['In the beginning', 'And the LORD said unto Moses,', 'Blessed are the',
               'The LORD is my shepherd;', 'For God so loved the world,', 'My son, hear']
    cases = []
    for p in prompts:
        enc = tok(p, return_tensors='pt')
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=20, do_sample=False, pad_token_id=tok.eos_token_id,
                                 output_scores=True, return_dict_in_generate=True)
        gap = min((torch.topk(s[0], 2).values[0] - torch.topk(s[0], 2).values[1]).item() for s in out.scores)
        seq = out.sequences[0].tolist()
        print(f'reference {p!r}: gap {gap:.4f} -> {tok.decode(seq)!r}')
        if gap > 0.01:
            cases.append({'prompt': p, 'promptIds': enc['input_ids'][0].tolist(), 'sequence': seq,
                          'text': tok.decode(seq)})
    path = os.path.join(ROOT, 'test', 'fixtures', 'generate', 'default-model-greedy.json')
    with open(path, 'w') as f:
        json.dump({'maxNewTokens': 20, 'cases': cases}, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--steps', type=int, default=1000)
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)

    tok = PreTrainedTokenizerFast.from_pretrained(MODEL_DIR)
    tok.pad_token = tok.eos_token
    data = load_blocks(tok)
    g = torch.Generator().manual_seed(SEED)
    perm = torch.randperm(len(data), generator=g)
    n_val = 32
    val, train = data[perm[:n_val]], data[perm[n_val:]]
    print(f'{len(train)} train blocks, {len(val)} validation blocks of {BLOCK} tokens', flush=True)

    config = GPT2Config(vocab_size=len(tok), n_positions=BLOCK, n_embd=128, n_layer=4, n_head=4,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.eos_token_id, tie_word_embeddings=True)
    model = GPT2LMHeadModel(config)
    print(f'{sum(p.numel() for p in model.parameters())} parameters', flush=True)
    model.eval()
    acc0 = linear_probe(model, tok)
    print(f'linear probe before pretraining (random weights): {acc0:.3f}', flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
    warm = 50
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))

    def val_loss():
        model.eval()
        with torch.no_grad():
            losses = [model(input_ids=val[i:i + 16], labels=val[i:i + 16]).loss.item()
                      for i in range(0, len(val), 16)]
        model.train()
        return sum(losses) / len(losses)

    model.train()
    t0 = time.time()
    order = torch.randperm(len(train), generator=g)
    pos = 0
    for step in range(args.steps):
        if pos + BATCH > len(order):
            order, pos = torch.randperm(len(train), generator=g), 0
        batch = train[order[pos:pos + BATCH]]
        pos += BATCH
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f'step {step} loss {loss.item():.3f} val {val_loss():.3f} '
                  f'{time.time() - t0:.0f}s', flush=True)

    model.eval()
    model.save_pretrained(MODEL_DIR, safe_serialization=True)
    gen_cfg = os.path.join(MODEL_DIR, 'generation_config.json')
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)  # config.json carries the token ids; keep the folder minimal
    vl = val_loss()
    print(f'validation loss {vl:.3f} (perplexity {math.exp(vl):.1f})')
    enc = tok('In the beginning', return_tensors='pt')
    out = model.generate(**enc, max_new_tokens=30, do_sample=False, pad_token_id=tok.eos_token_id)
    print('greedy sample:', repr(tok.decode(out[0])))
    write_reference(model, tok)
    acc = linear_probe(model, tok)
    print(f'linear probe on frozen features, verse section (4 classes): test accuracy {acc:.3f} (chance 0.25)')
    # Random features already carry some bag-of-tokens signal; pretraining must add to it.
    if acc < max(0.5, acc0 + 0.1):
        raise SystemExit('pretraining did not make the features clearly better: the default model is not useful')


if __name__ == '__main__':
    main()
