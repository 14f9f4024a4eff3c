// The KV cache grows by doubling and is written in place under noGrad (no copy of the whole
// cache per step); the recorded-graph path keeps the differentiable concat. Both give the
// logits of a one-shot forward.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { memoryStats, noGrad, tensor, tidy } from '../src/tensor/index.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { AutoModelForCausalLM, type KVCache } from '../src/models/index.js';
import { attentionBias, kvCapacity } from '../src/models/common.js';
import { generate } from '../src/generate/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIX = [path.join(here, 'fixtures', 'models'), path.join(here, '..', '..', 'test', 'fixtures', 'models'), path.resolve('test/fixtures/models')]
  .find((p) => fs.existsSync(p))!;

function maxRelErr(got: Float32Array, want: Float32Array): number {
  let d = 0, m = 0;
  for (let i = 0; i < want.length; i++) { d = Math.max(d, Math.abs(got[i] - want[i])); m = Math.max(m, Math.abs(want[i])); }
  return d / Math.max(m, 1e-12);
}

const ids = (row: number[]) => tensor(Int32Array.from(row), [1, row.length], { dtype: 'int32' });

for (const name of ['gpt2_lm', 'llama_lm']) {
  test(`${name}: in-place KV cache doubles its capacity and matches the full forward`, () => {
    const model = AutoModelForCausalLM.fromPretrainedSync(path.join(FIX, name), { logger: () => {} });
    const seq = [3, 17, 5, 9, 2, 11, 4, 8, 13, 6, 7, 1];
    const v = model.config.vocabSize;
    tidy(() => noGrad(() => {
      const full = model.forward({ inputIds: ids(seq) }).logits.data;
      let out = model.forward({ inputIds: ids(seq.slice(0, 3)), useCache: true });
      let cache: KVCache = out.pastKeyValues!;
      assert.equal(cache.layers[0].k.shape[2], 3, 'a first forward makes an exact-size cache');
      const caps: number[] = [];
      for (let j = 3; j < seq.length; j++) {
        const before = cache.layers[0].k, cap = before.shape[2];
        assert.equal(kvCapacity(cache, 1), j + 1 <= cap ? cap : Math.max(j + 1, 2 * cap));
        out = model.forward({ inputIds: ids([seq[j]]), pastKeyValues: cache, useCache: true });
        cache = out.pastKeyValues!;
        const k = cache.layers[0].k;
        caps.push(k.shape[2]);
        if (j + 1 <= cap) assert.equal(k, before, 'room left: the same buffer, written in place');
        else assert.notEqual(k, before);
        assert.equal(cache.length, j + 1);
        // Empty slots stay zero (the bias masks them; zeros keep 0 * v finite).
        const [b, h, c, d] = k.shape;
        for (let x = 0; x < b * h; x++) for (let p = j + 1; p < c; p++) for (let e = 0; e < d; e++) assert.equal(k.data[(x * c + p) * d + e], 0);
        const want = full.subarray(j * v, (j + 1) * v);
        const e = maxRelErr(out.logits.data, want);
        assert.ok(e < 1e-5, `${name} step ${j}: rel err ${e}`);
      }
      assert.deepEqual(caps, [6, 6, 6, 12, 12, 12, 12, 12, 12]);
    }));
  });
}

test('with a graph recorded the cache is concatenated (exact size, differentiable)', () => {
  const model = AutoModelForCausalLM.fromPretrainedSync(path.join(FIX, 'gpt2_lm'), { logger: () => {} });
  tidy(() => {
    // A noGrad cache with spare capacity, then one step with grad on.
    let cache = noGrad(() => model.forward({ inputIds: ids([3, 17, 5]), useCache: true }).pastKeyValues!);
    cache = noGrad(() => model.forward({ inputIds: ids([9]), pastKeyValues: cache, useCache: true }).pastKeyValues!);
    assert.equal(cache.layers[0].k.shape[2], 6);
    const out = model.forward({ inputIds: ids([2]), pastKeyValues: cache, useCache: true });
    assert.equal(out.pastKeyValues!.layers[0].k.shape[2], 5);
    assert.equal(out.pastKeyValues!.length, 5);
    const full = noGrad(() => model.forward({ inputIds: ids([3, 17, 5, 9, 2]) }).logits.data);
    const v = model.config.vocabSize;
    assert.ok(maxRelErr(out.logits.data, full.subarray(4 * v)) < 1e-5);
  });
});

test('maxCacheLength stops the doubling at the length the caller will reach', () => {
  const model = AutoModelForCausalLM.fromPretrainedSync(path.join(FIX, 'gpt2_lm'), { logger: () => {} });
  tidy(() => noGrad(() => {
    let cache = model.forward({ inputIds: ids([3, 17, 5]), useCache: true, maxCacheLength: 8 }).pastKeyValues!;
    const caps: number[] = [];
    for (const tok of [9, 2, 11, 4, 8]) {
      cache = model.forward({ inputIds: ids([tok]), pastKeyValues: cache, useCache: true, maxCacheLength: 8 }).pastKeyValues!;
      caps.push(cache.layers[0].k.shape[2]);
    }
    assert.deepEqual(caps, [6, 6, 6, 8, 8]);
  }));
});

test('attentionBias: keys past the filled length are -inf, the rest as before', () => {
  const am = tensor(Int32Array.from([0, 1, 1]), [1, 3], { dtype: 'int32' });
  const b = attentionBias(1, 1, 2, am, { causal: true, capacity: 5 })!;
  assert.deepEqual(b.shape, [1, 1, 1, 5]);
  assert.deepEqual(Array.from(b.data).slice(1), [0, 0, -Infinity, -Infinity]);
  assert.ok(b.data[0] < -1e38 && Number.isFinite(b.data[0]));
  assert.equal(attentionBias(1, 1, 2, null, { causal: true, capacity: 3 }), null, 'full cache, one query: no bias');
  assert.deepEqual(attentionBias(1, 1, 2, null, { causal: true, capacity: 4 })!.toArray(), [0, 0, 0, -Infinity]);
});

test('generate frees its cache: live tensors are back where they started', () => {
  const model = AutoModelForCausalLM.fromPretrainedSync(path.join(FIX, 'llama_lm'), { logger: () => {} });
  const input: Tensor = ids([3, 17, 5]);
  generate(model, input, { maxNewTokens: 4 }).dispose(); // warm lazily built tables (rope)
  const before = memoryStats();
  generate(model, input, { maxNewTokens: 20 }).dispose();
  const after = memoryStats();
  assert.equal(after.liveBytes, before.liveBytes);
});

for (const name of ['gpt2_lm', 'llama_lm']) {
  test(`${name}: logitsToKeep returns the last positions' logits only, equal to the full forward's`, () => {
    const model = AutoModelForCausalLM.fromPretrainedSync(path.join(FIX, name), { logger: () => {} });
    const seq = [[3, 17, 5, 9, 2, 11], [4, 8, 13, 6, 7, 1]];
    const v = model.config.vocabSize;
    tidy(() => noGrad(() => {
      const input = tensor(Int32Array.from(seq.flat()), [2, 6], { dtype: 'int32' });
      const full = model.forward({ inputIds: input }).logits;
      for (const keep of [1, 2]) {
        const part = model.forward({ inputIds: input, logitsToKeep: keep }).logits;
        assert.deepEqual(part.shape, [2, keep, v]);
        for (let b = 0; b < 2; b++) {
          const want = full.data.subarray((b * 6 + 6 - keep) * v, (b * 6 + 6) * v);
          assert.ok(maxRelErr(part.data.subarray(b * keep * v, (b + 1) * keep * v), want) < 1e-5, `${name} keep ${keep} row ${b}`);
        }
      }
      assert.deepEqual(model.forward({ inputIds: input, logitsToKeep: 9 }).logits.shape, [2, 6, v], 'more than T keeps all');
      assert.throws(() => model.forward({ inputIds: input, logitsToKeep: 1, labels: input }), /logitsToKeep cannot be combined with labels/);
      assert.throws(() => model.forward({ inputIds: input, logitsToKeep: -1 }), /non-negative integer/);
    }));
  });
}
