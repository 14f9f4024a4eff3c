// Child process of test/autocast.test.ts: runs the cpu backend's autocast GEMM under the
// environment the parent chose (DNNL_MAX_CPU_ISA caps oneDNN's ISA when the library loads,
// so each bf16 kernel family needs its own process), compares a few shapes with the
// reference emulation and prints one JSON line: { path, worst } (worst closeness ratio,
// <= 1 passes) and whyNot, or { path, error }.
import { cpuBackend, nativeInfo, referenceBackend as R } from '../../src/backends/index.js';
import { closeness, maxAbs } from './compare.js';

const C = cpuBackend();
let worst = 0;
let s = 12345;
const rnd = (n: number) => Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1);
try {
  for (const [batch, m, n, k] of [[1, 37, 45, 70], [1, 1, 64, 33], [3, 16, 24, 40], [1, 64, 96, 512]]) {
    for (const tA of [false, true]) {
      for (const tB of [false, true]) {
        const a = rnd(batch * m * k), b = rnd(batch * k * n), c1 = rnd(batch * m * n), c2 = c1.slice();
        C.matmulAutocast!(a, b, c1, batch, m, n, k, tA, tB, m * k, k * n, 1, 0.5);
        R.matmulAutocast!(a, b, c2, batch, m, n, k, tA, tB, m * k, k * n, 1, 0.5);
        worst = Math.max(worst, closeness(c1, c2, 1e-4, 2e-6 * Math.sqrt(k) * maxAbs(c2)).ratio);
      }
    }
  }
  process.stdout.write(JSON.stringify({ path: nativeInfo().bf16, whyNot: nativeInfo().bf16Why, worst }) + '\n');
} catch (e) {
  process.stdout.write(JSON.stringify({ path: nativeInfo().bf16, error: (e as Error).message }) + '\n');
}
