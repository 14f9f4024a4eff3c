// linearCrossEntropy (lm head + cross-entropy a chunk of rows at a time) against the plain
// crossEntropy(h @ w^T): loss and both gradients, across chunk sizes and with ignored rows;
// and causal LM models giving the same loss and LoRA gradients with returnLogits: false.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as T from '../src/tensor/index.js';
import { Rng, noGrad, tensor, tidy } from '../src/tensor/index.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { LoraConfig, getPeftModel } from '../src/peft/index.js';
import { assertClose } from './helpers/compare.js';
import { BACKENDS } from './helpers/backends.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIX = [path.join(here, 'fixtures', 'models'), path.resolve('test/fixtures/models')].find((p) => fs.existsSync(p))!;
const rng = new Rng(4);
const P = (shape: number[]): Tensor => tensor(Float32Array.from({ length: shape[0] * shape[1] }, () => rng.next() * 2 - 1), shape);

function both(h0: Tensor, w0: Tensor, targets: Tensor, fused: boolean, chunkRows?: number) {
  return tidy(() => {
    const h = h0.detach().setRequiresGrad(true), w = w0.detach().setRequiresGrad(true);
    const loss = fused ? T.linearCrossEntropy(h, w, targets, { chunkRows }) : T.crossEntropy(T.matmul(h, w, false, true), targets);
    T.mul(loss, T.full([], 1.7)).backward();
    return { loss: loss.item(), gh: h.grad!.toFloat32Array(), gw: w.grad!.toFloat32Array() };
  });
}

for (const [backend, skip] of BACKENDS) {
  test(`linearCrossEntropy equals crossEntropy(h @ w^T) on ${backend}: loss, grad h, grad w, any chunking`, { skip }, () => {
    T.withBackend(backend, () => {
      const h = P([10, 6]), w = P([13, 6]);
      const targets = tensor(new Int32Array([3, -100, 12, 0, 5, 5, -100, 7, 1, 2]), [10]);
      const want = both(h, w, targets, false);
      for (const c of [1, 3, 4, 10, undefined]) {
        const got = both(h, w, targets, true, c);
        assert.ok(Math.abs(got.loss - want.loss) < 1e-5, `chunk ${c}: ${got.loss} vs ${want.loss}`);
        assertClose(got.gh, want.gh, { rtol: 1e-4, atol: 1e-6, msg: `chunk ${c} grad h` });
        assertClose(got.gw, want.gw, { rtol: 1e-4, atol: 1e-6, msg: `chunk ${c} grad w` });
      }
      const none = tensor(new Int32Array(10).fill(-100), [10]);
      assert.ok(Number.isNaN(noGrad(() => T.linearCrossEntropy(h, w, none).item())), 'all rows ignored gives nan, as torch');
    });
  });
}

for (const name of ['gpt2_lm', 'llama_lm']) {
  test(`${name}: returnLogits false gives the same loss and LoRA gradients without logits`, () => {
    const run = (returnLogits: boolean) => {
      const model = AutoModelForCausalLM.fromPretrainedSync(path.join(FIX, name), { logger: () => {} });
      const pm = getPeftModel(model, new LoraConfig({ r: 4, loraAlpha: 8, targetModules: 'all-linear', initLoraWeights: 'gaussian' }), 'default', { rng: new Rng(2) });
      const ids = tensor(new Int32Array([3, 5, 7, 9, 11, 13, 2, 4, 6, 8, 10, 12]), [2, 6]);
      const labels = tensor(new Int32Array([3, 5, 7, 9, -100, -100, 2, 4, 6, 8, 10, 12]), [2, 6]);
      return tidy(() => {
        const out = pm.forward({ inputIds: ids, labels, returnLogits });
        out.loss!.backward();
        const grads = [...pm.namedParameters()].filter(([, p]) => p.requiresGrad).map(([, p]) => p.grad!.toFloat32Array());
        return { loss: out.loss!.item(), logitsShape: out.logits.shape.slice(), grads };
      });
    };
    const a = run(true), b = run(false);
    assert.ok(Math.abs(a.loss - b.loss) < 1e-5, `${a.loss} vs ${b.loss}`);
    assert.equal(b.logitsShape[1], 0, 'no logits computed');
    assert.equal(a.grads.length, b.grads.length);
    for (let i = 0; i < a.grads.length; i++) assertClose(b.grads[i], a.grads[i], { rtol: 1e-3, atol: 1e-6, msg: `grad ${i}` });
  });
}
