// Backend.dequantizeNF4: the native kernel (AVX-512 and AVX2 lookups, threaded) against the
// reference loop, bit for bit, on ranges that start and end anywhere; and Linear4bit giving
// the same bits through the kernel as through the TypeScript path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SKIP_CPU } from './helpers/backends.js';
import { assertSameBits } from './helpers/compare.js';
import { cpuBackend, nativeInfo, referenceBackend, setNumThreads, getNumThreads } from '../src/backends/index.js';
import { Rng, getBackend, randn, registerBackend, withBackend } from '../src/tensor/index.js';
import { NF4_CODE, blockScales, dequantizeAbsmax, dequantizeNF4Range, quantizeNF4 } from '../src/quant/nf4.js';
import { Linear4bit, setLinear4bitTileElements } from '../src/quant/linear4bit.js';

/** Random packed codes, scales of both signs and magnitudes, and a code map. */
function randomCase(n: number, bs: number, seed: number, code: Float32Array = NF4_CODE as Float32Array) {
  const rng = new Rng(seed);
  const packed = new Uint8Array(Math.ceil(n / 2)).map(() => rng.int(256));
  const absmax = new Float32Array(Math.ceil(n / bs)).map(() => (rng.next() - 0.3) * 10 ** (rng.int(6) - 3));
  return { packed, absmax, code };
}

// (n, blocksize, start, count): block-aligned, odd starts/ends, mid-block, tails under 16 bytes,
// a single element, many blocks, big enough to be split across threads.
const RANGES: [number, number, number, number][] = [
  [64, 64, 0, 64], [1000, 64, 0, 1000], [1001, 64, 0, 1001], [1001, 64, 1, 1000], [1001, 64, 63, 2],
  [1001, 64, 65, 31], [777, 128, 129, 500], [777, 128, 776, 1], [4096 * 3 + 5, 4096, 4095, 4097],
  [300, 64, 17, 0], [1 << 18, 64, 3, (1 << 18) - 7], [(1 << 17) + 1, 256, 1, 1 << 17],
];

function check(be: { dequantizeNF4?: typeof referenceBackend.dequantizeNF4 }, label: string): void {
  RANGES.forEach(([n, bs, start, count], k) => {
    for (const code of [NF4_CODE as Float32Array, new Float32Array(16).map((_, i) => Math.sin(i * 1.7) * 3.3)]) {
      const { packed, absmax } = randomCase(n, bs, 100 + k, code);
      const b0 = Math.floor(start / bs);
      const scales = absmax.subarray(b0);
      const want = new Float32Array(count), got = new Float32Array(count + 3).fill(7);
      referenceBackend.dequantizeNF4!(packed, scales, bs, code, start, count, want);
      be.dequantizeNF4!(packed, scales, bs, code, start, count, got);
      assertSameBits(got.subarray(0, count), want, `${label} n=${n} bs=${bs} [${start}, +${count})`);
      assert.deepEqual([...got.subarray(count)], [7, 7, 7], 'nothing written past count');
    }
  });
}

test('reference dequantizeNF4 equals the TypeScript path of Linear4bit (dequantizeNF4Range), nested or not', () => {
  const x = randn([37, 91], 0.1, new Rng(1)).data; // 3367 elements, odd
  for (const compressStatistics of [false, true]) {
    const q = quantizeNF4(x, [37, 91], { compressStatistics });
    for (const [s, e] of [[0, 3367], [91, 182], [5, 1000], [3366, 3367]]) {
      const want = dequantizeNF4Range(q.packed, q.state, s, e, new Float32Array(e - s));
      const b0 = Math.floor(s / 64), b1 = Math.ceil(e / 64);
      const got = new Float32Array(e - s);
      referenceBackend.dequantizeNF4!(q.packed, blockScales(q.state, b0, b1, new Float32Array(b1 - b0)), 64, q.state.code, s, e - s, got);
      assertSameBits(got, want, `nested=${compressStatistics} [${s}, ${e})`);
    }
  }
});

test('reference dequantizeAbsmax gives the scales of a double-quantized state (dequantizeAbsmax of nf4.ts), bit for bit', () => {
  // 300 * 1000 / 64 = 4688 blocks: 19 nested blocks of 256, the last one partial
  const q = quantizeNF4(randn([300, 1000], 0.1, new Rng(5)).data, [300, 1000], { compressStatistics: true });
  const st = q.state, nested = st.nested!, nb = st.absmax.length;
  const got = new Float32Array(nb);
  referenceBackend.dequantizeAbsmax!(st.absmax as Uint8Array, nested.absmax, nested.blocksize, nested.code, nested.offset, nb, got);
  assertSameBits(got, dequantizeAbsmax(st), 'scales');
});

test('native dequantizeNF4 is bit-exact with the reference on odd and unaligned ranges', { skip: SKIP_CPU }, () => {
  if (process.env.PEFT_TS_SIMD) assert.equal(nativeInfo().simd, process.env.PEFT_TS_SIMD, 'the forced kernel table is in use');
  check(cpuBackend(), `cpu ${nativeInfo().simd}`);
});

test('native dequantizeNF4: same bits on 1 and 2 threads', { skip: SKIP_CPU }, () => {
  const prev = getNumThreads();
  try {
    setNumThreads(1);
    check(cpuBackend(), 'cpu 1 thread');
  } finally { setNumThreads(prev); }
});

test('native dequantizeNF4 with the AVX2 kernels (PEFT_TS_SIMD=avx2, fresh process)', { skip: SKIP_CPU }, () => {
  const self = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, ['--test', '--test-name-pattern=bit-exact with the reference', self],
    { env: { ...process.env, PEFT_TS_SIMD: 'avx2', NODE_TEST_CONTEXT: undefined }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /# pass 1\b/);
});

test('native dequantizeNF4 refuses buffers too short for the range', { skip: SKIP_CPU }, () => {
  const be = cpuBackend();
  const { packed, absmax } = randomCase(256, 64, 1);
  const out = new Float32Array(256);
  const code = NF4_CODE as Float32Array;
  assert.throws(() => be.dequantizeNF4!(packed.subarray(0, 100), absmax, 64, code, 0, 256, out), /packed has 100 elements, needs 128/);
  assert.throws(() => be.dequantizeNF4!(packed, absmax.subarray(0, 3), 64, code, 0, 256, out), /absmax has 3 elements, needs 4/);
  assert.throws(() => be.dequantizeNF4!(packed, absmax, 64, code, 0, 256, out.subarray(0, 10)), /out has 10 elements/);
  assert.throws(() => be.dequantizeNF4!(packed, absmax, 64, code.subarray(0, 8), 0, 256, out), /code needs 16/);
  assert.throws(() => be.dequantizeNF4!(packed, absmax, 0, code, 0, 256, out), /blocksize/);
});

test('Linear4bit gives the same bits through the backend kernel as through the TypeScript path', { skip: SKIP_CPU }, () => {
  const be = cpuBackend();
  registerBackend('cpu-without-nf4', () => ({ ...be, dequantizeNF4: undefined, name: 'cpu-without-nf4' }));
  const prev = setLinear4bitTileElements(300 * 7); // several tiles, uneven last one, tiles not block-aligned
  try {
    const rng = new Rng(4);
    const w = randn([45, 300], 0.05, rng).data;
    const q = Linear4bit.fromWeight(w, 300, 45, randn([45], 0.1, rng));
    const x = randn([2, 3, 300], 1, rng).setRequiresGrad(true);
    const gy = randn([2, 3, 45], 1, rng);
    const run = (name: string) => withBackend(name, () => {
      assert.equal(typeof getBackend().dequantizeNF4 === 'function', name === 'cpu');
      x.grad = null;
      const y = q.forward(x);
      y.backward(gy);
      return { y: y.data.slice(), gx: x.grad!.data.slice() };
    });
    const a = run('cpu'), b = run('cpu-without-nf4');
    assertSameBits(a.y, b.y, 'forward');
    assertSameBits(a.gx, b.gx, 'input gradient');
  } finally { setLinear4bitTileElements(prev); }
});
