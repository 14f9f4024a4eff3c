// generate(): processors against transformers' own (fixtures), cache vs no-cache, eos/pad,
// left padding, sampling, streaming and memory, on a small causal LM defined here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tensor, empty, memoryStats, tensor, Rng } from '../src/tensor/index.js';
import type { KVCache, ModelInputs, ModelOutput } from '../src/models/types.js';
import {
  generate, buildLogitsProcessors, applyProcessors, repetitionPenaltyProcessor, noRepeatNgramProcessor,
  temperatureWarper, topKWarper, topPWarper, TextStreamer, sampleRows, LogitsProcessor,
} from '../src/generate/index.js';

const here = dirname(fileURLToPath(import.meta.url));
// Compiled tests live in <out>/test; fixtures stay in the source tree.
const fixtures = join(here, '..', '..', 'test', 'fixtures', 'generate');
function fixturePath(name: string): string {
  for (const base of [fixtures, join(here, 'fixtures', 'generate'), join(process.cwd(), 'test', 'fixtures', 'generate')]) {
    try { readFileSync(join(base, name)); return join(base, name); } catch { /* next */ }
  }
  throw new Error(`fixture ${name} not found`);
}

const num = (x: number | string) => (x === '-inf' ? -Infinity : (x as number));

/**
 * A causal LM small enough to check by hand: the state at position p is the sum of the
 * embeddings of every attended token up to p plus a position embedding; logits = state W.
 * The cache holds the token embeddings seen so far ([B, 1, S, D]) and their mask.
 */
class ToyLM {
  training = false;
  calls: number[] = [];
  config = { maxPositions: 64, modelType: 'toy' };
  constructor(readonly v = 11, readonly d = 6, seed = 3) {
    const r = new Rng(seed);
    this.emb = Array.from({ length: v * d }, () => r.normal());
    this.pos = Array.from({ length: 64 * d }, () => r.normal() * 2);
    this.w = Array.from({ length: d * v }, () => r.normal());
  }
  emb: number[]; pos: number[]; w: number[];
  train(mode = true) { this.training = mode; return this; }

  forward(inp: ModelInputs): ModelOutput {
    const [b, t] = inp.inputIds.shape;
    const past = inp.pastKeyValues ?? null;
    const s0 = past ? past.length : 0, s = s0 + t, d = this.d, v = this.v;
    const am = inp.attentionMask ? inp.attentionMask.ints : new Int32Array(b * s).fill(1);
    assert.equal(am.length, b * s, 'attention mask covers past + new positions');
    this.calls.push(t);
    const k = empty([b, 1, s, d]);
    for (let i = 0; i < b; i++) {
      if (past) k.data.set(past.layers[0].k.data.subarray(i * s0 * d, (i + 1) * s0 * d), i * s * d);
      for (let j = 0; j < t; j++) {
        const id = inp.inputIds.ints[i * t + j];
        for (let c = 0; c < d; c++) k.data[(i * s + s0 + j) * d + c] = this.emb[id * d + c];
      }
    }
    const logits = empty([b, t, v]);
    for (let i = 0; i < b; i++) {
      const acc = new Float64Array(d);
      for (let j = 0; j < s; j++) {
        if (am[i * s + j]) for (let c = 0; c < d; c++) acc[c] += k.data[(i * s + j) * d + c];
        if (j < s0) continue;
        const p = inp.positionIds ? inp.positionIds.ints[i * t + j - s0] : j;
        for (let o = 0; o < v; o++) {
          let z = 0;
          for (let c = 0; c < d; c++) z += (acc[c] + this.pos[p * d + c]) * this.w[c * v + o];
          logits.data[(i * t + j - s0) * v + o] = z;
        }
      }
    }
    const out: ModelOutput = { logits };
    if (inp.useCache) out.pastKeyValues = { layers: [{ k, v: k.shareAs(k.shape) }], length: s } as KVCache;
    else k.dispose();
    return out;
  }
}

function ids2d(rows: number[][]): Tensor {
  return tensor(Int32Array.from(rows.flat()), [rows.length, rows[0].length], { dtype: 'int32' });
}
function rows(t: Tensor): number[][] {
  const [b, n] = t.shape;
  return Array.from({ length: b }, (_, i) => Array.from(t.ints.subarray(i * n, (i + 1) * n)));
}

test('each logits processor matches transformers on random scores', () => {
  const fx = JSON.parse(readFileSync(fixturePath('processors.json'), 'utf8'));
  const make: Record<string, LogitsProcessor[]> = {
    'repetition_penalty_1.3': [repetitionPenaltyProcessor(1.3)],
    'repetition_penalty_0.7': [repetitionPenaltyProcessor(0.7)],
    no_repeat_ngram_2: [noRepeatNgramProcessor(2)],
    no_repeat_ngram_3: [noRepeatNgramProcessor(3)],
    'temperature_0.7': [temperatureWarper(0.7)],
    top_k_5: [topKWarper(5)],
    'top_p_0.8': [topPWarper(0.8)],
    'top_p_0.3_keep_2': [topPWarper(0.3, 2)],
    chain: buildLogitsProcessors({ doSample: true, temperature: 0.8, topK: 10, topP: 0.9, repetitionPenalty: 1.2, noRepeatNgramSize: 2 }),
  };
  assert.deepEqual(fx.order, ['RepetitionPenaltyLogitsProcessor', 'NoRepeatNGramLogitsProcessor',
    'TemperatureLogitsWarper', 'TopKLogitsWarper', 'TopPLogitsWarper']);
  const ids = ids2d(fx.inputIds);
  const v = fx.scores[0].length;
  for (const c of fx.cases) {
    const procs = make[c.name];
    assert.ok(procs, `no processor for case ${c.name}`);
    const scores = tensor(Float32Array.from(fx.scores.flat().map(num)), [fx.scores.length, v]);
    const out = applyProcessors(procs, ids, scores).data;
    const want = c.out.flat().map(num);
    let changed = 0;
    for (let i = 0; i < want.length; i++) {
      if (want[i] === -Infinity) { assert.equal(out[i], -Infinity, `${c.name}[${i}] should be filtered`); continue; }
      assert.ok(Math.abs(out[i] - want[i]) <= 1e-5 * Math.max(1, Math.abs(want[i])), `${c.name}[${i}]: ${out[i]} vs ${want[i]}`);
      if (want[i] !== num(fx.scores.flat()[i])) changed++;
    }
    // Each case must do something, or the comparison proves nothing.
    assert.ok(changed > 0 || want.includes(-Infinity), `${c.name} left the scores unchanged`);
  }
});

test('processors reject bad settings with clear errors', () => {
  assert.throws(() => temperatureWarper(0), /temperature must be a strictly positive/);
  assert.throws(() => topKWarper(0), /topK must be a positive integer/);
  assert.throws(() => topPWarper(1.5), /topP must be a number in \[0, 1\]/);
  assert.throws(() => repetitionPenaltyProcessor(-1), /repetitionPenalty must be a positive/);
  assert.throws(() => noRepeatNgramProcessor(1.5), /noRepeatNgramSize must be a positive integer/);
  // Greedy ignores the sampling warpers, as transformers does.
  assert.equal(buildLogitsProcessors({ doSample: false, temperature: 0.5, topK: 3, topP: 0.5 }).length, 0);
});

test('greedy with KV cache equals greedy recomputing the whole sequence', () => {
  const prompt = ids2d([[1, 4, 7, 2], [3, 3, 9, 0]]);
  const m1 = new ToyLM(), m2 = new ToyLM();
  const a = generate(m1, prompt, { maxNewTokens: 12 });
  const b = generate(m2, prompt, { maxNewTokens: 12, useCache: false });
  assert.deepEqual(rows(a), rows(b));
  assert.deepEqual(a.shape, [2, 16]);
  assert.deepEqual(rows(a).map((r) => r.slice(0, 4)), [[1, 4, 7, 2], [3, 3, 9, 0]]);
  // The cached run feeds one token per step after the prompt; the other the whole sequence.
  assert.deepEqual(m1.calls, [4, ...new Array(11).fill(1)]);
  assert.deepEqual(m2.calls, Array.from({ length: 12 }, (_, i) => 4 + i));
  // Greedy picks the argmax of the model's own next-token logits at every step.
  const full = new ToyLM().forward({ inputIds: a, useCache: false }).logits;
  for (let bi = 0; bi < 2; bi++) {
    for (let j = 3; j < 15; j++) {
      const row = Array.from(full.data.subarray((bi * 16 + j) * 11, (bi * 16 + j + 1) * 11));
      assert.equal(rows(a)[bi][j + 1], row.indexOf(Math.max(...row)));
    }
  }
});

test('left padding: a padded row generates what it generates alone', () => {
  const alone = generate(new ToyLM(), ids2d([[5, 8]]), { maxNewTokens: 6 });
  const batch = generate(new ToyLM(), ids2d([[0, 0, 5, 8], [1, 2, 3, 4]]), {
    maxNewTokens: 6, attentionMask: ids2d([[0, 0, 1, 1], [1, 1, 1, 1]]),
  });
  assert.deepEqual(rows(batch)[0].slice(2), rows(alone)[0]);
  const nocache = generate(new ToyLM(), ids2d([[0, 0, 5, 8], [1, 2, 3, 4]]), {
    maxNewTokens: 6, attentionMask: ids2d([[0, 0, 1, 1], [1, 1, 1, 1]]), useCache: false,
  });
  assert.deepEqual(rows(nocache), rows(batch));
});

test('eos finishes a row, later tokens are padding, and generation stops when all are done', () => {
  const prompt = ids2d([[1, 4, 7, 2], [3, 3, 9, 0]]);
  const free = rows(generate(new ToyLM(), prompt, { maxNewTokens: 12 }));
  const eos = free[0][6]; // row 0's third new token
  const firstHit = (r: number[]) => r.slice(4).indexOf(eos);
  const out = rows(generate(new ToyLM(), prompt, { maxNewTokens: 12, eosTokenId: eos, padTokenId: 10 }));
  for (let bi = 0; bi < 2; bi++) {
    const hit = firstHit(free[bi]);
    const n = out[bi].length;
    if (hit < 0) { assert.deepEqual(out[bi], free[bi].slice(0, n)); continue; }
    assert.deepEqual(out[bi].slice(0, 4 + hit + 1), free[bi].slice(0, 4 + hit + 1));
    assert.ok(out[bi].slice(4 + hit + 1).every((x) => x === 10), `row ${bi} is padded after eos`);
  }
  // With eos in every row (a list of ids), the output ends as soon as both rows have finished.
  const both = [free[0][4], free[1][4]];
  const early = generate(new ToyLM(), prompt, { maxNewTokens: 12, eosTokenId: both });
  assert.deepEqual(early.shape, [2, 5]);
});

test('maxLength counts the prompt; the model position limit is checked', () => {
  const p = ids2d([[1, 2, 3]]);
  assert.deepEqual(generate(new ToyLM(), p, { maxLength: 7 }).shape, [1, 7]);
  assert.deepEqual(generate(new ToyLM(), p, { maxLength: 7, maxNewTokens: 2 }).shape, [1, 5]);
  assert.deepEqual(generate(new ToyLM(), p).shape, [1, 20]);
  assert.throws(() => generate(new ToyLM(), p, { maxNewTokens: 100 }), /exceeds the model's 64 positions/);
  assert.throws(() => generate(new ToyLM(), tensor([1, 2], [1, 2])), /inputIds must be int32/);
});

test('sampling: seeded, reproducible, and follows the processed distribution', () => {
  const p = ids2d([[1, 4, 7, 2]]);
  const a = rows(generate(new ToyLM(), p, { maxNewTokens: 10, doSample: true, seed: 5 }));
  const b = rows(generate(new ToyLM(), p, { maxNewTokens: 10, doSample: true, seed: 5 }));
  const c = rows(generate(new ToyLM(), p, { maxNewTokens: 10, doSample: true, seed: 6, temperature: 3 }));
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  // topK 1 sampling is greedy.
  assert.deepEqual(rows(generate(new ToyLM(), p, { maxNewTokens: 8, doSample: true, topK: 1, seed: 9 })),
    rows(generate(new ToyLM(), p, { maxNewTokens: 8 })));
  // Frequencies of sampleRows match softmax probabilities (and filtered tokens never appear).
  const s = Float32Array.from([1, 0, -Infinity, 2, 0.5]);
  const z = [1, 0, 0, 2, 0.5].map((x, i) => (i === 2 ? 0 : Math.exp(x)));
  const tot = z.reduce((x, y) => x + y);
  const counts = new Array(5).fill(0);
  const rng = new Rng(1);
  const n = 40000;
  for (let i = 0; i < n; i++) counts[sampleRows(s, 1, 5, rng)[0]]++;
  assert.equal(counts[2], 0);
  for (let i = 0; i < 5; i++) assert.ok(Math.abs(counts[i] / n - z[i] / tot) < 0.01, `token ${i}: ${counts[i] / n} vs ${z[i] / tot}`);
});

test('streamers see the prompt, then one token per step, then end', () => {
  const steps: number[][] = [];
  const out = rows(generate(new ToyLM(), ids2d([[1, 4], [2, 2]]), { maxNewTokens: 5, streamer: (ids) => steps.push(ids) }));
  assert.equal(steps.length, 5);
  for (let j = 0; j < 5; j++) assert.deepEqual(steps[j], [out[0][2 + j], out[1][2 + j]]);
  const words0 = { decode: (ids: number[]) => ids.join(' ') };
  assert.throws(() => generate(new ToyLM(), ids2d([[1, 4], [2, 2]]), { maxNewTokens: 2, streamer: new TextStreamer(words0) }), /needs batch size 1/);

  // TextStreamer with a toy tokenizer: token i -> a word; writes whole words only.
  const words = ['a', 'b ', 'c', ' d', 'e\n', 'f', 'g', 'h ', 'i', 'j', 'k'];
  const tok = { decode: (ids: number[]) => ids.map((i) => words[i]).join('') };
  let text = '';
  const pieces: string[] = [];
  const ts = new TextStreamer(tok, { skipPrompt: true, write: (x) => { text += x; pieces.push(x); } });
  const gen = rows(generate(new ToyLM(), ids2d([[3, 1]]), { maxNewTokens: 9, streamer: ts }));
  assert.equal(text, gen[0].slice(2).map((i) => words[i]).join('') + '\n');
  assert.ok(pieces.length >= 2);
  // Word by word on a fixed sequence: text is held back until a space or newline ends it.
  const got: string[] = [];
  const ws = new TextStreamer(tok, { skipPrompt: true, write: (x) => got.push(x) });
  for (const ids of [[9], [0], [1], [2], [3], [4], [5]]) ws.put(ids);
  ws.end();
  assert.deepEqual(got, ['ab ', 'c ', 'de\n', 'f', '\n']);
  assert.throws(() => { ws.put([1]); ws.put([1, 2]); }, /batch size 1/);
  const echo = new TextStreamer(tok, { write: (x) => { text = x; } });
  echo.put([3, 1]); echo.put([5]);
  assert.equal(text, ' db ');
});

test('no tensor memory is left behind after generation', () => {
  const m = new ToyLM();
  const p = ids2d([[1, 4, 7, 2], [3, 3, 9, 0]]);
  generate(m, p, { maxNewTokens: 3 });
  const before = memoryStats().liveBytes;
  generate(m, p, { maxNewTokens: 15 });
  generate(m, p, { maxNewTokens: 15, useCache: false, doSample: true, topP: 0.9 });
  assert.equal(memoryStats().liveBytes, before);
});

test('generate switches dropout off while decoding and restores the mode', () => {
  const m = new ToyLM().train(true);
  let seen: boolean | null = null;
  const orig = m.forward.bind(m);
  m.forward = (x) => { seen = m.training; return orig(x); };
  generate(m, ids2d([[1, 2]]), { maxNewTokens: 2 });
  assert.equal(seen, false);
  assert.equal(m.training, true);
});
