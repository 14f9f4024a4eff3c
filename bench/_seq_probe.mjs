import { cpuBackend, setNumThreads } from '../dist/src/backends/index.js';
setNumThreads(Number(process.argv[2] ?? 2));
const be = cpuBackend();
const rnd = (n) => { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = Math.random() - 0.5; return a; };
const bits = (n) => { const a = new Uint16Array(n); for (let i = 0; i < n; i++) a[i] = 0x3c00 + (i % 97); return a; };
const W = bits(2048 * 8192), x = rnd(256 * 8192), y = new Float32Array(256 * 2048), xd = new Float32Array(256 * 8192), A = rnd(16 * 8192), h = new Float32Array(256 * 16);
const t = { big: 1e9, drop: 1e9, lora: 1e9 };
for (let r = 0; r < 15; r++) {
  let t0 = performance.now(); be.matmulBf16(x, W, y, 256, 2048, 8192, true, 1, 0, true); t.big = Math.min(t.big, performance.now() - t0);
  t0 = performance.now(); be.dropoutApply(x, xd, 0.05, r); t.drop = Math.min(t.drop, performance.now() - t0);
  t0 = performance.now(); be.matmulAutocast(xd, A, h, 1, 256, 16, 8192, false, true, 0, 0, 1, 0); t.lora = Math.min(t.lora, performance.now() - t0);
}
console.log(JSON.stringify(t));
const t2 = { lora: 1e9 };
for (let r = 0; r < 15; r++) { const t0 = performance.now(); be.matmulAutocast(xd, A, h, 1, 256, 16, 8192, false, true, 0, 0, 1, 0); t2.lora = Math.min(t2.lora, performance.now() - t0); }
console.log('isolated', JSON.stringify(t2));
