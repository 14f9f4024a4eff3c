// The native thread pool (native/src/pool.cc: workers spin briefly, then block): thousands of
// back-to-back parallel calls of every size, with 2 to 4 threads on whatever cores the machine
// has, give exactly the single-thread result (a worker reading a stale or half-published job
// would not); and calls from several Node worker threads at once (the pool runs one job at a
// time, the others inline) give the same bits on every repeat, while the main thread, beside
// them, gets the one-thread result and changes the thread count under them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { SKIP_CPU } from './helpers/backends.js';
import { assertSameBits } from './helpers/compare.js';
import { cpuBackend, getNumThreads, setNumThreads } from '../src/backends/index.js';
import { Rng } from '../src/tensor/index.js';

const rng = new Rng(5);
const rnd = (n: number) => Float32Array.from({ length: n }, () => rng.next() * 4 - 2);
const SIZES = [1, 100, 4095, 4096, 8193, 16384, 32769, 65536, 131071, 200_000];

/** gelu then add, on a sequence of sizes; the outputs concatenated. */
function run(xs: Float32Array[]): Float32Array[] {
  const C = cpuBackend();
  return xs.map((x) => {
    const g = new Float32Array(x.length), y = new Float32Array(x.length);
    C.unary('gelu', x, g);
    C.binary('add', g, [1], x, [1], y, [x.length]);
    return y;
  });
}

function sameBits(a: Float32Array[], b: Float32Array[], what: string): void {
  a.forEach((x, i) => assertSameBits(x, b[i], `${what}: call ${i}`));
}

test('pool: back-to-back parallel calls of every size give the one-thread result, 2 to 4 threads', { skip: SKIP_CPU }, () => {
  const prev = getNumThreads();
  try {
    const xs = Array.from({ length: 300 }, (_, i) => rnd(SIZES[i % SIZES.length]));
    setNumThreads(1);
    const want = run(xs);
    for (const t of [2, 3, 4]) {
      setNumThreads(t);
      for (let rep = 0; rep < 3; rep++) sameBits(run(xs), want, `${t} threads, pass ${rep}`);
    }
  } finally { setNumThreads(prev); }
});

test('pool: calls from several Node worker threads at once: the same bits every repeat, the main thread the one-thread result', { skip: SKIP_CPU }, async () => {
  const prev = getNumThreads();
  const self = fileURLToPath(new URL('./helpers/pool_worker.js', import.meta.url));
  try {
    setNumThreads(2);
    const jobs = [1, 2, 3].map((seed) => new Promise<string>((resolve, reject) => {
      const w = new Worker(self, { workerData: { seed } });
      w.once('message', resolve);
      w.once('error', reject);
    }));
    // the main thread keeps the pool busy meanwhile
    const xs = Array.from({ length: 100 }, (_, i) => rnd(SIZES[i % SIZES.length]));
    const a = run(xs);
    setNumThreads(1);
    sameBits(a, run(xs), 'main thread beside workers');
    setNumThreads(2);
    for (const r of await Promise.all(jobs)) assert.equal(r, 'ok');
  } finally { setNumThreads(prev); }
});
