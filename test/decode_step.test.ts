// Work a decoding step no longer does: permutes that only move size-1 axes are views, the
// LM head runs on the last position (see kv_cache.test.ts for logitsToKeep).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { referenceBackend as R } from '../src/backends/index.js';
import { Rng, permute, tensor, tidy } from '../src/tensor/index.js';
import { gradcheck, randParam } from './helpers/gradcheck.js';

const rng = new Rng(3);
const rnd = (n: number) => Float32Array.from({ length: n }, () => rng.next() * 2 - 1);

test('permute moving only size-1 axes is a view with the values of the copying permute', () => tidy(() => {
  for (const [shape, perm] of [[[2, 1, 3, 4], [0, 2, 1, 3]], [[1, 5, 1, 2], [2, 1, 0, 3]], [[3, 1], [1, 0]]] as [number[], number[]][]) {
    const x = tensor(rnd(shape.reduce((a, b) => a * b, 1)), shape);
    const y = permute(x, perm);
    assert.deepEqual(y.shape, perm.map((a) => shape[a]));
    assert.equal(y.buf, x.buf, `[${shape}] by [${perm}] shares the buffer`);
    const want = new Float32Array(x.size);
    R.permute(x.toFloat32Array(), shape, perm, want);
    assert.deepEqual(y.toFloat32Array(), want);
  }
  // A permute that reorders two axes larger than 1 still copies.
  const z = tensor(rnd(6), [2, 1, 3]);
  assert.notEqual(permute(z, [2, 1, 0]).buf, z.buf);
}));

test('gradcheck: permute as a view', () => {
  gradcheck((x) => permute(x, [0, 2, 1, 3]), [randParam([2, 1, 3, 4], 1)], { name: 'permute view' });
});
