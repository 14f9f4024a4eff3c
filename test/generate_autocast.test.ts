// generate(..., { autocast: 'bfloat16' }): every decoding step runs under autocast (also
// across generateAsync's awaits, and with the caller's setting captured at the call), code
// between the steps does not see it, and the tokens are those of a greedy loop whose every
// forward runs under autocast.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, tensor, autocast, autocastDtype, noGrad } from '../src/tensor/index.js';
import type { ModelInputs, ModelOutput } from '../src/models/types.js';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { generate, generateAsync, argmaxRows } from '../src/generate/generate.js';
import { generateText } from '../src/generate/text.js';

const cfg = { model_type: 'gpt2', vocab_size: 64, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 2 };

/** The model, with the autocast setting each forward saw recorded. */
function recording(dtype: 'float32' | 'bfloat16' = 'bfloat16') {
  const model = AutoModelForCausalLM.fromConfig(cfg, { rng: new Rng(5), dtype });
  model.train(false);
  const seen: (string | null)[] = [];
  const m = {
    training: false, config: model.config,
    forward(inp: ModelInputs): ModelOutput { seen.push(autocastDtype()); return model.forward(inp); },
  };
  return { model, m, seen };
}

const prompt = () => tensor(Int32Array.from([3, 9, 27, 17, 5, 44, 2, 8]), [2, 4], { dtype: 'int32' });

test('generateAsync with autocast: every step under bf16, nothing outside the steps', async () => {
  const { m, seen } = recording();
  const between: (string | null)[] = [];
  const probe = setInterval(() => between.push(autocastDtype()), 0);
  try {
    const out = await generateAsync(m, prompt(), { maxNewTokens: 6, eosTokenId: null, autocast: 'bfloat16' });
    assert.deepEqual(out.shape, [2, 10]);
  } finally { clearInterval(probe); }
  assert.equal(seen.length, 6);
  assert.deepEqual(seen, Array(6).fill('bfloat16'));
  assert.ok(between.every((x) => x === null), `code between steps saw ${JSON.stringify(between)}`);
  assert.equal(autocastDtype(), null);
});

test('autocast set by the caller around an async generate covers every step; null turns it off', async () => {
  const { m, seen } = recording();
  // A synchronous scope returns before the promise settles: the setting is captured at the call.
  const p = autocast('bfloat16', () => generateAsync(m, prompt(), { maxNewTokens: 5, eosTokenId: null }));
  assert.equal(autocastDtype(), null);
  (await p).dispose();
  assert.deepEqual(seen, Array(5).fill('bfloat16'));
  seen.length = 0;
  autocast('bfloat16', () => generate(m, prompt(), { maxNewTokens: 3, eosTokenId: null, autocast: null })).dispose();
  assert.deepEqual(seen, [null, null, null]);
});

test('generateText passes autocast to every step; a bad value is a clear error', async () => {
  const { m, seen } = recording();
  const tok = {
    encode: (s: string) => Array.from(s, (ch) => ch.charCodeAt(0) % 64),
    decode: (ids: ArrayLike<number>) => Array.from(ids, (i) => String.fromCharCode(65 + (i % 26))).join(''),
    eosTokenId: null, padTokenId: 0,
  };
  const text = await generateText(m, tok, 'hello', { maxNewTokens: 4, autocast: 'bfloat16' });
  assert.equal(text.length, 4);
  assert.deepEqual(seen, Array(4).fill('bfloat16'));
  assert.throws(() => generate(m, prompt(), { maxNewTokens: 2, autocast: 'float16' as never }), /generate: autocast must be 'bfloat16' or null/);
  await assert.rejects(generateAsync(m, prompt(), { maxNewTokens: 2, autocast: 'fp16' as never }), /autocast must be/);
});

for (const dtype of ['float32', 'bfloat16'] as const) {
  test(`${dtype} weights: greedy tokens with autocast equal a loop of full forwards under autocast`, () => {
    const { model } = recording(dtype);
    const ids = prompt();
    const out = generate(model, ids, { maxNewTokens: 6, eosTokenId: null, autocast: 'bfloat16' });
    // The oracle: recompute the whole sequence each step, every forward under autocast.
    const rows = [[...ids.ints.subarray(0, 4)], [...ids.ints.subarray(4, 8)]];
    for (let s = 0; s < 6; s++) {
      const t = rows[0].length;
      const next = noGrad(() => autocast('bfloat16', () => {
        const o = model.forward({ inputIds: tensor(Int32Array.from(rows.flat()), [2, t], { dtype: 'int32' }) });
        const v = o.logits.shape[2], last = new Float32Array(2 * v);
        for (let b = 0; b < 2; b++) last.set(o.logits.data.subarray((b * t + t - 1) * v, (b * t + t) * v), b * v);
        return argmaxRows(last, 2, v);
      }));
      rows.forEach((r, b) => r.push(next[b]));
    }
    assert.deepEqual([...out.ints], rows.flat());
  });
}
