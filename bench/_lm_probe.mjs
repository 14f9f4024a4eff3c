import { cpuBackend, setNumThreads } from '../dist/src/backends/index.js';
setNumThreads(Number(process.argv[2] ?? 2));
const be = cpuBackend();
const rnd = (n) => { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = Math.random() - 0.5; return a; };
const bits = (n) => { const a = new Uint16Array(n); for (let i = 0; i < n; i++) a[i] = 0x3c00 + (i % 97); return a; };
function time(f, reps) { f(); let best = 1e9; for (let i = 0; i < reps; i++) { const t = performance.now(); f(); best = Math.min(best, performance.now() - t); } return best; }
const V = 128256, H = 2048, w = bits(V * H);
for (const m of [128, 256]) {
  const h = rnd(m * H), lg = new Float32Array(m * V), gh = new Float32Array(m * H);
  const f = time(() => be.matmulBf16(h, w, lg, m, V, H, true, 1, 0, true), 3);
  const d = time(() => be.matmulBf16(lg, w, gh, m, H, V, false, 1, 0, true), 3);
  const fl = 2 * m * V * H / 1e6;
  console.log(`m=${m} fwd ${f.toFixed(1)} ms ${(fl / f).toFixed(0)} GF/s   dX ${d.toFixed(1)} ms ${(fl / d).toFixed(0)} GF/s  per 256 rows: ${((f + d) * 256 / m).toFixed(0)} ms`);
}
