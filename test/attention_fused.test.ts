// The fused attention oracle (Backend.attention / attentionBackward on the reference
// backend) against the composite path (matmul, softmax, dropout, matmul) on the same
// inputs: outputs and all three gradients, with GQA, broadcast masks, fully masked rows
// and dropout (both paths draw one seed and make the same mask bits).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../src/tensor/index.js';
import { Rng, tensor, withBackend, tidy } from '../src/tensor/index.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { assertClose } from './helpers/compare.js';
import { cudaStatus } from '../src/backends/index.js';

const rng = new Rng(11);
const P = (shape: number[], s = 1): Tensor => {
  const n = shape.reduce((a, b) => a * b, 1);
  return tensor(Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * s), shape).setRequiresGrad(true);
};

function run(fused: boolean, q: Tensor, k: Tensor, v: Tensor, opts: Parameters<typeof T.scaledDotProductAttention>[3], backend = 'reference') {
  return withBackend(backend, () => tidy(() => {
    const leaves = [q, k, v].map((x) => x.detach().setRequiresGrad(true));
    const o = T.scaledDotProductAttention(leaves[0], leaves[1], leaves[2], { ...opts, rng: new Rng(21), fused });
    const w = tensor(Float32Array.from({ length: o.size }, (_, i) => Math.sin(i)), o.shape);
    T.sum(T.mul(o, w)).backward();
    return { out: o.toFloat32Array(), grads: leaves.map((l) => l.grad!.toFloat32Array()) };
  }));
}

const CASES: { name: string; q: number[]; kv: number[]; opts: Parameters<typeof T.scaledDotProductAttention>[3] }[] = [
  { name: 'MHA, no mask', q: [2, 3, 5, 4], kv: [2, 3, 5, 4], opts: {} },
  { name: 'GQA 4:2, causal, T < S (cached prefix)', q: [1, 4, 3, 8], kv: [1, 2, 7, 8], opts: { causal: true } },
  { name: 'left padding + causal: fully masked rows', q: [2, 2, 4, 4], kv: [2, 2, 4, 4],
    opts: { causal: true, mask: T.paddingMask(tensor([0, 0, 1, 1, 1, 1, 1, 1], [2, 4], { dtype: 'int32' })) } },
  { name: 'dropout 0.25 with a scale', q: [2, 2, 6, 4], kv: [2, 1, 6, 4], opts: { causal: true, dropout: 0.25, training: true, scale: 0.3 } },
];

for (const c of CASES) {
  test(`fused attention equals the composite path: ${c.name}`, () => {
    const q = P(c.q), k = P(c.kv), v = P(c.kv);
    const a = run(true, q, k, v, c.opts), b = run(false, q, k, v, c.opts);
    assertClose(a.out, b.out, { rtol: 1e-5, atol: 1e-6, msg: `${c.name} out` });
    for (let i = 0; i < 3; i++) assertClose(a.grads[i], b.grads[i], { rtol: 1e-4, atol: 1e-5, msg: `${c.name} grad ${'qkv'[i]}` });
    if (c.name.startsWith('left padding')) {
      // Batch 0, query rows 0 and 1 see only padded keys: zero output, zero gradient.
      const D = c.q[3];
      for (let i = 0; i < 2 * D; i++) assert.equal(a.out[i], 0);
      for (let i = 0; i < 2 * D; i++) assert.equal(a.grads[0][i], 0);
    }
  });
}

test('the fused path is the one taken on a backend that has it', () => {
  withBackend('reference', () => {
    const q = P([1, 1, 2, 2]);
    const o = T.scaledDotProductAttention(q, q, q, {});
    assert.equal(o.node?.name, 'attention');
    const c = T.scaledDotProductAttention(q, q, q, { fused: false });
    assert.equal(c.node?.name, 'matmul');
  });
});

const cuda = cudaStatus();
test('cuda fused attention equals the reference oracle (all cases)', { skip: cuda.available ? false : `cuda: ${cuda.reason}` }, () => {
  for (const c of CASES) {
    const q = P(c.q), k = P(c.kv), v = P(c.kv);
    const a = run(true, q, k, v, c.opts, 'cuda'), b = run(true, q, k, v, c.opts, 'reference');
    assertClose(a.out, b.out, { rtol: 1e-4, atol: 1e-5, msg: `cuda ${c.name} out` });
    for (let i = 0; i < 3; i++) assertClose(a.grads[i], b.grads[i], { rtol: 1e-3, atol: 1e-4, msg: `cuda ${c.name} grad ${'qkv'[i]}` });
  }
});
