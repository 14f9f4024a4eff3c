"""Beam search references for test/generate_beam.test.ts (run with /opt/pyref/bin/python).

  test/fixtures/generate/beam-search.json   transformers' generate(num_beams > 1) token ids

Models: the tiny test fixtures gpt2_lm and llama_lm (float32, eager attention) and the
default model (assets/default-model). Settings cover length_penalty, early_stopping
(True / False / "never"), num_return_sequences, eos (an id the model actually produces, so
hypotheses finish early), no_repeat_ngram_size, repetition_penalty and a left-padded batch.
"""
import json
import os

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'test', 'fixtures', 'generate', 'beam-search.json')


def load(path):
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation='eager')
    m.eval()
    return m


def run(model, rows, settings):
    """rows: prompts as id lists (left-padded here with pad id 0 and a mask)."""
    t = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (t - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (t - len(r)) + [1] * len(r) for r in rows])
    kw = dict(settings)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, **kw)
    return ids.tolist(), mask.tolist(), out.tolist()


def greedy_token(model, prompt, k):
    """The k-th greedy new token: an id the model really produces, used as eos."""
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([prompt]), do_sample=False, max_new_tokens=k + 1,
                             eos_token_id=None, pad_token_id=0)
    return int(out[0, len(prompt) + k])


def cases_for(name, model, prompts, eos_natural):
    cases = []
    eos_hit = greedy_token(model, prompts[0], 3)

    def add(label, rows, **settings):
        ids, mask, seqs = run(model, rows, settings)
        cases.append({'model': name, 'label': label, 'inputIds': ids, 'attentionMask': mask,
                      'settings': settings, 'sequences': seqs})

    p0, p1 = prompts
    add('beams3', [p0], num_beams=3, max_new_tokens=10, eos_token_id=eos_natural, pad_token_id=0)
    add('beams4-return2-lp0.5-early', [p0], num_beams=4, num_return_sequences=2, max_new_tokens=12,
        length_penalty=0.5, early_stopping=True, eos_token_id=eos_hit, pad_token_id=0)
    add('beams3-eos-heuristic', [p1], num_beams=3, num_return_sequences=3, max_new_tokens=12,
        eos_token_id=eos_hit, pad_token_id=0)
    add('beams2-never-lp2-rep', [p0], num_beams=2, num_return_sequences=2, max_new_tokens=9,
        length_penalty=2.0, early_stopping='never', repetition_penalty=1.3, eos_token_id=eos_hit, pad_token_id=0)
    add('beams4-ngram2-batch', [p0, p1], num_beams=4, num_return_sequences=2, max_new_tokens=10,
        no_repeat_ngram_size=2, eos_token_id=[eos_hit, eos_natural], pad_token_id=0)
    return cases


def main():
    cases = []
    fx = os.path.join(ROOT, 'test', 'fixtures', 'models')
    cases += cases_for('gpt2_lm', load(os.path.join(fx, 'gpt2_lm')), [[5, 17, 42, 8], [61, 3, 3, 90, 12, 7]], 99)
    cases += cases_for('llama_lm', load(os.path.join(fx, 'llama_lm')), [[1, 17, 42, 8, 33], [1, 61, 3, 90]], 2)
    dm = os.path.join(ROOT, 'assets', 'default-model')
    tok = PreTrainedTokenizerFast.from_pretrained(dm)
    prompts = [tok.encode('In the beginning God created'), tok.encode('And the LORD said unto Moses,')]
    cases += cases_for('default-model', load(dm), prompts, tok.eos_token_id)
    with open(OUT, 'w') as f:
        json.dump({'transformers': __import__('transformers').__version__, 'cases': cases}, f)
        f.write('\n')
    print(f'wrote {OUT}: {len(cases)} cases')


if __name__ == '__main__':
    main()
