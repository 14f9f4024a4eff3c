// Every differentiable op in src/tensor/ops (basic, nn, checkpoint): autograd gradients
// against central finite differences, on the reference backend and on the cpu backend.
import { test } from 'node:test';
import * as T from '../src/tensor/index.js';
import { Tensor, tensor, withBackend, Rng } from '../src/tensor/index.js';
import '../src/backends/index.js';
import { gradcheck, randParam, type GradcheckOpts } from './helpers/gradcheck.js';
import { BACKENDS } from './helpers/backends.js';

interface Case { name: string; fn: (...xs: Tensor[]) => Tensor; inputs: () => Tensor[]; opts?: GradcheckOpts }

let seed = 1;
const P = (shape: number[], s = 1) => randParam(shape, seed++, s);
/** Values bounded away from 0 (for kinks and poles). */
const away = (shape: number[], lo = 0.2, hi = 1.5) => {
  const t = P(shape);
  const d = t.data;
  for (let i = 0; i < d.length; i++) d[i] = Math.sign(d[i] || 1) * (lo + Math.abs(d[i]) * (hi - lo));
  return t;
};
const pos = (shape: number[]) => { const t = away(shape, 0.3, 2); t.data.forEach((v, i) => { t.data[i] = Math.abs(v); }); return t; };
const ids = (vals: number[], shape = [vals.length]) => tensor(Int32Array.from(vals), shape);
const ropeT = T.ropeTables([1, 0.1, 0.01], 12);
const BF16_W = Float32Array.from({ length: 20 }, (_, i) => Math.sin(i * 1.7) * 0.8);

const cases: Case[] = [
  { name: 'clone', fn: (x) => T.clone(x), inputs: () => [P([3, 7])] },
  { name: 'add broadcast', fn: (a, b) => T.add(a, b), inputs: () => [P([2, 3, 7]), P([3, 1])] },
  { name: 'sub broadcast', fn: (a, b) => T.sub(a, b), inputs: () => [P([7]), P([2, 7])] },
  { name: 'mul broadcast', fn: (a, b) => T.mul(a, b), inputs: () => [P([4, 1, 3]), P([1, 5, 3])] },
  { name: 'div broadcast', fn: (a, b) => T.div(a, b), inputs: () => [P([3, 5]), away([5], 0.5, 2)] },
  { name: 'maximum', fn: (a, b) => T.maximum(a, b), inputs: () => { const a = P([3, 7]); const b = a.detach(); const bd = new Float32Array(a.data.map((v, i) => v + (i % 2 ? 0.3 : -0.3))); void b; return [a, tensor(bd, [3, 7], { requiresGrad: true })]; } },
  ...(['neg', 'exp', 'tanh', 'sigmoid', 'silu', 'square'] as const).map((op): Case => ({ name: op, fn: (x) => T[op](x), inputs: () => [P([3, 7], 2)] })),
  ...(['log', 'sqrt', 'rsqrt'] as const).map((op): Case => ({ name: op, fn: (x) => T[op](x), inputs: () => [pos([2, 7])] })),
  { name: 'relu', fn: (x) => T.relu(x), inputs: () => [away([3, 7])] },
  { name: 'abs', fn: (x) => T.abs(x), inputs: () => [away([3, 7])] },
  { name: 'recip', fn: (x) => T.unary('recip', x), inputs: () => [away([3, 7], 0.5, 2)] },
  { name: 'gelu (erf)', fn: (x) => T.gelu(x), inputs: () => [P([3, 7], 3)] },
  { name: 'gelu (tanh)', fn: (x) => T.gelu(x, 'tanh'), inputs: () => [P([3, 7], 3)] },
  { name: 'affine', fn: (x) => T.affine(x, -1.5, 0.5), inputs: () => [P([5])] },
  { name: 'mulScalar/addScalar', fn: (x) => T.addScalar(T.mulScalar(x, 3), 2), inputs: () => [P([5])] },
  { name: 'powScalar', fn: (x) => T.powScalar(x, 2.5), inputs: () => [pos([2, 5])] },
  { name: 'sum axes', fn: (x) => T.sum(x, [0, 2]), inputs: () => [P([2, 3, 4])] },
  { name: 'sum all', fn: (x) => T.sum(x), inputs: () => [P([3, 4])] },
  { name: 'mean keepDim', fn: (x) => T.mean(x, -1, true), inputs: () => [P([3, 7])] },
  { name: 'reshape', fn: (x) => T.mul(T.reshape(x, [7, -1]), T.reshape(x, [7, 3])), inputs: () => [P([3, 7])] },
  { name: 'permute', fn: (x) => T.permute(x, [2, 0, 1]), inputs: () => [P([2, 3, 4])] },
  { name: 'transpose', fn: (x) => T.transpose(x), inputs: () => [P([2, 3, 5])] },
  { name: 'unsqueeze/squeeze', fn: (x) => T.squeeze(T.unsqueeze(x, 1), 1), inputs: () => [P([3, 4])] },
  { name: 'expandTo', fn: (x) => T.expandTo(x, [2, 3, 4]), inputs: () => [P([3, 1])] },
  { name: 'slice', fn: (x) => T.slice(x, 1, 1, -1), inputs: () => [P([2, 5, 3])] },
  { name: 'concat', fn: (a, b) => T.concat([a, b], 1), inputs: () => [P([2, 3]), P([2, 4])] },
  { name: 'stack', fn: (a, b) => T.stack([a, b], 0), inputs: () => [P([2, 3]), P([2, 3])] },
  { name: 'split', fn: (x) => { const [a, b] = T.split(x, [2, 3], -1); return T.mul(T.sum(a, -1, true), b); }, inputs: () => [P([3, 5])] },
  { name: 'sumToShape', fn: (x) => T.sumToShape(x, [1, 4]), inputs: () => [P([3, 4])] },
  { name: 'matmul 2d', fn: (a, b) => T.matmul(a, b), inputs: () => [P([3, 4]), P([4, 5])] },
  { name: 'matmul transA/transB', fn: (a, b) => T.matmul(a, b, true, true), inputs: () => [P([4, 3]), P([5, 4])] },
  { name: 'matmul batched', fn: (a, b) => T.matmul(a, b), inputs: () => [P([2, 3, 4]), P([2, 4, 5])] },
  { name: 'matmul shared 2-D b', fn: (a, b) => T.matmul(a, b), inputs: () => [P([2, 3, 4]), P([4, 5])] },
  { name: 'matmul alpha, transB', fn: (a, b) => T.matmul(a, b, false, true, 0.37), inputs: () => [P([3, 4]), P([5, 4])] },
  { name: 'matmul alpha, shared a (transA)', fn: (a, b) => T.matmul(a, b, true, false, -1.9), inputs: () => [P([4, 3]), P([2, 4, 5])] },
  { name: 'linear alpha (LoRA B with its scaling)', fn: (x, w) => T.linear(x, w, null, 2.5), inputs: () => [P([2, 3, 4]), P([5, 4])] },
  { name: 'matmul shared a (transA)', fn: (a, b) => T.matmul(a, b, true, false), inputs: () => [P([4, 3]), P([2, 4, 5])] },
  { name: 'matmul broadcast batch', fn: (a, b) => T.matmul(a, b, false, true), inputs: () => [P([2, 1, 3, 4]), P([1, 3, 5, 4])] },
  { name: 'linear', fn: (x, w, b) => T.linear(x, w, b), inputs: () => [P([2, 3, 4]), P([5, 4]), P([5])] },
  // A frozen bf16 weight (made on the backend under test, fixed values): gradients reach x and b.
  { name: 'linear bf16 weight', fn: (x, b) => T.linear(x, T.toBfloat16(tensor(BF16_W.slice(), [5, 4])), b), inputs: () => [P([2, 3, 4]), P([5])] },
  { name: 'matmul bf16 weight [in, out]', fn: (x) => T.matmul(x, T.toBfloat16(tensor(BF16_W.slice(), [4, 5]))), inputs: () => [P([3, 4])] },
  { name: 'softmax', fn: (x) => T.softmax(x), inputs: () => [P([3, 7], 2)] },
  { name: 'logSoftmax', fn: (x) => T.logSoftmax(x), inputs: () => [P([3, 7], 2)] },
  { name: 'crossEntropy mean + ignore', fn: (x) => T.crossEntropy(x, ids([1, -100, 6, 0])), inputs: () => [P([4, 7], 2)] },
  { name: 'crossEntropy sum', fn: (x) => T.crossEntropy(x, ids([1, 2, 6, 0], [2, 2]), { reduction: 'sum' }), inputs: () => [P([2, 2, 7], 2)] },
  { name: 'crossEntropy none', fn: (x) => T.crossEntropy(x, ids([3, 5]), { reduction: 'none' }), inputs: () => [P([2, 7], 2)] },
  { name: 'layerNorm', fn: (x, w, b) => T.layerNorm(x, w, b), inputs: () => [P([3, 7], 2), P([7]), P([7])], opts: { eps: 3e-3 } },
  { name: 'layerNorm no affine', fn: (x) => T.layerNorm(x, null, null), inputs: () => [P([3, 7], 2)], opts: { eps: 3e-3 } },
  { name: 'rmsNorm', fn: (x, w) => T.rmsNorm(x, w), inputs: () => [P([3, 7], 2), P([7])], opts: { eps: 3e-3 } },
  { name: 'embedding', fn: (t) => T.embedding(t, ids([2, 0, 2, 4], [2, 2])), inputs: () => [P([5, 3])] },
  { name: 'indexSelect', fn: (x) => T.indexSelect(x, ids([1, 1, 0])), inputs: () => [P([3, 2, 2])] },
  { name: 'dropout (fixed rng)', fn: (x) => T.dropout(x, 0.3, true, new Rng(5)), inputs: () => [P([4, 6])] },
  { name: 'rope', fn: (x) => T.rope(x, ropeT.cos, ropeT.sin, ids([3, 0, 7])), inputs: () => [P([2, 2, 3, 6])] },
  { name: 'where', fn: (a, b) => T.where(tensor([1, 0, 1, 0, 0, 1], [2, 3]), a, b), inputs: () => [P([2, 3]), P([3])] },
  { name: 'maskedFill', fn: (x) => T.maskedFill(x, tensor([0, 1, 0], [3]), -5), inputs: () => [P([2, 3])] },
  { name: 'attention causal', fn: (q, k, v) => T.scaledDotProductAttention(q, k, v, { causal: true }), inputs: () => [P([1, 2, 3, 4]), P([1, 2, 3, 4]), P([1, 2, 3, 4])] },
  { name: 'attention padding mask + GQA', fn: (q, k, v) => T.scaledDotProductAttention(q, k, v, { mask: T.paddingMask(ids([1, 1, 0, 1, 1, 1, 1, 0], [2, 4])) }), inputs: () => [P([2, 4, 2, 3]), P([2, 2, 4, 3]), P([2, 2, 4, 3])] },
  { name: 'attention causal + dropout (fixed rng)', fn: (q, k, v) => T.scaledDotProductAttention(q, k, v, { causal: true, dropout: 0.3, training: true, rng: new Rng(3) }), inputs: () => [P([1, 2, 4, 3]), P([1, 1, 4, 3]), P([1, 1, 4, 3])] },
  { name: 'repeatKv', fn: (x) => T.repeatKv(x, 2), inputs: () => [P([1, 2, 3, 2])] },
  { name: 'checkpoint (with params closed over, dropout rng restored)', fn: (() => {
      const w = P([4, 4]); const rng = new Rng(9); const st = rng.getState();
      // each evaluation starts from the same rng state; backward must restore it itself
      return (x: Tensor) => (rng.setState(st), T.checkpoint((h) => T.dropout(T.gelu(T.matmul(h, w)), 0.2, true, rng), [x], [rng]));
    })(), inputs: () => [P([3, 4])] },
];

for (const [backend, skip] of BACKENDS) {
  test(`gradcheck of every op on ${backend}`, { skip }, () => {
    withBackend(backend, () => {
      for (const c of cases) gradcheck(c.fn, c.inputs(), { name: `${backend} ${c.name}`, ...c.opts });
    });
  });
}

test('gradcheck rejects a wrong gradient', async () => {
  const { result, empty } = await import('../src/tensor/tensor.js');
  const assert = (await import('node:assert/strict')).default;
  const badSquare = (x: Tensor) => {
    const out = empty(x.shape, 'float32', false);
    out.data.set(x.data.map((v) => v * v));
    return result(out, 'badSquare', [x], (g) => [T.mul(g, x)]); // should be 2*x*g
  };
  assert.throws(() => gradcheck(badSquare, [P([5])], { name: 'bad' }), /bad: d\/d input0/);
});
