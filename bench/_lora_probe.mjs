import { cpuBackend, setNumThreads, setBf16Gemm } from '../dist/src/backends/index.js';
setNumThreads(Number(process.argv[2] ?? 2));
const be = cpuBackend();
const rnd = (n) => { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = Math.random() - 0.5; return a; };
function time(f, reps) { f(); let best = 1e9; for (let i = 0; i < reps; i++) { const t = performance.now(); f(); best = Math.min(best, performance.now() - t); } return best; }
// [m, n, k, tA, tB] as in the profile: matmulAutocast 1x[m x k]x[k x n]
const shapes = [[256, 16, 8192, false, true], [256, 16, 2048, false, true], [16, 2048, 256, true, false], [16, 8192, 256, true, false], [2048, 16, 256, true, false], [8192, 16, 256, true, false], [256, 8192, 16, false, true], [256, 2048, 16, false, false], [256, 8192, 16, false, false], [256, 2048, 16, false, true]];
for (const [m, n, k, tA, tB] of shapes) {
  const a = rnd(m * k), b = rnd(k * n), c = new Float32Array(m * n);
  const r = [];
  for (const mode of ['auto', 'fallback']) { setBf16Gemm(mode); r.push(time(() => be.matmulAutocast(a, b, c, 1, m, n, k, tA, tB, 0, 0, 1, 0), 30)); }
  const f32 = time(() => be.matmul(a, b, c, 1, m, n, k, tA, tB, 0, 0, 1, 0), 30);
  console.log(`[${m}x${k}]x[${k}x${n}]${tA ? ' tA' : ''}${tB ? ' tB' : ''}\tonednn ${r[0].toFixed(3)}\tfallback ${r[1].toFixed(3)}\tsgemm-only ${f32.toFixed(3)} ms`);
}
