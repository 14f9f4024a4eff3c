// Frozen bfloat16 weights: the bf16-weight GEMM and embedding against their oracles, linear /
// Conv1D / embedding ops with a bf16 weight (gradients by finite differences, the fallback
// for backends without the kernel), loading GPT-2 and Llama in bf16 (logits equal to the
// float32 model whose weights are rounded to bf16), LoRA training on a bf16 base (only LoRA
// gets gradients, same losses as on the rounded float32 base), merge, save and memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../src/backends/backend.js';
import { referenceBackend as R, cpuBackend } from '../src/backends/index.js';
import { loadNative } from '../src/backends/cpu/index.js';
import {
  Rng, Tensor, embedding, manualSeed, getBackend, linear, matmul, matmulBf16, memoryStats, noGrad, registerBackend, resetPeakMemory,
  setBf16FallbackTileElements, sum, mul, tensor, tidy, toBfloat16, toFloat32, withBackend,
} from '../src/tensor/index.js';
import { Conv1D, Embedding, Linear } from '../src/nn/layers.js';
import { castWeights, weightsDtype } from '../src/nn/dtype.js';
import type { Module } from '../src/nn/module.js';
import { AutoModelForCausalLM, AutoModelForSequenceClassification, type HFModel } from '../src/models/index.js';
import { LoraConfig, getPeftModel } from '../src/peft/index.js';
import { AdamW } from '../src/train/optim.js';
import { generate } from '../src/generate/index.js';
import { f32ToBf16, bf16ToF32 } from '../src/io/half.js';
import { readSafetensorsHeader } from '../src/io/safetensors.js';
import { gradcheck, randParam } from './helpers/gradcheck.js';
import { assertClose, maxAbs } from './helpers/compare.js';
import { SKIP_CPU } from './helpers/backends.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIX = [path.join(here, 'fixtures', 'models'), path.join(here, '..', '..', 'test', 'fixtures', 'models'), path.resolve('test/fixtures/models')]
  .find((p) => fs.existsSync(p))!;
const quiet = { logger: () => {} };
const rng = new Rng(11);
const rnd = (n: number, s = 1) => Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * s);
const bits = (x: Float32Array) => { const u = new Uint16Array(x.length); f32ToBf16(x, u); return u; };
const widen = (u: Uint16Array) => { const f = new Float32Array(u.length); bf16ToF32(u, f); return f; };
/** Backends that compute the bf16 GEMM as the float32 GEMM on widened weights, bit for bit. */
const exactHere = () => ['cpu', 'reference', 'deferred'].includes(getBackend().name);

// ---------- kernels ----------

test('reference matmulBf16 is the float32 GEMM on exactly widened weights', () => {
  for (const tB of [true, false]) {
    const m = 5, n = 7, k = 9, a = rnd(m * k), w = bits(rnd(n * k, 3));
    const c1 = rnd(m * n), c2 = c1.slice();
    R.matmulBf16!(a, w, c1, m, n, k, tB, 0.5, 0.25);
    R.matmul(a, widen(w), c2, 1, m, n, k, false, tB, 0, 0, 0.5, 0.25);
    assert.deepEqual(c1, c2);
  }
});

test('cpu matmulBf16: bit-exact with sgemm on the widened weight in one tile; column tiles, k slices and m <= 8 close to the oracle', { skip: SKIP_CPU }, () => {
  const n = loadNative();
  const C = cpuBackend();
  // [m, n, k, tile elements]: one tile; column tiles over the whole k; 512-column tiles over
  // slices of k; the register path for a few rows (generation).
  const cases: [number, number, number, number, string][] = [
    [33, 300, 257, 0, 'one tile'], [64, 2304, 96, 600 * 96 + 7, 'column tiles'], [40, 700, 300, 64 * 300 + 5, 'k slices'],
    [1, 50, 64, 0, 'm = 1'], [5, 1000, 77, 0, 'm = 5'], [8, 33, 1029, 0, 'm = 8'],
  ];
  for (const [m, nn, k, tile, what] of cases) {
    for (const tB of [true, false]) {
      const a = rnd(m * k), w = bits(rnd(nn * k, 2)), wf = widen(w);
      const c1 = rnd(m * nn), c2 = c1.slice(), c3 = c1.slice();
      const prev = tile ? n.bf16TileElements(tile) : 0;
      try { C.matmulBf16!(a, w, c1, m, nn, k, tB, 0.5, 0.25); } finally { if (tile) n.bf16TileElements(prev); }
      R.matmulBf16!(a, w, c3, m, nn, k, tB, 0.5, 0.25);
      assertClose(c1, c3, { rtol: 1e-4, atol: 1e-5 * Math.sqrt(k) * maxAbs(c3), msg: `${what} ${m}x${nn}x${k} transB=${tB}` });
      if (what === 'one tile') {
        C.matmul(a, wf, c2, 1, m, nn, k, false, tB, 0, 0, 0.5, 0.25);
        assert.deepEqual(c1, c2, `one tile ${m}x${nn}x${k} transB=${tB}: same sgemm as on the float32 weight`);
      }
    }
  }
});

// ---------- ops ----------

test('linear / matmul / embedding with a bf16 weight equal the float32 ops on the widened weight', () => tidy(() => {
  const w32 = tensor(rnd(24 * 40, 2), [24, 40]);
  const wb = toBfloat16(w32), ww = toFloat32(wb);
  const x = tensor(rnd(2 * 5 * 40), [2, 5, 40]), b = tensor(rnd(24), [24]);
  const y1 = linear(x, wb, b).toFloat32Array(), y2 = linear(x, ww, b).toFloat32Array();
  if (exactHere()) assert.deepEqual(y1, y2); else assertClose(y1, y2, { rtol: 1e-4, atol: 1e-4 });
  // Conv1D layout: x @ W with W [in, out]
  const wc = toBfloat16(tensor(rnd(40 * 24), [40, 24]));
  const z1 = matmul(x, wc).toFloat32Array(), z2 = matmul(x, toFloat32(wc)).toFloat32Array();
  if (exactHere()) assert.deepEqual(z1, z2); else assertClose(z1, z2, { rtol: 1e-4, atol: 1e-4 });
  const table = toBfloat16(tensor(rnd(30 * 8, 3), [30, 8]));
  const ids = tensor(Int32Array.from([3, 0, 29, 3, 7, 11]), [2, 3]);
  const e = embedding(table, ids);
  assert.deepEqual(e.shape, [2, 3, 8]);
  assert.deepEqual(e.toFloat32Array(), embedding(toFloat32(table), ids).toFloat32Array());
  assert.throws(() => embedding(table, tensor(Int32Array.from([30]), [1])).toFloat32Array(), /out of range/); // (at the next sync on a deferred backend)
}));

test('gradcheck: linear and Conv1D-style matmul with a frozen bf16 weight, wrt x and the bias', () => {
  const w = toBfloat16(tensor(rnd(6 * 5, 1), [6, 5]));
  gradcheck((x, b) => linear(x, w, b), [randParam([2, 3, 5], 1), randParam([6], 2)], { name: 'linear bf16' });
  const wc = toBfloat16(tensor(rnd(5 * 6, 1), [5, 6]));
  gradcheck((x) => matmul(x, wc), [randParam([4, 5], 3)], { name: 'matmul bf16 [in, out]' });
  gradcheck((x) => matmulBf16(x, w, true), [randParam([3, 5], 4)], { name: 'matmulBf16 transW' });
});

test('a bf16 weight cannot require grad; a bf16 left operand is refused', () => tidy(() => {
  const w = toBfloat16(tensor(rnd(12), [3, 4]));
  assert.throws(() => w.setRequiresGrad(true), /only float32 tensors can require grad/);
  w.requiresGrad = true; // forced past the check
  assert.throws(() => linear(tensor(rnd(8), [2, 4]), w), /bfloat16 weight .* requires grad, but bf16 weights are frozen/);
  assert.throws(() => embedding(w, tensor(Int32Array.from([0]), [1])), /frozen/);
  w.requiresGrad = false;
  assert.throws(() => matmul(w, tensor(rnd(8), [4, 2])), /only a frozen bfloat16 right operand/);
  // alpha (LoRA's scaling in the GEMM) is for float32 operands only
  assert.throws(() => linear(tensor(rnd(8), [2, 4]), w, null, 2), /linear: alpha is not supported with a bfloat16 weight/);
  assert.throws(() => matmul(tensor(rnd(6), [2, 3]), w, false, false, 2), /matmul: alpha is not supported with a bfloat16 operand/);
  // no gradient ever reaches the weight: backward gives x its gradient and nothing else
  const x = tensor(rnd(8), [2, 4], { requiresGrad: true });
  sum(linear(x, w)).backward();
  assert.ok(x.grad);
  assert.equal(w.grad, null);
}));

test('fallback without matmulBf16 / embeddingBf16 (widened tiles with contract kernels) gives the same values and gradients', () => {
  const lacking: Backend = { ...R, name: 'reference-no-bf16', matmulBf16: undefined, embeddingBf16: undefined };
  registerBackend('reference-no-bf16', () => lacking);
  const prev = setBf16FallbackTileElements(37); // several tiles, a ragged last one
  try {
    const wv = rnd(9 * 11, 2), xv = rnd(4 * 11), gv = rnd(4 * 9), xcv = rnd(4 * 9);
    const runOn = (name: string) => withBackend(name, () => tidy(() => {
      const w = toBfloat16(tensor(wv.slice(), [9, 11]));
      const x = tensor(xv.slice(), [4, 11], { requiresGrad: true });
      const y = linear(x, w);
      sum(mul(y, tensor(gv.slice(), [4, 9]))).backward();
      const xc = tensor(xcv.slice(), [4, 9], { requiresGrad: true });
      const z = matmul(xc, w); // W [9, 11] read as [in, out]
      sum(z).backward();
      const e = embedding(w, tensor(Int32Array.from([8, 0, 4]), [3]));
      return [y.toFloat32Array(), x.grad!.toFloat32Array(), z.toFloat32Array(), xc.grad!.toFloat32Array(), e.toFloat32Array()];
    }));
    const a = runOn('reference-no-bf16'), b = runOn('reference');
    a.forEach((v, i) => assertClose(v, b[i], { rtol: 1e-6, atol: 1e-6, msg: `output ${i}` }));
    assert.deepEqual(a[0], b[0]); // column tiles are exact (each element is one dot product)
  } finally { setBf16FallbackTileElements(prev); }
});

// ---------- models ----------

function loadFix(name: string, opts: Record<string, unknown> = {}): HFModel {
  const auto = name.endsWith('_lm') ? AutoModelForCausalLM : AutoModelForSequenceClassification;
  return auto.fromPretrainedSync(path.join(FIX, name), { ...quiet, ...opts });
}

/** Rounds every Linear / Conv1D / Embedding weight of a float32 model to bf16 values, in place. */
function roundWeights(model: Module): void {
  const seen = new Set<Tensor>();
  for (const [, m] of model.namedModules()) {
    const w = m instanceof Linear || m instanceof Conv1D || m instanceof Embedding ? m.getParameter('weight') : null;
    if (!w || seen.has(w)) continue;
    seen.add(w);
    w.data.set(widen(bits(w.data)));
  }
}

function weightBytes(model: Module): number {
  const seen = new Set<Tensor>();
  let n = 0;
  for (const [, m] of model.namedModules()) {
    const w = m instanceof Linear || m instanceof Conv1D || m instanceof Embedding ? m.getParameter('weight') : null;
    if (w && !seen.has(w)) { seen.add(w); n += w.size * (w.dtype === 'bfloat16' ? 2 : 4); }
  }
  return n;
}

function logits(model: HFModel, ids: Int32Array, shape: number[]): Float32Array {
  return tidy(() => noGrad(() => model.forward({ inputIds: tensor(ids, shape) }).logits.toFloat32Array()));
}

for (const name of ['gpt2_lm', 'llama_lm']) {
  test(`${name} loaded with dtype bfloat16: bf16 linear/embedding weights, half their bytes, logits of the bf16-rounded float32 model`, () => {
    const m16 = loadFix(name, { dtype: 'bfloat16' });
    const m32 = loadFix(name);
    const ref = loadFix(name);
    roundWeights(ref);
    // Which tensors are bf16: every Linear / Conv1D / Embedding weight; norms and biases float32.
    for (const [n, p] of m16.stateDict()) {
      const big = /(embed_tokens|wte|wpe|lm_head|proj|c_attn|c_fc)\.weight$/.test(n);
      assert.equal(p.dtype, big ? 'bfloat16' : 'float32', n);
      if (big) assert.equal(p.requiresGrad, false, `${n} frozen`);
    }
    if (name === 'gpt2_lm') assert.equal(m16.getSubmodule('lm_head').getParameter('weight'), m16.getSubmodule('transformer.wte').getParameter('weight'), 'tied');
    assert.equal(weightBytes(m16) * 2, weightBytes(m32));
    assert.equal(weightsDtype(m16), 'bfloat16');
    const vocab = m32.config.vocabSize;
    const ids = Int32Array.from({ length: 2 * 7 }, (_, i) => (i * 13 + 5) % vocab);
    const l16 = logits(m16, ids, [2, 7]), lr = logits(ref, ids, [2, 7]), l32 = logits(m32, ids, [2, 7]);
    const scale = maxAbs(l32);
    if (exactHere()) assert.deepEqual(l16, lr, 'bf16 weights used as stored = float32 math on the rounded weights');
    else assertClose(l16, lr, { rtol: 1e-4, atol: 1e-5 * scale });
    // and only bf16 rounding of the weights away from the float32 model
    let d = 0;
    for (let i = 0; i < l32.length; i++) d = Math.max(d, Math.abs(l16[i] - l32[i]));
    assert.ok(d > 0 && d < 0.05 * scale, `max |bf16 - f32| = ${d} (scale ${scale})`);
  });
}

test('dtype options: torchDtype alias, auto follows config.json, conflicts and unknown dtypes are errors; a BF16 checkpoint round-trips', () => {
  const a = loadFix('llama_lm', { torchDtype: 'bfloat16' });
  assert.equal(weightsDtype(a), 'bfloat16');
  assert.equal(weightsDtype(loadFix('llama_lm', { dtype: 'auto' })), 'float32'); // config says float16
  assert.throws(() => loadFix('llama_lm', { dtype: 'bfloat16', torchDtype: 'float32' }), /disagree/);
  assert.throws(() => loadFix('llama_lm', { dtype: 'float16' }), /not supported/);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-bf16-'));
  try {
    a.savePretrained(dir);
    const hdr = readSafetensorsHeader(path.join(dir, 'model.safetensors')).tensors;
    assert.equal(hdr['model.layers.0.self_attn.q_proj.weight'].dtype, 'BF16');
    assert.equal(hdr['model.norm.weight'].dtype, 'F32');
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).dtype, 'bfloat16');
    const b = AutoModelForCausalLM.fromPretrainedSync(dir, { ...quiet, dtype: 'auto' });
    assert.equal(weightsDtype(b), 'bfloat16');
    for (const [n, p] of a.stateDict()) {
      const q = b.stateDict().get(n)!;
      if (p.dtype === 'bfloat16') assert.deepEqual(q.halfBits, p.halfBits, n); else assert.deepEqual(q.data, p.data, n);
    }
    // read into float32 it gives the widened values
    const c = AutoModelForCausalLM.fromPretrainedSync(dir, quiet);
    assert.deepEqual(c.stateDict().get('model.embed_tokens.weight')!.data, widen(a.stateDict().get('model.embed_tokens.weight')!.halfBits));
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
});

test('fromConfig with dtype bfloat16: random bf16 weights drawn layer by layer, float32 norms', () => {
  const cfg = JSON.parse(fs.readFileSync(path.join(FIX, 'llama_lm', 'config.json'), 'utf8'));
  const m = AutoModelForCausalLM.fromConfig(cfg, { rng: new Rng(3), dtype: 'bfloat16' });
  assert.equal(weightsDtype(m), 'bfloat16');
  const q = widen(m.getSubmodule('model.layers.0.self_attn.q_proj').getParameter('weight')!.halfBits);
  const std = Math.sqrt(q.reduce((s, v) => s + v * v, 0) / q.length);
  assert.ok(std > 0.015 && std < 0.025, `initializer_range 0.02, got std ${std}`);
  assert.ok(m.getSubmodule('model.norm').getParameter('weight')!.data.every((v) => v === 1));
  const ids = Int32Array.from([1, 2, 3, 4]);
  assert.ok(logits(m, ids, [1, 4]).every(Number.isFinite));
});

test('castWeights: bf16 and back, ties kept, classifier heads and adapters left float32', () => {
  const m = loadFix('gpt2_seqcls');
  const names = castWeights(m, 'bfloat16');
  assert.ok(names.includes('transformer.h.0.attn.c_attn.weight') && names.includes('transformer.wte.weight'));
  assert.equal(m.getSubmodule('score').getParameter('weight')!.dtype, 'float32', 'classifier head stays float32');
  assert.equal(m.getSubmodule('transformer.ln_f').getParameter('weight')!.dtype, 'float32');
  assert.equal(m.getSubmodule('transformer.h.0.attn.c_attn').getParameter('bias')!.dtype, 'float32');
  const peft = getPeftModel(m, new LoraConfig({ taskType: 'SEQ_CLS', r: 4, loraAlpha: 8, targetModules: ['c_attn'] }));
  castWeights(peft, 'bfloat16'); // adapters and the trained head copy stay float32
  for (const [n, p] of peft.namedParameters()) if (p.requiresGrad) assert.equal(p.dtype, 'float32', n);
  const back = castWeights(m, 'float32');
  assert.ok(back.length > 0);
  assert.equal(weightsDtype(m), 'float32');
});

test('LoRA on a bf16 base: only LoRA (and the float32 head) train, the base bits never change, losses equal training on the rounded float32 base', () => {
  const train = (model: HFModel) => {
    manualSeed(5); // the same LoRA init for both runs
    const peft = getPeftModel(model, new LoraConfig({ taskType: 'CAUSAL_LM', r: 4, loraAlpha: 8, loraDropout: 0, targetModules: ['q_proj', 'v_proj', 'down_proj'] }));
    const params = [...peft.namedParameters()].filter(([, p]) => p.requiresGrad);
    const opt = new AdamW(params, { lr: 1e-2 });
    const ids = tensor(Int32Array.from({ length: 2 * 9 }, (_, i) => (i * 7 + 3) % model.config.vocabSize), [2, 9]);
    const losses: number[] = [];
    let gradNames: string[] = [];
    for (let s = 0; s < 4; s++) {
      losses.push(tidy(() => {
        const out = peft.forward({ inputIds: ids, labels: ids });
        out.loss!.backward();
        return out.loss!.item();
      }));
      gradNames = [...peft.namedParameters()].filter(([, p]) => p.grad).map(([n]) => n);
      opt.step(); opt.zeroGrad();
    }
    return { peft, losses, gradNames };
  };
  const m16 = loadFix('llama_lm', { dtype: 'bfloat16' });
  const before = new Map([...m16.stateDict()].filter(([, p]) => p.dtype === 'bfloat16').map(([n, p]) => [n, p.halfBits.slice()]));
  const a = train(m16);
  const ref = loadFix('llama_lm'); roundWeights(ref);
  const b = train(ref);
  assert.ok(a.gradNames.length > 0 && a.gradNames.every((n) => /lora_[AB]/.test(n)), a.gradNames.join(', '));
  assert.ok(a.losses[3] < a.losses[0], `loss went down: ${a.losses}`);
  assertClose(a.losses, b.losses, { rtol: 1e-5, atol: 1e-6, msg: 'bf16 base vs rounded float32 base' });
  for (const [n, p] of m16.stateDict()) if (before.has(n)) assert.deepEqual(p.halfBits, before.get(n), `${n} unchanged`);
  // the bf16 sequence classifier trains its float32 head through modules_to_save
  const cls = getPeftModel(loadFix('gpt2_seqcls', { dtype: 'bfloat16' }), new LoraConfig({ taskType: 'SEQ_CLS', r: 4, loraAlpha: 8, targetModules: ['c_attn'] }));
  const trainable = [...cls.namedParameters()].filter(([, p]) => p.requiresGrad);
  assert.ok(trainable.some(([n]) => n.includes('modules_to_save')) && trainable.every(([, p]) => p.dtype === 'float32'));
  tidy(() => {
    const out = cls.forward({ inputIds: tensor(Int32Array.from([5, 6, 7, 8]), [2, 2]), labels: tensor(Int32Array.from([0, 1]), [2]) });
    out.loss!.backward();
  });
  assert.ok(trainable.every(([, p]) => p.grad !== null));
});

test('mergeAndUnload on a bf16 base: merged in float32, stored back as bf16 once rounded; outputs close to the unmerged adapter', () => {
  for (const [name, targets] of [['llama_lm', ['q_proj', 'o_proj']], ['gpt2_lm', ['c_attn', 'c_proj']]] as [string, string[]][]) {
    const model = loadFix(name, { dtype: 'bfloat16' });
    const peft = getPeftModel(model, new LoraConfig({ taskType: 'CAUSAL_LM', r: 4, loraAlpha: 8, targetModules: targets, initLoraWeights: false }));
    const layerPath = name === 'llama_lm' ? 'model.layers.0.self_attn.q_proj' : 'transformer.h.0.attn.c_attn';
    const layer = peft.getBaseModel().getSubmodule(layerPath) as unknown as { baseLayer: Module; getDeltaWeight(n: string): Tensor };
    const w0 = widen(layer.baseLayer.getParameter('weight')!.halfBits);
    const delta = layer.getDeltaWeight('default').toFloat32Array();
    const ids = Int32Array.from({ length: 8 }, (_, i) => (i * 5 + 1) % model.config.vocabSize);
    const before = logits(peft as unknown as HFModel, ids, [1, 8]);
    const merged = peft.mergeAndUnload() as HFModel;
    const w = merged.getSubmodule(layerPath).getParameter('weight')!;
    assert.equal(w.dtype, 'bfloat16');
    const want = bits(Float32Array.from(w0, (v, i) => Math.fround(v + delta[i])));
    assert.deepEqual(w.halfBits, want, `${name}: round_bf16(W + delta)`);
    const after = logits(merged, ids, [1, 8]);
    assertClose(after, before, { rtol: 0, atol: 0.02 * maxAbs(before), msg: `${name} merged vs unmerged` });
  }
});

test('greedy generation with the KV cache on a bf16 model (one row per step: the register path) picks the tokens of the rounded float32 model', () => {
  const m16 = loadFix('llama_lm', { dtype: 'bfloat16' });
  const ref = loadFix('llama_lm'); roundWeights(ref);
  const prompt = tensor(Int32Array.from([3, 17, 42, 5, 9, 11]), [2, 3]);
  const a = generate(m16 as never, prompt, { maxNewTokens: 8 }).ints.slice();
  const b = generate(ref as never, prompt, { maxNewTokens: 8 }).ints.slice();
  assert.deepEqual(a, b);
});

test('a bf16 forward makes no float32 copy of the weights (same tensor bytes as the float32 forward)', () => {
  const m16 = loadFix('llama_lm', { dtype: 'bfloat16' });
  const m32 = loadFix('llama_lm');
  const ids = Int32Array.from({ length: 6 }, (_, i) => i + 1);
  const peak = (m: HFModel) => {
    resetPeakMemory();
    const live = memoryStats().liveBytes;
    logits(m, ids, [1, 6]);
    return memoryStats().peakLiveBytes - live;
  };
  const p16 = peak(m16), p32 = peak(m32);
  console.log(`forward peak tensor bytes: bf16 ${p16}, float32 ${p32}`);
  assert.ok(p16 <= p32, `forward peak ${p16} (bf16) vs ${p32} (float32)`);
});
