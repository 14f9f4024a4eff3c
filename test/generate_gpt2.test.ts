// generate() on the project's GPT2LMHeadModel against transformers' generate() on the same
// tiny random checkpoint (test/fixtures/generate/tiny-gpt2, made by
// scripts/make_generate_fixtures.py): left-padded batch, cache on/off, penalties, eos.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tensor, memoryStats, Rng } from '../src/tensor/index.js';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { generate, GenerateOptions } from '../src/generate/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const FIX = [resolve(here, '../../test/fixtures/generate'), resolve(process.cwd(), 'test/fixtures/generate')].find((p) => existsSync(p))!;

interface Case { name: string; options: Record<string, unknown>; sequences: number[][]; minGap: number }
const fx = JSON.parse(readFileSync(join(FIX, 'tiny-gpt2-generate.json'), 'utf8')) as {
  inputIds: number[][]; attentionMask: number[][]; cases: Case[]; lastLogits: number[][];
};

function toOptions(o: Record<string, unknown>): GenerateOptions {
  return {
    maxNewTokens: o.max_new_tokens as number,
    eosTokenId: (o.eos_token_id as number | null) ?? null,
    padTokenId: o.pad_token_id as number,
    repetitionPenalty: o.repetition_penalty as number | undefined,
    noRepeatNgramSize: o.no_repeat_ngram_size as number | undefined,
    useCache: o.use_cache as boolean | undefined,
  };
}

const ids = () => tensor(Int32Array.from(fx.inputIds.flat()), [2, 6], { dtype: 'int32' });
const mask = () => tensor(Int32Array.from(fx.attentionMask.flat()), [2, 6], { dtype: 'int32' });

test('GPT-2 greedy generate matches transformers token for token', () => {
  const model = AutoModelForCausalLM.fromPretrainedSync(join(FIX, 'tiny-gpt2'));
  for (const c of fx.cases) {
    const out = generate(model, ids(), { ...toOptions(c.options), attentionMask: mask() });
    const got = Array.from({ length: 2 }, (_, b) => Array.from(out.ints.subarray(b * out.shape[1], (b + 1) * out.shape[1])));
    assert.deepEqual(got, c.sequences, `case ${c.name}`);
  }
});

test('GPT-2: cached and uncached greedy agree, with and without padding, and nothing leaks', () => {
  const model = AutoModelForCausalLM.fromPretrainedSync(join(FIX, 'tiny-gpt2'));
  generate(model, ids(), { maxNewTokens: 2, attentionMask: mask() });
  const before = memoryStats().liveBytes;
  for (const am of [mask(), null]) {
    const a = generate(model, ids(), { maxNewTokens: 20, attentionMask: am });
    const b = generate(model, ids(), { maxNewTokens: 20, attentionMask: am, useCache: false });
    assert.deepEqual(Array.from(a.ints), Array.from(b.ints));
  }
  assert.equal(memoryStats().liveBytes, before);
  // The padded row continues exactly as it does unpadded.
  const alone = generate(model, tensor([23, 7, 40], [1, 3], { dtype: 'int32' }), { maxNewTokens: 10 });
  const batch = generate(model, ids(), { maxNewTokens: 10, attentionMask: mask() });
  assert.deepEqual(Array.from(batch.ints.subarray(16 + 3, 32)), Array.from(alone.ints));
});

test('Llama (RoPE, grouped-query attention): cached = uncached and padding-invariant greedy', () => {
  const model = AutoModelForCausalLM.fromConfig({
    model_type: 'llama', vocab_size: 50, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, initializer_range: 0.5,
    rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: false,
  }, { rng: new Rng(7) });
  model.eval();
  const p = tensor(Int32Array.from([3, 9, 27, 4, 11, 0, 0, 8, 15, 2]), [2, 5], { dtype: 'int32' });
  const m = tensor(Int32Array.from([1, 1, 1, 1, 1, 0, 0, 1, 1, 1]), [2, 5], { dtype: 'int32' });
  const a = generate(model, p, { maxNewTokens: 12, attentionMask: m });
  const b = generate(model, p, { maxNewTokens: 12, attentionMask: m, useCache: false });
  assert.deepEqual(Array.from(a.ints), Array.from(b.ints));
  const alone = generate(model, tensor(Int32Array.from([8, 15, 2]), [1, 3], { dtype: 'int32' }), { maxNewTokens: 12 });
  assert.deepEqual(Array.from(a.ints.subarray(17 + 2, 34)), Array.from(alone.ints));
  // Not a constant sequence: the check above compares real decisions.
  assert.ok(new Set(alone.ints.subarray(3)).size > 2);
});
