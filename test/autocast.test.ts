// Mixed precision (autocast bfloat16): the reference emulation is exactly "round both GEMM
// operands to bf16, then the float32 GEMM"; the cpu kernels (oneDNN's bf16 matmul, or the
// float32 fallback) match it up to the order of float32 sums, for every transposition,
// broadcast batch, odd shapes and m = 1; ops (linear, matmul, attention products, the fused
// lm-head loss, frozen bf16 weights) forward and backward under autocast agree with the
// emulation; the scope restores the previous setting; a Trainer step with bf16: true trains.
// Paths this machine cannot run (no oneDNN, no AMX) are skipped with the reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { referenceBackend as R, cpuBackend, nativeInfo, setBf16Gemm } from '../src/backends/index.js';
import {
  Rng, Tensor, autocast, autocastAsync, autocastDtype, getBackend, linear, linearCrossEntropy, crossEntropy, matmul, mul, sum, tensor, tidy,
  toBfloat16, withBackend, softmax, noGrad, registerBackend,
} from '../src/tensor/index.js';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { LoraConfig, getPeftModel } from '../src/peft/index.js';
import { Trainer } from '../src/train/trainer.js';
import { TrainingArguments } from '../src/train/args.js';
import { f32ToBf16, bf16ToF32 } from '../src/io/half.js';
import { gradcheck, randParam } from './helpers/gradcheck.js';
import { assertClose, closeness, maxAbs } from './helpers/compare.js';
import { SKIP_CPU, hasCpu } from './helpers/backends.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const rng = new Rng(21);
const rnd = (n: number, s = 1) => Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * s);
/** x rounded to bf16 values (nearest even), as float32. */
const round = (x: Float32Array) => { const u = new Uint16Array(x.length), f = new Float32Array(x.length); f32ToBf16(x, u); bf16ToF32(u, f); return f; };
/** Tolerance for the same bf16 operands summed in another float32 order. */
const tol = (k: number, ref: Float32Array) => ({ rtol: 1e-4, atol: 2e-6 * Math.sqrt(k) * maxAbs(ref) });
const bf16Path = hasCpu ? nativeInfo().bf16 : 'none';
const onednn = bf16Path.startsWith('onednn:');
const SKIP_ONEDNN = !hasCpu ? 'native addon not built' : onednn ? false
  : `oneDNN bf16 path not exercised here: ${nativeInfo().bf16Why}`;

// ---------- kernels ----------

// [batch, m, n, k, a broadcast, b broadcast]
const SHAPES: [number, number, number, number, boolean, boolean][] = [
  [1, 17, 23, 31, false, false], [1, 1, 50, 64, false, false], [1, 64, 1, 40, false, false], [1, 33, 70, 1, false, false],
  [3, 5, 7, 9, false, false], [4, 6, 11, 13, true, false], [4, 6, 11, 13, false, true], [1, 96, 130, 260, false, false],
];

test('reference matmulAutocast is matmul on operands rounded to bf16 (nearest even), bit for bit', () => {
  for (const [batch, m, n, k, bA, bB] of SHAPES) {
    for (const tA of [false, true]) for (const tB of [false, true]) {
      const sA = bA ? 0 : m * k, sB = bB ? 0 : k * n;
      const a = rnd((bA ? 1 : batch) * m * k), b = rnd((bB ? 1 : batch) * k * n);
      const c1 = rnd(batch * m * n), c2 = c1.slice();
      R.matmulAutocast!(a, b, c1, batch, m, n, k, tA, tB, sA, sB, 0.5, 0.25);
      R.matmul(round(a), round(b), c2, batch, m, n, k, tA, tB, sA, sB, 0.5, 0.25);
      assert.deepEqual(c1, c2);
    }
  }
  // round-to-nearest-even at a tie, and NaN stays NaN
  const x = new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8, NaN]);
  assert.deepEqual(Array.from(round(x)), [1, 1 + 2 ** -6, NaN]);
});

function checkCpuKernel(label: string): void {
  const C = cpuBackend();
  for (const [batch, m, n, k, bA, bB] of SHAPES) {
    for (const tA of [false, true]) for (const tB of [false, true]) for (const [alpha, beta] of [[1, 0], [0.5, 0.25]]) {
      const sA = bA ? 0 : m * k, sB = bB ? 0 : k * n;
      const a = rnd((bA ? 1 : batch) * m * k), b = rnd((bB ? 1 : batch) * k * n);
      const c1 = rnd(batch * m * n), c2 = c1.slice(), c3 = c1.slice();
      C.matmulAutocast!(a, b, c1, batch, m, n, k, tA, tB, sA, sB, alpha, beta);
      R.matmulAutocast!(a, b, c2, batch, m, n, k, tA, tB, sA, sB, alpha, beta);
      const what = `${label} ${batch}x${m}x${n}x${k} tA=${tA} tB=${tB} bcast=${bA}/${bB} alpha=${alpha} beta=${beta}`;
      assertClose(c1, c2, { ...tol(k, c2), msg: what });
      // The operands really were rounded: the float32 GEMM is off by far more than the tolerance.
      if (k >= 31) {
        R.matmul(a, b, c3, batch, m, n, k, tA, tB, sA, sB, alpha, beta);
        const t = tol(k, c2);
        assert.ok(closeness(c3, c2, t.rtol, t.atol).ratio > 4, `${what}: float32 GEMM indistinguishable from the bf16 one`);
      }
    }
  }
  // bf16 weights with the activation rounded (autocast over a frozen bf16 W)
  for (const [m, n, k] of [[1, 40, 33], [9, 31, 70], [64, 100, 200]]) for (const tB of [true, false]) {
    const a = rnd(m * k), w = new Uint16Array(n * k);
    f32ToBf16(rnd(n * k), w);
    const c1 = rnd(m * n), c2 = c1.slice();
    C.matmulBf16!(a, w, c1, m, n, k, tB, 1, 0.5, true);
    R.matmulBf16!(a, w, c2, m, n, k, tB, 1, 0.5, true);
    assertClose(c1, c2, { ...tol(k, c2), msg: `${label} matmulBf16 roundA ${m}x${n}x${k} tB=${tB}` });
  }
  // k = 0: C = beta * C
  const c = new Float32Array([1, 2, 3, 4]);
  C.matmulAutocast!(new Float32Array(0), new Float32Array(0), c, 1, 2, 2, 0, false, false, 0, 0, 1, 0.5);
  assert.deepEqual(Array.from(c), [0.5, 1, 1.5, 2]);
}

test(`cpu matmulAutocast on oneDNN (${bf16Path}) matches the reference emulation`, { skip: SKIP_ONEDNN }, () => {
  setBf16Gemm('auto');
  checkCpuKernel(bf16Path);
});

test('cpu matmulAutocast on the float32 fallback matches the reference emulation', { skip: SKIP_CPU }, () => {
  const prev = nativeInfo().bf16;
  assert.equal(setBf16Gemm('fallback'), 'fp32-fallback');
  assert.match(nativeInfo().bf16Why, /forced/);
  try { checkCpuKernel('fp32-fallback'); } finally { setBf16Gemm('auto'); }
  assert.equal(nativeInfo().bf16, prev);
  assert.throws(() => setBf16Gemm('amx' as never), /'auto' or 'fallback'/);
});

// Each oneDNN kernel family in its own process (oneDNN reads DNNL_MAX_CPU_ISA once, at load).
const child = path.join(here, 'helpers', 'bf16_path_check.js');
for (const [isa, want] of [['AVX512_CORE_BF16', 'avx512_core_bf16'], ['AVX512_CORE_AMX', 'amx']] as const) {
  test(`oneDNN ${want} kernels (DNNL_MAX_CPU_ISA=${isa}) match the reference emulation`, { skip: SKIP_ONEDNN }, (t) => {
    const r = spawnSync(process.execPath, [child], { env: { ...process.env, DNNL_MAX_CPU_ISA: isa, PEFT_TS_BACKEND: 'cpu' }, encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { path: string; worst?: number; error?: string };
    assert.equal(out.error, undefined);
    if (!out.path.includes(want)) { t.skip(`CPU cannot run the ${want} kernels: oneDNN picked ${out.path}`); return; }
    assert.ok(out.worst! <= 1, `${out.path}: ${out.worst}x over tolerance`);
  });
}

const SKIP_SMALL = !hasCpu ? 'native addon not built' : nativeInfo().simd === 'avx512' ? false
  : `small-m kernels need AVX-512 (simd ${nativeInfo().simd}): m <= 8 autocast GEMMs go to oneDNN / the fallback here`;

/** Bit-for-bit equality, NaN matching NaN. */
function sameBits(x: Float32Array, y: Float32Array, msg: string): void {
  assert.equal(x.length, y.length, msg);
  for (let i = 0; i < x.length; i++) {
    if (!(Object.is(x[i], y[i]) || (Number.isNaN(x[i]) && Number.isNaN(y[i])))) assert.fail(`${msg}: [${i}] ${x[i]} vs ${y[i]}`);
  }
}
/** [rows, cols] row-major -> [cols, rows]. */
const transpose = (x: Float32Array, rows: number, cols: number) => Float32Array.from({ length: x.length }, (_, i) => x[(i % rows) * cols + Math.floor(i / rows)]);

test('autocast GEMMs with m <= 8 (decoding): the small-m kernels on rounded operands, bit for bit, and the reference emulation', { skip: SKIP_SMALL }, () => {
  const C = cpuBackend();
  // B holds round-to-nearest-even ties, overflow to inf, inf and NaN: the kernel rounds W as it loads it.
  const special = [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 3.3999999e38, Infinity, -Infinity, NaN];
  for (const [batch, m, n, k, bA, bB] of [[1, 1, 37, 33, false, false], [1, 8, 70, 100, false, false], [6, 3, 19, 17, false, false],
    [12, 1, 40, 64, false, false], [5, 7, 9, 31, true, false], [4, 2, 33, 15, false, true], [1, 5, 1, 1, false, false]] as const) {
    for (const tA of [false, true]) for (const tB of [false, true]) for (const [alpha, beta] of [[1, 0], [0.5, 0.25]]) {
      const sA = bA ? 0 : m * k, sB = bB ? 0 : k * n;
      const a = rnd((bA ? 1 : batch) * m * k), b = rnd((bB ? 1 : batch) * k * n);
      if (batch === 1 && m === 8) special.forEach((v, i) => { b[i * 7 + 3] = v; });
      const c1 = rnd(batch * m * n), c2 = c1.slice(), c3 = c1.slice();
      C.matmulAutocast!(a, b, c1, batch, m, n, k, tA, tB, sA, sB, alpha, beta);
      // The same kernel (float32 matmul's m <= 8 path) on operands rounded beforehand, A untransposed.
      const ra = round(a);
      const aPlain = tA ? Float32Array.from({ length: ra.length }, (_, i) => {
        const item = Math.floor(i / (m * k)), j = i % (m * k);
        return transpose(ra.subarray(item * m * k, (item + 1) * m * k), k, m)[j];
      }) : ra;
      C.matmul(aPlain, round(b), c2, batch, m, n, k, false, tB, sA, sB, alpha, beta);
      const what = `${batch}x${m}x${n}x${k} tA=${tA} tB=${tB} bcast=${bA}/${bB} alpha=${alpha} beta=${beta}`;
      sameBits(c1, c2, what);
      if (batch === 1 && m === 8) continue; // inf - inf: the emulation's sums differ in where NaN appears first
      R.matmulAutocast!(a, b, c3, batch, m, n, k, tA, tB, sA, sB, alpha, beta);
      assertClose(c1, c3, { ...tol(k, c3), msg: what });
    }
  }
  // A frozen bf16 W with the activation rounded: bit for bit the small kernel on round(a).
  for (const [m, n, k] of [[1, 50, 40], [8, 33, 70], [5, 130, 17]]) for (const tB of [true, false]) {
    const a = rnd(m * k), w = new Uint16Array(n * k);
    f32ToBf16(rnd(n * k), w);
    const c1 = rnd(m * n), c2 = c1.slice(), c3 = c1.slice();
    C.matmulBf16!(a, w, c1, m, n, k, tB, 1, 0.5, true);
    C.matmulBf16!(round(a), w, c2, m, n, k, tB, 1, 0.5, false);
    sameBits(c1, c2, `matmulBf16 roundA ${m}x${n}x${k} tB=${tB}`);
    R.matmulBf16!(a, w, c3, m, n, k, tB, 1, 0.5, true);
    assertClose(c1, c3, { ...tol(k, c3), msg: `matmulBf16 roundA ${m}x${n}x${k} tB=${tB} vs reference` });
  }
});

test('without libdnnl at run time the cpu backend takes the fp32 fallback, says why, and gives the same numbers', { skip: SKIP_CPU }, () => {
  const r = spawnSync(process.execPath, [child], { env: { ...process.env, PEFT_TS_DNNL_LIB: 'libdnnl-missing.so.9', PEFT_TS_BACKEND: 'cpu' }, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { path: string; whyNot: string; worst?: number; error?: string };
  assert.equal(out.error, undefined);
  assert.equal(out.path, 'fp32-fallback');
  // on a CPU without bf16 instructions the library is never looked for; else its absence is named
  assert.match(out.whyNot, /libdnnl-missing\.so\.9 not loadable|neither AMX-BF16 nor AVX512-BF16|without oneDNN headers/);
  assert.ok(out.worst! <= 1, `fallback: ${out.worst}x over tolerance`);
});

// ---------- ops under autocast ----------

test('autocast scope: nests, restores after a throw, refuses other dtypes', async () => {
  assert.equal(autocastDtype(), null);
  autocast('bfloat16', () => {
    assert.equal(autocastDtype(), 'bfloat16');
    autocast(null, () => assert.equal(autocastDtype(), null));
    assert.equal(autocastDtype(), 'bfloat16');
  });
  assert.throws(() => autocast('bfloat16', () => { throw new Error('boom'); }), /boom/);
  assert.equal(autocastDtype(), null);
  await autocastAsync('bfloat16', async () => { await Promise.resolve(); assert.equal(autocastDtype(), 'bfloat16'); });
  assert.equal(autocastDtype(), null);
  assert.throws(() => autocast('float16' as never, () => 0), /must be 'bfloat16'/);
});

test('reference: linear under autocast is the float32 linear of bf16-rounded x and W, forward and backward (even when backward runs outside the scope)', () => withBackend('reference', () => tidy(() => {
  const x = tensor(rnd(4 * 3 * 20), [4, 3, 20], { requiresGrad: true }), w = tensor(rnd(7 * 20), [7, 20], { requiresGrad: true });
  const r = rnd(4 * 3 * 7);
  const y = autocast('bfloat16', () => linear(x, w));
  sum(mul(y, tensor(r, [4, 3, 7]))).backward();
  const xr = tensor(round(x.data), [12, 20]), wr = tensor(round(w.data), [7, 20]), gr = tensor(round(r), [12, 7]);
  assert.deepEqual(y.data, matmul(xr, wr, false, true).data);
  assert.deepEqual(x.grad!.data, matmul(gr, wr).data);
  assert.deepEqual(w.grad!.data, matmul(gr, xr, true).data);
  // and off: the plain float32 result
  const y32 = linear(x, w);
  assert.deepEqual(y32.data, matmul(tensor(x.data, [12, 20]), w, false, true).data);
  assert.notDeepEqual(y.data, y32.data);
})));

/** Runs fn on a backend under autocast; returns the output and the gradients of sum(out * r). */
function run(backend: string, inputs: Float32Array[], shapes: number[][], fn: (...t: Tensor[]) => Tensor): Float32Array[] {
  return withBackend(backend, () => tidy(() => {
    const ts = inputs.map((d, i) => tensor(d, shapes[i], { requiresGrad: true }));
    const y = autocast('bfloat16', () => fn(...ts));
    const r = new Rng(5), wts = Float32Array.from({ length: y.size }, () => r.next() * 2 - 1);
    sum(mul(y, tensor(wts, y.shape))).backward();
    return [y.toFloat32Array(), ...ts.map((t) => t.grad!.toFloat32Array())];
  }));
}

const OPS: [string, number[][], (...t: Tensor[]) => Tensor][] = [
  ['linear', [[2, 5, 24], [9, 24]], (x, w) => linear(x, w)],
  ['matmul [in, out] (Conv1D)', [[6, 33], [33, 10]], (x, w) => matmul(x, w)],
  ['batched matmul, shared b', [[3, 4, 5, 16], [16, 6]], (a, b) => matmul(a, b)],
  ['attention products (q k^T, softmax, p v)', [[2, 3, 7, 16], [2, 3, 7, 16], [2, 3, 7, 16]],
    (q, k, v) => matmul(softmax(matmul(q, k, false, true)), v)],
  ['broadcast batch, transA', [[1, 12, 5], [4, 12, 7]], (a, b) => matmul(a, b, true)],
  ['m = 1', [[1, 40], [40, 3]], (a, b) => matmul(a, b)],
];

for (const [name, shapes, fn] of OPS) {
  test(`autocast ${name}: cpu forward and gradients match the reference emulation`, { skip: SKIP_CPU }, () => {
    const inputs = shapes.map((s) => rnd(s.reduce((a, b) => a * b, 1)));
    const ref = run('reference', inputs, shapes, fn);
    const cpu = run('cpu', inputs, shapes, fn);
    const k = Math.max(...shapes.flat());
    ref.forEach((r, i) => assertClose(cpu[i], r, { rtol: 1e-3, atol: 1e-5 * Math.sqrt(k) * maxAbs(r) + 1e-7, msg: `${name} ${i === 0 ? 'output' : `grad ${i - 1}`}` }));
    // and autocast changed the numbers: the plain float32 forward differs
    const plain = withBackend('reference', () => tidy(() => fn(...inputs.map((d, i) => tensor(d, shapes[i]))).toFloat32Array()));
    assert.notDeepEqual(ref[0], plain);
  });
}

test('autocast with a frozen bf16 weight: x rounded, W used as stored; the fused lm-head loss matches the full logits path', () => tidy(() => {
  const be = getBackend().name;
  const x = tensor(rnd(6 * 16), [6, 16], { requiresGrad: true });
  const w32 = rnd(40 * 16), w = toBfloat16(tensor(w32, [40, 16])), wr = tensor(round(w32), [40, 16]);
  const y = autocast('bfloat16', () => linear(x, w));
  const ye = withBackend('reference', () => matmul(tensor(round(x.data), [6, 16]), wr, false, true).toFloat32Array());
  assertClose(y.toFloat32Array(), ye, { ...tol(16, ye), msg: `${be} bf16 weight under autocast` });
  // fused head + loss vs logits + cross-entropy, both under autocast, for a bf16 and a float32 w
  const tg = tensor(new Int32Array([1, 5, -100, 39, 0, 7]), [6]);
  for (const head of [w, tensor(w32, [40, 16])]) {
    x.grad = null;
    const l1 = autocast('bfloat16', () => linearCrossEntropy(x, head, tg, { chunkRows: 4 }));
    l1.backward();
    const g1 = x.grad!.toFloat32Array();
    x.grad = null;
    const l2 = autocast('bfloat16', () => crossEntropy(linear(x, head), tg));
    l2.backward();
    assert.ok(Math.abs(l1.item() - l2.item()) < 1e-5, `${head.dtype}: ${l1.item()} vs ${l2.item()}`);
    assertClose(g1, x.grad!.toFloat32Array(), { rtol: 1e-4, atol: 1e-6, msg: `${head.dtype} head gradient` });
  }
}));

test('a backend without matmulAutocast gets the same numbers from the tensor layer (rounded copies, then matmul)', () => {
  registerBackend('reference-no-autocast', () => ({ ...R, name: 'reference-no-autocast', matmulAutocast: undefined }));
  for (const [name, shapes, fn] of OPS) {
    const inputs = shapes.map((s) => rnd(s.reduce((a, b) => a * b, 1)));
    const a = run('reference', inputs, shapes, fn), b = run('reference-no-autocast', inputs, shapes, fn);
    a.forEach((x, i) => assert.deepEqual(b[i], x, `${name} ${i}`));
  }
});

test('after an autocast scope, float32 gradients pass finite differences again', () => {
  autocast('bfloat16', () => tidy(() => linear(tensor(rnd(8), [2, 4]), tensor(rnd(12), [3, 4]))));
  gradcheck((x, w, b) => linear(x, w, b), [randParam([2, 3, 5], 1), randParam([4, 5], 2), randParam([4], 3)], { name: 'linear fp32' });
});

// ---------- training ----------

test('Trainer with bf16: true trains a LoRA GPT-2 (loss falls), its GEMMs in bf16 (losses differ from float32), and evaluates under autocast', async () => {
  const make = () => {
    const model = AutoModelForCausalLM.fromConfig({ model_type: 'gpt2', vocab_size: 64, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 2 }, { rng: new Rng(3) });
    return getPeftModel(model, new LoraConfig({ taskType: 'CAUSAL_LM', r: 8, loraAlpha: 16, loraDropout: 0, targetModules: ['c_attn', 'c_fc', 'c_proj'], fanInFanOut: true }));
  };
  const r = new Rng(9);
  // Four sequences, every batch the same: the adapter can memorise them.
  const rows = [...Array(4)].map(() => {
    const start = Math.floor(r.next() * 64);
    const ids = [...Array(12)].map((_, i) => (start + i * 5) % 64);
    return { inputIds: ids, attentionMask: ids.map(() => 1), labels: ids };
  });
  const quiet = { write: () => true, isTTY: false };
  const train = async (bf16: boolean) => {
    const model = make();
    const args = new TrainingArguments({
      outputDir: fs.mkdtempSync(path.join(os.tmpdir(), 'autocast-')), perDeviceTrainBatchSize: 4, maxSteps: 16, learningRate: 2e-2,
      saveStrategy: 'no', loggingSteps: 1, plotCurves: false, bf16, reportTo: 'none',
    });
    const t = new Trainer({ model, args, trainDataset: rows, evalDataset: rows.slice(0, 4), progressStream: quiet });
    await t.train();
    const losses = t.state.logHistory.filter((h) => h.loss !== undefined).map((h) => h.loss as number);
    return { losses, evalLoss: (await t.evaluate()).eval_loss as number };
  };
  const b = await train(true), f = await train(false);
  const tail = b.losses.slice(-4).reduce((a, x) => a + x, 0) / 4;
  assert.ok(tail < b.losses[0] - 0.15, `bf16 loss ${b.losses[0]} -> ${tail} (mean of the last 4 steps)`);
  assert.notDeepEqual(b.losses, f.losses);
  // bf16 GEMMs track float32 training closely on this small problem
  b.losses.forEach((l, i) => assert.ok(Math.abs(l - f.losses[i]) < 0.05 * f.losses[i] + 0.02, `step ${i}: bf16 ${l} vs fp32 ${f.losses[i]}`));
  assert.ok(Number.isFinite(b.evalLoss) && b.evalLoss !== f.evalLoss);
  assert.equal(autocastDtype(), null);
});

test('noGrad evaluation under autocast leaves no graph and the flag off afterwards', () => tidy(() => {
  const y = noGrad(() => autocast('bfloat16', () => linear(tensor(rnd(6), [2, 3]), tensor(rnd(6), [2, 3], { requiresGrad: true }))));
  assert.equal(y.requiresGrad, false);
  assert.equal(autocastDtype(), null);
}));
