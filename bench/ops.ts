// CPU ops benchmark: (a) the matmul op vs raw cblas_sgemm, (b) a GPT-2-small transformer
// block forward+backward with time inside GEMM, inside other kernels and in the framework,
// (c) GB/s of elementwise/norm kernels against a copy. Prints tables, writes JSON
// (bench/results/ops-<date>.json, or --out PATH).
// With --bf16: (a) adds autocast's bf16 GEMMs beside sgemm on GPT-2 training shapes and (b)
// runs the block under autocast('bfloat16').
//   node dist/bench/ops.js [--out file.json] [--quick] [--bf16]
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { cpus } from 'node:os';
import { cpuBackend, nativeInfo } from '../src/backends/index.js';
import { loadNative } from '../src/backends/cpu/native.js';
import * as T from '../src/tensor/index.js';
import { Rng, Tensor, registerBackend, setBackend, tidy } from '../src/tensor/index.js';
import { LayerNorm, Linear } from '../src/nn/layers.js';
import { timedBackend } from './profile.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const bf16 = args.includes('--bf16');
const GEMMS = new Set(['matmul', 'matmulAutocast', 'matmulBf16']);
const outArg = args.indexOf('--out');
const outPath = outArg >= 0 ? args[outArg + 1] : `bench/results/ops-${new Date().toISOString().slice(0, 10)}.json`;

function median(xs: number[]): number { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; }
function timeIt(fn: () => void, reps: number, warm = 1): number {
  for (let i = 0; i < warm; i++) fn();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) { const t0 = performance.now(); fn(); ts.push(performance.now() - t0); }
  return median(ts);
}
function rnd(n: number, rng: Rng): Float32Array { const d = new Float32Array(n); for (let i = 0; i < n; i++) d[i] = rng.normal(); return d; }

const rng = new Rng(1);
const native = loadNative();
const base = cpuBackend();
setBackend('cpu');
const info = nativeInfo();
const threads = info.threads;

// ---------- (a) matmul ----------
const [M, K, N] = [4096, 768, 3072];
const a = T.tensor(rnd(M * K, rng), [M, K]), b = T.tensor(rnd(K * N, rng), [K, N]);
const c = new Float32Array(M * N);
const flops = 2 * M * N * K;
const reps = quick ? 3 : 7;
const rawMs = timeIt(() => native.sgemmRaw(false, false, M, N, K, 1, a.data, K, b.data, N, 0, c, N), reps);
const opMs = timeIt(() => tidy(() => { T.matmul(a, b); }), reps);
const matmulRes = {
  shape: `[${M}x${K}] x [${K}x${N}]`, threads,
  rawSgemm: { ms: rawMs, gflops: flops / rawMs / 1e6 },
  matmulOp: { ms: opMs, gflops: flops / opMs / 1e6 },
  ratio: rawMs / opMs,
};
console.log(`\n(a) matmul ${matmulRes.shape} fp32, ${threads} threads (${info.simd}, ${info.blas})`);
console.log('  variant          ms      GFLOP/s');
console.log(`  cblas_sgemm  ${rawMs.toFixed(1).padStart(8)} ${matmulRes.rawSgemm.gflops.toFixed(1).padStart(10)}`);
console.log(`  matmul op    ${opMs.toFixed(1).padStart(8)} ${matmulRes.matmulOp.gflops.toFixed(1).padStart(10)}   (${(100 * matmulRes.ratio).toFixed(1)}% of raw)`);

// ---------- (a2) bf16 GEMMs (autocast) against sgemm ----------
// GPT-2 training products at B4 x T256 (1024 rows): forward, weight gradient (A^T B), input
// gradient (A B^T), MLP, attention per head, and a bf16 weight with the activation rounded.
// Interleaved, min of the repetitions: the machine may be shared.
type GemmCase = [string, number, number, number, boolean, boolean, number];
const bf16Res: Record<string, unknown>[] = [];
if (bf16 && base.matmulAutocast) {
  const cases: GemmCase[] = [
    ['c_attn fwd', 1024, 2304, 768, false, false, 1], ['c_attn dW', 768, 2304, 1024, true, false, 1],
    ['c_attn dX', 1024, 768, 2304, false, true, 1], ['mlp c_fc fwd', 1024, 3072, 768, false, false, 1],
    ['mlp c_proj fwd', 1024, 768, 3072, false, false, 1], ['attn q k^T (48 heads)', 256, 256, 64, false, true, 48],
    ['lm head chunk', 333, 50257, 768, false, true, 1],
  ];
  console.log(`\n(a2) autocast bf16 GEMMs (${info.bf16}) vs sgemm, ${threads} threads, min of ${reps}`);
  console.log('  product                      m x n x k        sgemm GF/s   bf16 GF/s   bf16-W GF/s  speedup');
  for (const [name, m, n, k, tA, tB, batch] of cases) {
    const A = rnd(batch * m * k, rng), Bm = rnd(batch * k * n, rng), Cm = new Float32Array(batch * m * n);
    const W16 = new Uint16Array(k * n);
    base.f32ToBf16(Bm.subarray(0, k * n), W16);
    const f = 2 * m * n * k * batch;
    const t = { sgemm: Infinity, bf16: Infinity, w16: Infinity };
    for (let r = 0; r < reps + 1; r++) {
      const t0 = performance.now();
      base.matmul(A, Bm, Cm, batch, m, n, k, tA, tB, m * k, k * n, 1, 0);
      const t1 = performance.now();
      base.matmulAutocast(A, Bm, Cm, batch, m, n, k, tA, tB, m * k, k * n, 1, 0);
      const t2 = performance.now();
      if (batch === 1 && !tA) base.matmulBf16!(A, W16, Cm, m, n, k, tB, 1, 0, true);
      const t3 = performance.now();
      if (r === 0) continue;
      t.sgemm = Math.min(t.sgemm, t1 - t0); t.bf16 = Math.min(t.bf16, t2 - t1); t.w16 = Math.min(t.w16, t3 - t2);
    }
    const g = (ms: number) => f / ms / 1e6;
    const w16 = batch === 1 && !tA ? g(t.w16) : NaN;
    console.log(`  ${name.padEnd(24)} ${`${batch > 1 ? batch + 'x' : ''}${m}x${n}x${k}${tA ? ' tA' : ''}${tB ? ' tB' : ''}`.padEnd(20)} ${g(t.sgemm).toFixed(0).padStart(9)} ${g(t.bf16).toFixed(0).padStart(11)} ${(Number.isNaN(w16) ? '-' : w16.toFixed(0)).padStart(12)} ${(t.sgemm / t.bf16).toFixed(2).padStart(7)}x`);
    bf16Res.push({ name, batch, m, n, k, tA, tB, sgemmGflops: g(t.sgemm), bf16Gflops: g(t.bf16), bf16WeightGflops: w16 });
  }
}

// ---------- (b) transformer block ----------
// Every backend call is timed by name: GEMM time, other-kernel time, and what is left is
// the framework (graph, allocation, JS glue).
const kernelMs = new Map<string, number>();
const timed = { ...timedBackend(base, (k, _xs, ms) => kernelMs.set(k, (kernelMs.get(k) ?? 0) + ms)), name: 'cpu' };
registerBackend('cpu-timed', () => timed);

const [B, Tn, C, H] = [4, 256, 768, 12];
const D = C / H;
class Block {
  ln1 = new LayerNorm(C); ln2 = new LayerNorm(C);
  qkv = new Linear(C, 3 * C, true, rng); proj = new Linear(C, C, true, rng);
  fc = new Linear(C, 4 * C, true, rng); fcProj = new Linear(4 * C, C, true, rng);
  forward(x: Tensor): Tensor {
    const heads = (t: Tensor) => T.permute(T.reshape(t, [B, Tn, H, D]), [0, 2, 1, 3]);
    const [q, k, v] = T.split(this.qkv.forward(this.ln1.forward(x)), [C, C, C], -1).map(heads);
    const att = T.scaledDotProductAttention(q, k, v, { causal: true });
    const merged = T.reshape(T.permute(att, [0, 2, 1, 3]), [B, Tn, C]);
    const h = T.add(x, this.proj.forward(merged));
    const m = this.fcProj.forward(T.gelu(this.fc.forward(this.ln2.forward(h)), 'tanh'));
    return T.add(h, m);
  }
  params(): Tensor[] { return [this.ln1, this.ln2, this.qkv, this.proj, this.fc, this.fcProj].flatMap((l) => l.parameters()); }
}
const block = new Block();
const x = T.tensor(rnd(B * Tn * C, rng), [B, Tn, C]);
const gOut = T.tensor(rnd(B * Tn * C, rng), [B, Tn, C]);
const step = () => tidy(() => {
  const y = T.autocast(bf16 ? 'bfloat16' : null, () => block.forward(x));
  y.backward(gOut);
  for (const p of block.params()) { p.grad?.dispose(); p.grad = null; }
});
step(); step();
const blockReps = quick ? 3 : 7;
const totalMs = timeIt(step, blockReps, 0);
setBackend('cpu-timed');
kernelMs.clear();
const instReps = quick ? 2 : 5;
let instTotal = 0;
for (let i = 0; i < instReps; i++) { const t0 = performance.now(); step(); instTotal += performance.now() - t0; }
setBackend('cpu');
const per = (ms: number) => ms / instReps;
const gemmMs = per([...kernelMs.entries()].filter(([k]) => GEMMS.has(k)).reduce((s, [, v]) => s + v, 0));
const kernelTotal = per([...kernelMs.values()].reduce((s, v) => s + v, 0));
const instMs = per(instTotal);
const otherKernels = [...kernelMs.entries()].filter(([k]) => !GEMMS.has(k)).map(([k, v]) => ({ kernel: k, ms: per(v) }))
  .sort((p, q) => q.ms - p.ms);
const blockFlops = 3 * 2 * B * Tn * (C * 3 * C + C * C + 2 * C * 4 * C) + 3 * 2 * 2 * B * H * Tn * Tn * D;
const blockRes = {
  config: { B, T: Tn, d: C, heads: H, mlp: 4 * C, activation: 'gelu_tanh', attention: 'causal', autocast: bf16 ? 'bfloat16' : null },
  totalMs, instrumentedMs: instMs, gemmMs, nonGemmKernelMs: kernelTotal - gemmMs, frameworkMs: instMs - kernelTotal,
  gemmShare: gemmMs / instMs, outsideGemmShare: 1 - gemmMs / instMs, frameworkShare: (instMs - kernelTotal) / instMs,
  gemmGflops: blockFlops / gemmMs / 1e6, otherKernels,
};
const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
console.log(`\n(b) GPT-2-small block fwd+bwd, B=${B} T=${Tn} d=${C} h=${H}${bf16 ? ', autocast bf16' : ''}: ${totalMs.toFixed(1)} ms/step`);
console.log(`  inside GEMM       ${gemmMs.toFixed(1).padStart(8)} ms  ${pct(blockRes.gemmShare)}  (${blockRes.gemmGflops.toFixed(1)} GFLOP/s)`);
console.log(`  other kernels     ${blockRes.nonGemmKernelMs.toFixed(1).padStart(8)} ms  ${pct(blockRes.nonGemmKernelMs / instMs)}`);
console.log(`  framework         ${blockRes.frameworkMs.toFixed(1).padStart(8)} ms  ${pct(blockRes.frameworkShare)}`);
for (const k of otherKernels.slice(0, 10)) console.log(`    ${k.kernel.padEnd(20)} ${k.ms.toFixed(2).padStart(8)} ms`);

// ---------- (c) kernel bandwidth ----------
const R = 4096, Cc = 768, n = R * Cc;
const xa = rnd(n, rng), xb = rnd(n, rng), out = new Float32Array(n), bias = rnd(Cc, rng), w = rnd(Cc, rng);
const mean = new Float32Array(R), rstd = new Float32Array(R), gw = new Float32Array(Cc), gb = new Float32Array(Cc);
const m = new Float32Array(n), v = new Float32Array(n);
const one = [Cc, 1], zeroRow = [0, 1];
const kreps = quick ? 5 : 15;
const bytes = 4 * n;
const kernels: [string, number, () => void][] = [
  ['copy (TypedArray.set)', 2 * bytes, () => out.set(xa)],
  ['affine (copy-like)', 2 * bytes, () => base.affine(xa, 1, 0, out)],
  ['add same shape', 3 * bytes, () => base.binary('add', xa, one, xb, one, out, [R, Cc])],
  ['add bias row', 2 * bytes, () => base.binary('add', xa, one, bias, zeroRow, out, [R, Cc])],
  ['axpy', 3 * bytes, () => base.axpy(0.5, xa, out)],
  ['gelu_tanh', 2 * bytes, () => base.unary('gelu_tanh', xa, out)],
  ['gelu (erf)', 2 * bytes, () => base.unary('gelu', xa, out)],
  ['gelu_tanh backward', 3 * bytes, () => base.unaryBackward('gelu_tanh', xa, xb, out)],
  ['softmax', 2 * bytes, () => base.softmax(xa, R, Cc, out)],
  ['softmax backward', 3 * bytes, () => base.softmaxBackward(xa, xb, R, Cc, out)],
  ['layerNorm', 2 * bytes, () => base.layerNorm(xa, w, bias, R, Cc, 1e-5, out, mean, rstd)],
  ['layerNorm backward', 3 * bytes, () => base.layerNormBackward(xa, w, mean, rstd, xb, R, Cc, out, gw, gb)],
  ['permute BTHD->BHTD', 2 * bytes, () => base.permute(xa, [4, 1024, 12, 64], [0, 2, 1, 3], out)],
  ['sumMid (bias grad)', bytes, () => base.sumMid(xa, 1, R, Cc, gw)],
  ['adamw', 7 * bytes, () => base.adamw(out, xb, m, v, 1e-4, 0.9, 0.999, 1e-8, 0.01, 1)],
];
console.log(`\n(c) kernels on [${R}x${Cc}] fp32 (${(bytes / 2 ** 20).toFixed(0)} MiB per operand), ${threads} threads`);
console.log('  kernel                      ms      GB/s');
const kernelRes = kernels.map(([name, moved, fn]) => {
  const ms = timeIt(fn, kreps, 2);
  const gbs = moved / ms / 1e6;
  console.log(`  ${name.padEnd(24)} ${ms.toFixed(2).padStart(7)} ${gbs.toFixed(1).padStart(9)}`);
  return { kernel: name, ms, bytes: moved, gbps: gbs };
});

const result = {
  date: new Date().toISOString(), machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, ...info },
  node: process.version, matmul: matmulRes, bf16Gemms: bf16Res, block: blockRes, kernels: kernelRes,
};
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, JSON.stringify(result, null, 2));
console.log(`\nwrote ${outPath}`);
