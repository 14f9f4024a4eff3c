// temp probe: GFLOP/s of llama1b GEMM shapes, oneDNN vs fallback, threads from argv
import { cpuBackend, setNumThreads, setBf16Gemm, nativeInfo } from '../dist/src/backends/index.js';
const th = Number(process.argv[2] ?? 1); setNumThreads(th);
const be = cpuBackend();
const rnd = (n) => { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = Math.random() - 0.5; return a; };
const bits = (n) => { const a = new Uint16Array(n); for (let i = 0; i < n; i++) a[i] = 0x3c00 + (i % 97); return a; };
function time(f, reps) { f(); let best = 1e9; for (let i = 0; i < reps; i++) { const t = performance.now(); f(); best = Math.min(best, performance.now() - t); } return best; }
const shapes = [
  // [label, kind, m, n, k, tA, tB]
  ['down fwd bf16W', 'w', 256, 2048, 8192, false, true],
  ['gate fwd bf16W', 'w', 256, 8192, 2048, false, true],
  ['gate dX bf16W', 'w', 256, 2048, 8192, false, false],
  ['q fwd bf16W', 'w', 256, 2048, 2048, false, true],
  ['lm fwd bf16W', 'w', 128, 128256, 2048, false, true],
  ['lm dX bf16W', 'w', 128, 2048, 128256, false, false],
  ['loraA gW tA', 'a', 16, 2048, 256, true, false],
  ['loraA fwd', 'a', 256, 16, 2048, false, true],
  ['loraB fwd', 'a', 256, 8192, 16, false, true],
  ['attn', 'a', 256, 64, 256, false, false],
];
for (const mode of ['auto', 'fallback']) {
  setBf16Gemm(mode);
  for (const [label, kind, m, n, k, tA, tB] of shapes) {
    const a = rnd(m * k), c = new Float32Array(m * n);
    let f;
    if (kind === 'w') { const w = bits(n * k); f = () => be.matmulBf16(a, w, c, m, n, k, tB, 1, 0, true); }
    else { const b = rnd(n * k); f = () => be.matmulAutocast(a, b, c, 1, m, n, k, tA, tB, 0, 0, 1, 0); }
    const ms = time(f, m * n * k > 1e9 ? 3 : 20);
    console.log(`${mode}\t${label}\t${m}x${n}x${k}\t${ms.toFixed(2)} ms\t${(2 * m * n * k / ms / 1e6).toFixed(0)} GFLOP/s`);
  }
}
console.log(JSON.stringify(nativeInfo()));
