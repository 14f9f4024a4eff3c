// Every kernel of the cpu and cuda backends against the reference backend on random
// inputs, with sizes that are not multiples of the SIMD width and large enough to take the
// threaded paths. cuda runs twice: on plain arrays (staged) and on buffers from its own
// alloc() (zero copy, asynchronous). Each is skipped when its addon or device is missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend, BinaryOp, UnaryOp } from '../src/backends/backend.js';
import { referenceBackend as R } from '../src/backends/reference/index.js';
import { cpuBackend, cudaBackend } from '../src/backends/index.js';
import { Rng } from '../src/tensor/index.js';
import { broadcastShapes, broadcastStrides, numel, stridesOf } from '../src/tensor/shape.js';
import { assertClose, maxAbs } from './helpers/compare.js';
import { SKIP_CPU, SKIP_CUDA, viaDeviceBuffers } from './helpers/backends.js';

const TARGETS: [string, string | false, () => Backend][] = [
  ['cpu', SKIP_CPU, () => cpuBackend()],
  ['cuda', SKIP_CUDA, () => cudaBackend()],
  ['cuda via alloc()', SKIP_CUDA, () => viaDeviceBuffers(cudaBackend())],
];
const rng = new Rng(7);
const COLS = [1, 7, 33, 257];
// rows x cols: small ones stay single-threaded, 300 x 257 crosses the threading threshold
const SHAPES: [number, number][] = [...COLS.map((c): [number, number] => [3, c]), [300, 257], [2, 20000]];

function rnd(n: number, s = 1, lo?: number): Float32Array {
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = lo !== undefined ? lo + rng.next() * s : (rng.next() * 2 - 1) * s;
  return d;
}
const f32 = (n: number) => new Float32Array(n);
/** Compare with an absolute floor relative to the expected array's scale. */
function close(a: Float32Array, b: Float32Array, msg: string, rtol = 1e-5, atolRel = 1e-6): void {
  assertClose(a, b, { rtol, atol: atolRel * Math.max(1, maxAbs(b)), msg });
}

for (const [label, skip, C] of TARGETS) {
  const UNARY: UnaryOp[] = ['neg', 'exp', 'log', 'sqrt', 'rsqrt', 'tanh', 'relu', 'sigmoid', 'silu', 'gelu', 'gelu_tanh', 'abs', 'square', 'recip'];
  const POSITIVE = new Set<UnaryOp>(['log', 'sqrt', 'rsqrt']);

  test(`unary and unaryBackward match reference on ${label}`, { skip }, () => {
    for (const op of UNARY) {
      for (const n of [1, 7, 33, 257, 70001]) {
        const x = POSITIVE.has(op) ? rnd(n, 5, 0.05) : op === 'exp' ? rnd(n, 20) : rnd(n, 8);
        if (op === 'recip') for (let i = 0; i < n; i++) if (Math.abs(x[i]) < 0.05) x[i] = 0.5;
        const a = f32(n), b = f32(n);
        C().unary(op, x, a); R.unary(op, x, b);
        close(a, b, `unary ${op} n=${n}`, 1e-5, 1e-6);
        const gy = rnd(n);
        C().unaryBackward(op, x, gy, a); R.unaryBackward(op, x, gy, b);
        close(a, b, `unaryBackward ${op} n=${n}`, 1e-5, 1e-6);
      }
    }
  });

  test(`unary special values: exp/sigmoid/gelu tails, infinities, NaN on ${label}`, { skip }, () => {
    const x = Float32Array.from([-Infinity, Infinity, NaN, -200, -100, -88, 88, 89, 0, -0, -15, 15, 1e-8, -1e-8]);
    for (const op of ['exp', 'tanh', 'sigmoid', 'gelu', 'gelu_tanh', 'relu', 'abs', 'neg', 'square'] as UnaryOp[]) {
      const a = f32(x.length), b = f32(x.length);
      C().unary(op, x, a); R.unary(op, x, b);
      close(a, b, `unary ${op} special`, 1e-5, 1e-30);
    }
  });

  const BINARY: BinaryOp[] = ['add', 'sub', 'mul', 'div', 'max', 'min', 'pow'];

  test(`binary with broadcasting matches reference on ${label}`, { skip }, () => {
    const pairs: [number[], number[]][] = [
      [[3, 7], [3, 7]], [[5, 33], [33]], [[5, 33], [5, 1]], [[257], [1]], [[1], [2, 257]], [[2, 3, 33], [3, 1]],
      [[4, 1, 7], [1, 5, 7]], [[2, 1, 3, 257], [1, 4, 3, 1]], [[300, 257], [257]], [[2, 40000], [2, 40000]], [[2, 40000], [2, 1]],
      [[7, 1], [1, 9]], [[]  , [3]],
    ];
    for (const op of BINARY) {
      for (const [sa, sb] of pairs) {
        const out = broadcastShapes(sa, sb);
        const a = op === 'pow' ? rnd(numel(sa), 3, 0.1) : rnd(numel(sa), 3);
        const b = op === 'pow' ? rnd(numel(sb), 4) : rnd(numel(sb), 3);
        if (op === 'div') for (let i = 0; i < b.length; i++) if (Math.abs(b[i]) < 0.1) b[i] = 0.7;
        const x = f32(numel(out)), y = f32(numel(out));
        C().binary(op, a, broadcastStrides(sa, out), b, broadcastStrides(sb, out), x, out);
        R.binary(op, a, broadcastStrides(sa, out), b, broadcastStrides(sb, out), y, out);
        close(x, y, `binary ${op} [${sa}] [${sb}]`);
      }
    }
  });

  test(`affine, axpy on ${label}`, { skip }, () => {
    for (const n of [1, 7, 33, 257, 100003]) {
      const x = rnd(n), a = f32(n), b = f32(n);
      C().affine(x, 1.7, -0.3, a); R.affine(x, 1.7, -0.3, b);
      close(a, b, `affine n=${n}`);
      const y1 = rnd(n), y2 = y1.slice();
      C().axpy(-0.7, x, y1); R.axpy(-0.7, x, y2);
      close(y1, y2, `axpy n=${n}`);
    }
  });

  test(`dropoutMask: bit-exact across backends, rate p, scale 1/(1-p), seeds differ on ${label}`, { skip }, () => {
    for (const [n, p, seed] of [[1, 0.5, 1], [33, 0.1, 7], [100003, 0.3, 0xdeadbeef], [200000, 0.05, 12345]] as [number, number, number][]) {
      const a = f32(n), b = f32(n);
      C().dropoutMask(a, p, seed); R.dropoutMask(b, p, seed);
      assert.deepEqual(a, b, `dropoutMask n=${n} p=${p}`);
      const scale = Math.fround(1 / (1 - p));
      let dropped = 0;
      for (const v of a) { if (v === 0) dropped++; else assert.equal(v, scale); }
      if (n > 1000) assert.ok(Math.abs(dropped / n - p) < 4 * Math.sqrt(p * (1 - p) / n), `rate ${dropped / n} vs p=${p}`);
    }
    const x = f32(1000), y = f32(1000);
    R.dropoutMask(x, 0.5, 1); R.dropoutMask(y, 0.5, 2);
    let same = 0;
    for (let i = 0; i < 1000; i++) if (x[i] === y[i]) same++;
    assert.ok(same > 400 && same < 600, `masks for two seeds agree on ${same}/1000`);
  });

  test(`dropoutApply: x * dropoutMask's mask in one pass, bit-exact across backends on ${label}`, { skip }, (t) => {
    if (!C().dropoutApply) { t.skip(`${label} has no dropoutApply (dropout takes the mask path there)`); return; }
    for (const [n, p, seed] of [[1, 0.5, 1], [33, 0.1, 7], [100003, 0.3, 0xdeadbeef], [200000, 0.05, 12345]] as [number, number, number][]) {
      const x = rnd(n);
      x[0] = NaN; if (n > 2) { x[1] = Infinity; x[2] = -0; }
      const mask = f32(n), viaMask = f32(n), a = f32(n), b = f32(n);
      R.dropoutMask(mask, p, seed);
      for (let i = 0; i < n; i++) viaMask[i] = x[i] * mask[i];
      C().dropoutApply!(x, a, p, seed); R.dropoutApply!(x, b, p, seed);
      assert.deepEqual(a, viaMask, `cpu dropoutApply n=${n} p=${p}`);
      assert.deepEqual(b, viaMask, `reference dropoutApply n=${n} p=${p}`);
    }
  });

  test(`sumMid and maxMid on ${label}`, { skip }, () => {
    const cases: [number, number, number][] = [[1, 1, 1], [3, 7, 1], [1, 257, 1], [2, 33, 7], [5, 1, 33], [1, 100000, 1],
      [3, 4099, 1], [1, 4096, 257], [400, 7, 33], [2, 300, 600]];
    for (const [o, m, i] of cases) {
      const x = rnd(o * m * i), a = f32(o * i), b = f32(o * i);
      C().sumMid(x, o, m, i, a); R.sumMid(x, o, m, i, b);
      close(a, b, `sumMid ${o},${m},${i}`, 1e-5, 1e-6 * Math.sqrt(m));
      C().maxMid(x, o, m, i, a); R.maxMid(x, o, m, i, b);
      assert.deepEqual(a, b, `maxMid ${o},${m},${i}`);
    }
  });

  test(`permute, stridedCopy, stridedAdd (incl. attention [B,T,H,D] <-> [B,H,T,D]) on ${label}`, { skip }, () => {
    const perms: [number[], number[]][] = [
      [[2, 5, 3, 7], [0, 2, 1, 3]], [[4, 33, 12, 64], [0, 2, 1, 3]], [[2, 3, 5, 7], [0, 1, 3, 2]], [[33, 257], [1, 0]],
      [[300, 257], [1, 0]], [[2, 3, 4], [2, 0, 1]], [[7], [0]], [[1, 7, 1, 3], [3, 2, 1, 0]], [[5, 6, 7, 8, 2], [4, 2, 0, 3, 1]],
    ];
    for (const [shape, perm] of perms) {
      const x = rnd(numel(shape)), a = f32(x.length), b = f32(x.length);
      C().permute(x, shape, perm, a); R.permute(x, shape, perm, b);
      assert.deepEqual(a, b, `permute [${shape}] by [${perm}]`);
    }
    // slices along each axis and broadcast reads (stride 0)
    const shape = [4, 9, 33];
    const st = stridesOf(shape);
    const x = rnd(numel(shape));
    for (let ax = 0; ax < 3; ax++) {
      const outShape = shape.slice(); outShape[ax] = shape[ax] - 2;
      const off = 1 * st[ax];
      const a = f32(numel(outShape)), b = f32(numel(outShape));
      C().stridedCopy(x, off, st, outShape, a); R.stridedCopy(x, off, st, outShape, b);
      assert.deepEqual(a, b, `stridedCopy axis ${ax}`);
      const g1 = rnd(numel(shape)), g2 = g1.slice();
      C().stridedAdd(a, outShape, g1, off, st); R.stridedAdd(a, outShape, g2, off, st);
      close(g1, g2, `stridedAdd axis ${ax}`);
    }
    const bshape = [3, 7, 257];
    const src = rnd(7 * 257);
    const bst = broadcastStrides([1, 7, 257], bshape), a = f32(numel(bshape)), b = f32(numel(bshape));
    C().stridedCopy(src, 0, bst, bshape, a); R.stridedCopy(src, 0, bst, bshape, b);
    assert.deepEqual(a, b, 'stridedCopy broadcast');
    // overlapping scatter (stride 0) must still sum every contribution
    const big = rnd(3 * 70000), g1 = f32(70000), g2 = f32(70000);
    C().stridedAdd(big, [3, 70000], g1, 0, [0, 1]); R.stridedAdd(big, [3, 70000], g2, 0, [0, 1]);
    close(g1, g2, 'stridedAdd overlapping');
    // transposed scatter (concat backward style into a transposed view)
    const t1 = rnd(300 * 257), t2 = t1.slice(), gt = rnd(257 * 300);
    C().stridedAdd(gt, [257, 300], t1, 0, [1, 257]); R.stridedAdd(gt, [257, 300], t2, 0, [1, 257]);
    close(t1, t2, 'stridedAdd transposed');
    assert.throws(() => C().stridedCopy(x, 5, st, shape, f32(numel(shape))), /outside the buffer/);
  });

  test(`softmax, logSoftmax and their backward on ${label}`, { skip }, () => {
    for (const [r, c] of SHAPES) {
      const x = rnd(r * c, 6), gy = rnd(r * c), a = f32(r * c), b = f32(r * c);
      C().softmax(x, r, c, a); R.softmax(x, r, c, b);
      close(a, b, `softmax ${r}x${c}`);
      C().softmaxBackward(b, gy, r, c, a); const g2 = f32(r * c); R.softmaxBackward(b, gy, r, c, g2);
      close(a, g2, `softmaxBackward ${r}x${c}`);
      C().logSoftmax(x, r, c, a); R.logSoftmax(x, r, c, b);
      close(a, b, `logSoftmax ${r}x${c}`);
      C().logSoftmaxBackward(b, gy, r, c, a); R.logSoftmaxBackward(b, gy, r, c, g2);
      close(a, g2, `logSoftmaxBackward ${r}x${c}`, 1e-5, 1e-5);
    }
    // masked rows: -inf entries get 0, an all -inf row is all 0 (as reference)
    const x = Float32Array.from([0, -Infinity, 1, -Infinity, -Infinity, -Infinity]);
    const a = f32(6), b = f32(6);
    C().softmax(x, 2, 3, a); R.softmax(x, 2, 3, b);
    assert.deepEqual(a.slice(3), b.slice(3));
    close(a, b, 'softmax masked');
  });

  test(`crossEntropy and backward (with ignored rows, bad targets) on ${label}`, { skip }, () => {
    for (const [r, c] of SHAPES) {
      const x = rnd(r * c, 5);
      const t = Int32Array.from({ length: r }, (_, i) => (i % 4 === 3 ? -100 : Math.floor(rng.next() * c)));
      const l1 = f32(r), l2 = f32(r), s1 = f32(r), s2 = f32(r);
      const n1 = C().crossEntropy(x, t, r, c, -100, l1, s1), n2 = R.crossEntropy(x, t, r, c, -100, l2, s2);
      assert.equal(n1, n2);
      close(l1, l2, `crossEntropy loss ${r}x${c}`, 1e-5, 1e-5); close(s1, s2, `crossEntropy lse ${r}x${c}`);
      const gl = rnd(r), a = f32(r * c), b = f32(r * c);
      C().crossEntropyBackward(x, t, s2, gl, r, c, -100, a); R.crossEntropyBackward(x, t, s2, gl, r, c, -100, b);
      close(a, b, `crossEntropyBackward ${r}x${c}`);
    }
    assert.throws(() => C().crossEntropy(rnd(6), Int32Array.from([0, 3]), 2, 3, -100, f32(2), f32(2)), /target 3 out of range \[0, 3\) at row 1/);
  });

  test(`layerNorm and rmsNorm with and without affine, backward accumulates on ${label}`, { skip }, () => {
    for (const [r, c] of SHAPES) {
      const x = rnd(r * c, 3), gy = rnd(r * c);
      for (const [hasW, hasB] of [[true, true], [true, false], [false, true], [false, false]]) {
        const w = hasW ? rnd(c) : null, bias = hasB ? rnd(c) : null;
        const o1 = f32(r * c), o2 = f32(r * c), m1 = f32(r), m2 = f32(r), s1 = f32(r), s2 = f32(r);
        C().layerNorm(x, w, bias, r, c, 1e-5, o1, m1, s1); R.layerNorm(x, w, bias, r, c, 1e-5, o2, m2, s2);
        close(o1, o2, `layerNorm ${r}x${c} w=${hasW} b=${hasB}`, 1e-4, 1e-5); close(m1, m2, 'mean', 1e-5, 1e-6); close(s1, s2, 'rstd', 1e-4);
        const gx1 = f32(r * c), gx2 = f32(r * c);
        const gw1 = hasW ? rnd(c) : null, gw2 = gw1 ? gw1.slice() : null;
        const gb1 = hasB ? rnd(c) : null, gb2 = gb1 ? gb1.slice() : null;
        C().layerNormBackward(x, w, m2, s2, gy, r, c, gx1, gw1, gb1); R.layerNormBackward(x, w, m2, s2, gy, r, c, gx2, gw2, gb2);
        close(gx1, gx2, `layerNormBackward gx ${r}x${c}`, 1e-4, 1e-5);
        if (gw1 && gw2) close(gw1, gw2, `layerNormBackward gw ${r}x${c}`, 1e-4, 1e-5);
        if (gb1 && gb2) close(gb1, gb2, `layerNormBackward gb ${r}x${c}`, 1e-4, 1e-5);
        if (hasB) continue;
        C().rmsNorm(x, w, r, c, 1e-6, o1, s1); R.rmsNorm(x, w, r, c, 1e-6, o2, s2);
        close(o1, o2, `rmsNorm ${r}x${c} w=${hasW}`, 1e-4, 1e-5); close(s1, s2, 'rms rstd', 1e-4);
        C().rmsNormBackward(x, w, s2, gy, r, c, gx1, gw1); R.rmsNormBackward(x, w, s2, gy, r, c, gx2, gw2);
        close(gx1, gx2, `rmsNormBackward gx ${r}x${c}`, 1e-4, 1e-5);
        if (gw1 && gw2) close(gw1, gw2, `rmsNormBackward gw ${r}x${c}`, 1e-4, 1e-5);
      }
    }
  });

  test(`embedding and embeddingBackward (repeated ids), bad ids throw on ${label}`, { skip }, () => {
    for (const dim of [1, 7, 33, 257]) {
      const V = 11, n = 301;
      const table = rnd(V * dim), ids = Int32Array.from({ length: n }, () => Math.floor(rng.next() * V));
      const a = f32(n * dim), b = f32(n * dim);
      C().embedding(table, ids, dim, a); R.embedding(table, ids, dim, b);
      assert.deepEqual(a, b);
      const gy = rnd(n * dim), g1 = rnd(V * dim), g2 = g1.slice();
      C().embeddingBackward(gy, ids, dim, g1); R.embeddingBackward(gy, ids, dim, g2);
      close(g1, g2, `embeddingBackward dim=${dim}`, 1e-5, 1e-5);
    }
    assert.throws(() => C().embedding(rnd(6), Int32Array.from([0, 3]), 2, f32(4)), /embedding id 3 out of range \[0, 3\) at position 1/);
    assert.throws(() => C().embeddingBackward(rnd(4), Int32Array.from([-1, 0]), 2, f32(6)), /out of range/);
  });

  test(`rope forward/inverse, positions [T] and [B*T], in place on ${label}`, { skip }, () => {
    for (const [b, h, t, d] of [[1, 1, 1, 2], [2, 3, 7, 6], [2, 4, 33, 66], [1, 12, 257, 64]]) {
      const maxPos = t + 5, half = d / 2;
      const cos = rnd(maxPos * half), sin = rnd(maxPos * half), x = rnd(b * h * t * d);
      for (const pos of [Int32Array.from({ length: t }, (_, i) => i + 2), Int32Array.from({ length: b * t }, () => Math.floor(rng.next() * maxPos))]) {
        for (const inv of [false, true]) {
          const a = f32(x.length), e = f32(x.length);
          C().rope(x, cos, sin, pos, b, h, t, d, inv, a); R.rope(x, cos, sin, pos, b, h, t, d, inv, e);
          close(a, e, `rope ${b},${h},${t},${d} inv=${inv}`);
          const ip = x.slice();
          C().rope(ip, cos, sin, pos, b, h, t, d, inv, ip);
          assert.deepEqual(ip, a, 'rope in place');
        }
      }
    }
  });

  test(`adamw matches reference over several steps on ${label}`, { skip }, () => {
    for (const n of [1, 7, 33, 257, 50001]) {
      const p1 = rnd(n), p2 = p1.slice(), m1 = f32(n), m2 = f32(n), v1 = f32(n), v2 = f32(n);
      for (let step = 1; step <= 5; step++) {
        const g = rnd(n);
        C().adamw(p1, g, m1, v1, 1e-2, 0.9, 0.999, 1e-8, 0.01, step);
        R.adamw(p2, g, m2, v2, 1e-2, 0.9, 0.999, 1e-8, 0.01, step);
      }
      close(p1, p2, `adamw p n=${n}`, 1e-5, 1e-6); close(m1, m2, 'adamw m'); close(v1, v2, 'adamw v', 1e-5, 1e-7);
    }
  });

  test(`bf16 conversions are bit exact (rounding, NaN, inf) on ${label}`, { skip }, () => {
    const x = rnd(70001, 100);
    x.set([NaN, Infinity, -Infinity, 0, -0, 3.4e38, 1e-40, 1.00390625, 1.01171875]);
    const u1 = new Uint16Array(x.length), u2 = new Uint16Array(x.length);
    C().f32ToBf16(x, u1); R.f32ToBf16(x, u2);
    assert.deepEqual(u1, u2);
    const f1 = f32(x.length), f2 = f32(x.length);
    C().bf16ToF32(u1, f1); R.bf16ToF32(u1, f2);
    assert.deepEqual(f1, f2);
  });

  test(`dequantizeNF4 and dequantizeAbsmax are bit exact (odd, unaligned ranges; any blocksize) on ${label}`, { skip }, () => {
    const sameBits = (a: Float32Array, b: Float32Array, what: string) =>
      assert.deepEqual(new Uint32Array(a.buffer, a.byteOffset, a.length), new Uint32Array(b.buffer, b.byteOffset, b.length), what);
    const code16 = rnd(16, 3);
    // (n, blocksize, start, count): aligned, odd start / end, mid-block, one element, a blocksize that is no power of two
    const ranges: [number, number, number, number][] = [[64, 64, 0, 64], [1001, 64, 1, 1000], [1001, 64, 63, 2], [1001, 64, 65, 31],
      [777, 128, 776, 1], [4096 * 3 + 5, 4096, 4095, 4097], [300, 64, 17, 0], [70001, 64, 3, 69990], [999, 100, 150, 701]];
    for (const [n, bs, start, count] of ranges) {
      const packed = new Uint8Array(Math.ceil(n / 2)).map(() => Math.floor(rng.next() * 256));
      const absmax = rnd(Math.ceil(n / bs), 5).subarray(Math.floor(start / bs));
      const want = f32(count), got = f32(count + 2).fill(7);
      R.dequantizeNF4!(packed, absmax, bs, code16, start, count, want);
      C().dequantizeNF4!(packed, absmax, bs, code16, start, count, got);
      sameBits(got.subarray(0, count), want, `dequantizeNF4 n=${n} bs=${bs} [${start}, +${count})`);
      assert.deepEqual([...got.subarray(count)], [7, 7], 'nothing written past count');
    }
    const code256 = rnd(256, 1);
    for (const [n, bs] of [[1, 256], [1000, 256], [70001, 256], [513, 7]]) {
      const q = new Uint8Array(n).map(() => Math.floor(rng.next() * 256));
      const absmax = rnd(Math.ceil(n / bs), 2), offset = Math.fround(rng.next() * 0.1);
      const want = f32(n), got = f32(n + 1).fill(7);
      R.dequantizeAbsmax!(q, absmax, bs, code256, offset, n, want);
      C().dequantizeAbsmax!(q, absmax, bs, code256, offset, n, got);
      sameBits(got.subarray(0, n), want, `dequantizeAbsmax n=${n} bs=${bs}`);
      assert.equal(got[n], 7);
    }
  });

  test(`matmul: all transposes, batches, broadcast operand, alpha/beta, odd sizes on ${label}`, { skip }, () => {
    const dims: [number, number, number][] = [[1, 1, 1], [7, 33, 1], [33, 7, 257], [1, 257, 33], [65, 129, 70]];
    for (const [m, n, k] of dims) {
      for (const tA of [false, true]) for (const tB of [false, true]) for (const [batch, shareA] of [[1, false], [3, false], [5, true]] as [number, boolean][]) {
        const sA = shareA ? 0 : m * k, sB = k * n;
        const a = rnd(shareA ? m * k : batch * m * k), b = rnd(batch * k * n);
        const c1 = rnd(batch * m * n), c2 = c1.slice();
        C().matmul(a, b, c1, batch, m, n, k, tA, tB, sA, sB, 0.5, 0.25);
        R.matmul(a, b, c2, batch, m, n, k, tA, tB, sA, sB, 0.5, 0.25);
        close(c1, c2, `matmul ${m}x${n}x${k} tA=${tA} tB=${tB} batch=${batch}`, 1e-4, 1e-5 * Math.sqrt(k));
      }
    }
    // many small products go through the per-thread path
    const a = rnd(48 * 33 * 16), b = rnd(48 * 16 * 33), c1 = f32(48 * 33 * 33), c2 = f32(48 * 33 * 33);
    C().matmul(a, b, c1, 48, 33, 33, 16, false, true, 33 * 16, 33 * 16, 1, 0);
    R.matmul(a, b, c2, 48, 33, 33, 16, false, true, 33 * 16, 33 * 16, 1, 0);
    close(c1, c2, 'batched small matmul', 1e-4, 1e-5);
    assert.throws(() => C().matmul(f32(3), f32(4), f32(4), 1, 2, 2, 2, false, false, 0, 0, 1, 0), /matmul a/);
  });

  test(`matmulBf16 (bf16 weight, both layouts, alpha/beta, odd sizes) and embeddingBf16 match reference on ${label}`, { skip }, () => {
    const be = C();
    assert.ok(be.matmulBf16 && be.embeddingBf16, `${label} has the bf16 kernels`);
    const bits = (n: number, s = 1) => { const u = new Uint16Array(n); R.f32ToBf16(rnd(n, s), u); return u; };
    for (const [m, n, k] of [[1, 1, 1], [7, 33, 1], [33, 7, 257], [1, 257, 33], [65, 129, 70], [300, 2304, 40]] as [number, number, number][]) {
      for (const tB of [true, false]) {
        const a = rnd(m * k), w = bits(n * k, 2);
        const c1 = rnd(m * n), c2 = c1.slice();
        be.matmulBf16!(a, w, c1, m, n, k, tB, 0.5, 0.25);
        R.matmulBf16!(a, w, c2, m, n, k, tB, 0.5, 0.25);
        close(c1, c2, `matmulBf16 ${m}x${n}x${k} transB=${tB}`, 1e-4, 1e-5 * Math.sqrt(k));
        // beta = 0 overwrites (NaN in c must not leak)
        const c3 = f32(m * n).fill(NaN), c4 = f32(m * n);
        be.matmulBf16!(a, w, c3, m, n, k, tB, 1, 0);
        R.matmulBf16!(a, w, c4, m, n, k, tB, 1, 0);
        close(c3, c4, `matmulBf16 beta=0 ${m}x${n}x${k} transB=${tB}`, 1e-4, 1e-5 * Math.sqrt(k));
      }
    }
    // k = 0: c = beta * c
    const c = Float32Array.from([1, 2, 3, 4]);
    be.matmulBf16!(f32(0), new Uint16Array(0), c, 2, 2, 0, true, 1, 0.5);
    assert.deepEqual([...c], [0.5, 1, 1.5, 2]);
    assert.throws(() => be.matmulBf16!(f32(3), new Uint16Array(4), f32(4), 2, 2, 2, true, 1, 0), /matmulBf16 a/);
    assert.throws(() => be.matmulBf16!(f32(4), new Uint16Array(3), f32(4), 2, 2, 2, true, 1, 0), /matmulBf16 w/);
    // embedding rows widened exactly (bit for bit), ids checked
    const dim = 257, rows = 40, table = bits(rows * dim, 3);
    const ids = Int32Array.from({ length: 300 }, (_, i) => (i * 7) % rows);
    const o1 = f32(ids.length * dim), o2 = f32(ids.length * dim);
    be.embeddingBf16!(table, ids, dim, o1); R.embeddingBf16!(table, ids, dim, o2);
    assert.deepEqual(o1, o2);
    assert.throws(() => be.embeddingBf16!(table, Int32Array.from([rows]), dim, f32(dim)), /out of range/);
  });
}
