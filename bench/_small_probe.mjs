import { cpuBackend, setNumThreads } from '../dist/src/backends/index.js';
const th = Number(process.argv[2] ?? 1); setNumThreads(th);
const be = cpuBackend();
const rnd = (n) => { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = Math.random() - 0.5; return a; };
const bits = (n) => { const a = new Uint16Array(n); for (let i = 0; i < n; i++) a[i] = 0x3c00 + (i % 97); return a; };
function time(f, reps) { f(); let best = 1e9; for (let i = 0; i < reps; i++) { const t = performance.now(); f(); best = Math.min(best, performance.now() - t); } return best; }
const shapes = [[1, 50257, 768, true], [8, 50257, 768, true], [8, 3072, 768, false], [8, 768, 3072, false], [1, 3072, 768, false], [256, 3072, 768, false], [256, 2304, 768, false]];
for (const [m, n, k, tB] of shapes) {
  const a = rnd(m * k), c = new Float32Array(m * n), w = bits(n * k), wf = rnd(n * k);
  const t16 = time(() => be.matmulBf16(a, w, c, m, n, k, tB, 1, 0, false), 10);
  const t32 = time(() => be.matmul(a, wf, c, 1, m, n, k, false, tB, 0, 0, 1, 0), 10);
  const fl = 2 * m * n * k / 1e6;
  console.log(`m=${m} n=${n} k=${k} ${tB ? 'tB' : '  '}  bf16W ${t16.toFixed(3)} ms ${(fl / t16).toFixed(0)} GF/s ${(n * k * 2 / t16 / 1e6).toFixed(1)} GB/s | f32W ${t32.toFixed(3)} ms ${(fl / t32).toFixed(0)} GF/s`);
}
