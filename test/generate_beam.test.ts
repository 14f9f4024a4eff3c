// Beam search gives transformers' token ids (fixtures: scripts/make_beam_fixtures.py) on the
// tiny GPT-2 and Llama fixtures and the default model: length penalty, the three
// earlyStopping modes, several eos ids, numReturnSequences, processors and left padding.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tensor } from '../src/tensor/index.js';
import { AutoModelForCausalLM, type HFModel } from '../src/models/index.js';
import { generate, type GenerateOptions } from '../src/generate/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = [resolve(here, '../..'), process.cwd()].find((p) => existsSync(join(p, 'test', 'fixtures', 'generate', 'beam-search.json')))!;

interface Case {
  model: string; label: string; inputIds: number[][]; attentionMask: number[][]; sequences: number[][];
  settings: Record<string, number | number[] | boolean | string>;
}
const fx = JSON.parse(readFileSync(join(root, 'test', 'fixtures', 'generate', 'beam-search.json'), 'utf8')) as { cases: Case[] };

const models = new Map<string, HFModel>();
function model(name: string): HFModel {
  if (!models.has(name)) {
    const dir = name === 'default-model' ? join(root, 'assets', 'default-model') : join(root, 'test', 'fixtures', 'models', name);
    models.set(name, AutoModelForCausalLM.fromPretrainedSync(dir, { logger: () => {} }));
  }
  return models.get(name)!;
}

function options(s: Case['settings']): GenerateOptions {
  const o: GenerateOptions = {};
  const map: Record<string, keyof GenerateOptions> = {
    num_beams: 'numBeams', max_new_tokens: 'maxNewTokens', eos_token_id: 'eosTokenId', pad_token_id: 'padTokenId',
    num_return_sequences: 'numReturnSequences', length_penalty: 'lengthPenalty', early_stopping: 'earlyStopping',
    repetition_penalty: 'repetitionPenalty', no_repeat_ngram_size: 'noRepeatNgramSize',
  };
  for (const [k, v] of Object.entries(s)) {
    assert.ok(map[k], `setting ${k} has a GenerateOptions name`);
    (o as Record<string, unknown>)[map[k]] = v;
  }
  return o;
}

const rows2d = (r: number[][]) => tensor(Int32Array.from(r.flat()), [r.length, r[0].length], { dtype: 'int32' });

for (const c of fx.cases) {
  test(`beam search ${c.model} ${c.label} = transformers`, () => {
    const out = generate(model(c.model), rows2d(c.inputIds), { ...options(c.settings), attentionMask: rows2d(c.attentionMask) });
    const [n, w] = out.shape;
    const got = Array.from({ length: n }, (_, i) => Array.from(out.ints.subarray(i * w, (i + 1) * w)));
    assert.deepEqual(got, c.sequences);
  });
}

test('beam search: the cache path and the no-cache path agree; bad settings are refused', () => {
  const m = model('llama_lm');
  const ids = rows2d([[1, 17, 42, 8, 33]]);
  const o: GenerateOptions = { numBeams: 3, numReturnSequences: 3, maxNewTokens: 8, eosTokenId: 2 };
  assert.deepEqual(Array.from(generate(m, ids, o).ints), Array.from(generate(m, ids, { ...o, useCache: false }).ints));
  assert.throws(() => generate(m, ids, { numBeams: 2, numReturnSequences: 3 }), /numReturnSequences/);
  assert.throws(() => generate(m, ids, { numReturnSequences: 2 }), /greedy/);
  assert.throws(() => generate(m, ids, { numBeams: 2, doSample: true }), /beam sampling/);
  // numBeams 1 is greedy search.
  assert.deepEqual(Array.from(generate(m, ids, { numBeams: 1, maxNewTokens: 5 }).ints), Array.from(generate(m, ids, { maxNewTokens: 5 }).ints));
  // Sampling with numReturnSequences repeats each prompt.
  assert.deepEqual(generate(m, ids, { doSample: true, numReturnSequences: 3, maxNewTokens: 4, seed: 1 }).shape, [3, 9]);
});
