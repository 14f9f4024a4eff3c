"""Fixtures for test/generate*.test.ts, made with transformers (run with /opt/pyref/bin/python).

  test/fixtures/generate/processors.json   random scores through each transformers processor
  test/fixtures/generate/tiny-gpt2/        a random tiny GPT-2 in HF format
  test/fixtures/generate/tiny-gpt2-generate.json   transformers' greedy generate() outputs
"""
import json
import os

import torch
from transformers import GPT2Config, GPT2LMHeadModel, GenerationConfig
from transformers.generation.logits_process import (
    LogitsProcessorList, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'test', 'fixtures', 'generate')


def tolist(t):
    return [[float(x) if x != float('-inf') else '-inf' for x in row] for row in t.tolist()]


def processors():
    g = torch.Generator().manual_seed(0)
    b, t, v = 3, 12, 40
    # Small id range so rows repeat tokens and n-grams.
    ids = torch.randint(0, 8, (b, t), generator=g)
    ids[1, -2:] = ids[1, 3:5]  # row 1 ends with an earlier bigram -> n-gram bans
    scores = torch.randn(b, v, generator=g) * 2
    cases = []

    def case(name, procs):
        out = LogitsProcessorList(procs)(ids, scores.clone())
        cases.append({'name': name, 'out': tolist(out)})

    case('repetition_penalty_1.3', [RepetitionPenaltyLogitsProcessor(1.3)])
    case('repetition_penalty_0.7', [RepetitionPenaltyLogitsProcessor(0.7)])
    case('no_repeat_ngram_2', [NoRepeatNGramLogitsProcessor(2)])
    case('no_repeat_ngram_3', [NoRepeatNGramLogitsProcessor(3)])
    case('temperature_0.7', [TemperatureLogitsWarper(0.7)])
    case('top_k_5', [TopKLogitsWarper(5)])
    case('top_p_0.8', [TopPLogitsWarper(0.8)])
    case('top_p_0.3_keep_2', [TopPLogitsWarper(0.3, min_tokens_to_keep=2)])
    # The chain generate() builds, in the order transformers builds it.
    gc = GenerationConfig(do_sample=True, temperature=0.8, top_k=10, top_p=0.9,
                          repetition_penalty=1.2, no_repeat_ngram_size=2)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=v, n_positions=16, n_embd=8, n_layer=1, n_head=1))
    chain = model._get_logits_processor(generation_config=gc, input_ids_seq_length=t,
                                        encoder_input_ids=ids, prefix_allowed_tokens_fn=None,
                                        logits_processor=LogitsProcessorList())
    order = [type(p).__name__ for p in chain]
    out = chain(ids, scores.clone())
    cases.append({'name': 'chain', 'out': tolist(out)})
    with open(os.path.join(OUT, 'processors.json'), 'w') as f:
        json.dump({'inputIds': ids.tolist(), 'scores': tolist(scores), 'order': order, 'cases': cases}, f)
    print('processor order:', order)


def tiny_gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=48, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                     initializer_range=0.3, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=1, eos_token_id=1)
    model = GPT2LMHeadModel(cfg).eval()
    d = os.path.join(OUT, 'tiny-gpt2')
    model.save_pretrained(d, safe_serialization=True)
    gen_cfg = os.path.join(d, 'generation_config.json')
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
    # Batch of two, the second left-padded with pad id 0.
    ids = torch.tensor([[5, 17, 9, 30, 2, 11], [0, 0, 0, 23, 7, 40]])
    mask = (torch.arange(6)[None, :] >= torch.tensor([[0], [3]])).long()
    cases = []

    def run(name, **kw):
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 output_scores=True, return_dict_in_generate=True, **kw)
        # Smallest gap between best and second-best processed score: argmax must be robust.
        gaps = []
        for s in out.scores:
            top = torch.topk(s.masked_fill(torch.isinf(s), -1e9), 2, dim=-1).values
            gaps.append((top[:, 0] - top[:, 1]).min().item())
        cases.append({'name': name, 'options': kw, 'sequences': out.sequences.tolist(), 'minGap': min(gaps)})
        print(name, out.sequences.tolist(), 'min gap', min(gaps))

    run('greedy', max_new_tokens=10, eos_token_id=None, pad_token_id=0)
    run('greedy_nocache', max_new_tokens=10, eos_token_id=None, pad_token_id=0, use_cache=False)
    run('penalties', max_new_tokens=10, eos_token_id=None, pad_token_id=0,
        repetition_penalty=1.5, no_repeat_ngram_size=2)
    first = cases[0]['sequences']
    # An eos id that row 0 emits mid-way, so that row finishes and is padded.
    eos = first[0][6 + 3]
    run('eos', max_new_tokens=10, eos_token_id=eos, pad_token_id=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask,
                       position_ids=(mask.cumsum(-1) - 1).clamp(min=0).masked_fill(mask == 0, 1)).logits
    with open(os.path.join(OUT, 'tiny-gpt2-generate.json'), 'w') as f:
        json.dump({'inputIds': ids.tolist(), 'attentionMask': mask.tolist(), 'cases': cases,
                   'lastLogits': logits[:, -1].tolist()}, f)


if __name__ == '__main__':
    os.makedirs(OUT, exist_ok=True)
    processors()
    tiny_gpt2()
