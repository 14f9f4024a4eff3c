// The small-m GEMM kernels (native/src/gemv.cc: m <= 8 rows of activations, as in decoding)
// against the reference backend: both layouts of W, float32 and bfloat16 weights, odd n and
// k (tails of 16-wide vectors and of the 4-row / 2-row blocks), alpha and beta.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { referenceBackend as R, cpuBackend } from '../src/backends/index.js';
import { Rng, linear, matmul, tensor, tidy, toBfloat16, toFloat32, withBackend } from '../src/tensor/index.js';
import { f32ToBf16, bf16ToF32 } from '../src/io/half.js';
import { assertClose, maxAbs } from './helpers/compare.js';
import { SKIP_CPU } from './helpers/backends.js';

const rng = new Rng(5);
const rnd = (n: number, s = 1) => Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * s);
const bits = (x: Float32Array) => { const u = new Uint16Array(x.length); f32ToBf16(x, u); return u; };
const widen = (u: Uint16Array) => { const f = new Float32Array(u.length); bf16ToF32(u, f); return f; };

// [n, k]: k below, at and past one vector (16) and long with a tail; n with block and vector tails.
const SHAPES: [number, number][] = [[1, 1], [3, 5], [17, 16], [33, 17], [300, 77], [1029, 40], [70, 1029]];

test('cpu matmul with m <= 8 rows matches the reference (both layouts, alpha/beta, odd shapes)', { skip: SKIP_CPU }, () => {
  const C = cpuBackend();
  for (let m = 1; m <= 8; m++) {
    for (const [n, k] of SHAPES) {
      for (const tB of [true, false]) {
        const a = rnd(m * k), w = rnd(n * k, 2);
        for (const [alpha, beta] of [[1, 0], [0.5, 0.25]]) {
          const c1 = rnd(m * n), c2 = c1.slice();
          C.matmul(a, w, c1, 1, m, n, k, false, tB, 0, 0, alpha, beta);
          R.matmul(a, w, c2, 1, m, n, k, false, tB, 0, 0, alpha, beta);
          assertClose(c1, c2, { rtol: 1e-5, atol: 1e-6 * Math.sqrt(k) * Math.max(1, maxAbs(c2)), msg: `m${m} n${n} k${k} transB=${tB} alpha=${alpha} beta=${beta}` });
        }
      }
    }
  }
});

test('cpu matmulBf16 with m <= 8 matches the reference and equals the float32 kernel on the widened weight', { skip: SKIP_CPU }, () => {
  const C = cpuBackend();
  for (let m = 1; m <= 8; m++) {
    for (const [n, k] of SHAPES) {
      for (const tB of [true, false]) {
        const a = rnd(m * k), w = bits(rnd(n * k, 2));
        const c1 = rnd(m * n), c2 = c1.slice(), c3 = c1.slice();
        C.matmulBf16!(a, w, c1, m, n, k, tB, 0.5, 0.25);
        R.matmulBf16!(a, w, c2, m, n, k, tB, 0.5, 0.25);
        assertClose(c1, c2, { rtol: 1e-5, atol: 1e-6 * Math.sqrt(k) * Math.max(1, maxAbs(c2)), msg: `bf16 m${m} n${n} k${k} transB=${tB}` });
        // One kernel body for both weight types: the same sums in the same order.
        C.matmul(a, widen(w), c3, 1, m, n, k, false, tB, 0, 0, 0.5, 0.25);
        assert.deepEqual(c1, c3, `bf16 vs float32 kernel m${m} n${n} k${k} transB=${tB}`);
      }
    }
  }
});

test('batched matmul with few rows (attention over a cache) matches the reference per batch item', { skip: SKIP_CPU }, () => {
  const C = cpuBackend();
  const batch = 3, m = 1, n = 37, k = 64;
  for (const tB of [true, false]) {
    const a = rnd(batch * m * k), w = rnd(batch * n * k), c1 = new Float32Array(batch * m * n), c2 = c1.slice();
    C.matmul(a, w, c1, batch, m, n, k, false, tB, m * k, n * k, 1, 0);
    R.matmul(a, w, c2, batch, m, n, k, false, tB, m * k, n * k, 1, 0);
    assertClose(c1, c2, { rtol: 1e-5, atol: 1e-5, msg: `batched transB=${tB}` });
  }
});

test('linear and Conv1D-style matmul on one token (float32 and bf16 weights) match the reference backend', () => tidy(() => {
  // Runs on the active backend (cpu, deferred, ...) against the oracle.
  for (const rows of [1, 3, 8]) {
    const x = tensor(rnd(rows * 200), [rows, 1, 200]);
    const w = tensor(rnd(301 * 200), [301, 200]), wc = tensor(rnd(200 * 129), [200, 129]);
    const ref = withBackend('reference', () => [linear(x, w).toFloat32Array(), matmul(x, wc).toFloat32Array(),
      linear(x, toFloat32(toBfloat16(w))).toFloat32Array()]);
    const got = [linear(x, w).toFloat32Array(), matmul(x, wc).toFloat32Array(), linear(x, toBfloat16(w)).toFloat32Array()];
    for (let i = 0; i < 3; i++) assertClose(got[i], ref[i], { rtol: 1e-4, atol: 1e-4, msg: `rows ${rows} case ${i}` });
  }
}));

test('PEFT_TS_SIMD=avx2 (no AVX-512 kernels) still gives the reference results for m <= 8', { skip: SKIP_CPU }, () => {
  const idx = fileURLToPath(new URL('../src/backends/index.js', import.meta.url));
  const code = `const m = await import(${JSON.stringify(idx)});
    const C = m.cpuBackend(), R = m.referenceBackend; let worst = 0;
    for (const tB of [true, false]) for (const [rows, n, k] of [[1, 300, 77], [8, 33, 129]]) {
      const a = Float32Array.from({ length: rows * k }, (_, i) => Math.sin(i)), w = Float32Array.from({ length: n * k }, (_, i) => Math.cos(i));
      const c1 = new Float32Array(rows * n), c2 = new Float32Array(rows * n);
      C.matmul(a, w, c1, 1, rows, n, k, false, tB, 0, 0, 1, 0); R.matmul(a, w, c2, 1, rows, n, k, false, tB, 0, 0, 1, 0);
      for (let i = 0; i < c1.length; i++) worst = Math.max(worst, Math.abs(c1[i] - c2[i]));
    }
    console.log(m.nativeInfo().simd, worst);`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { env: { ...process.env, PEFT_TS_SIMD: 'avx2', PEFT_TS_BACKEND: '' }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const [simd, worst] = r.stdout.trim().split(' ');
  assert.equal(simd, 'avx2');
  assert.ok(Number(worst) < 1e-3, `avx2 path differs from the reference by ${worst}`);
});
