import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import '../src/backends/index.js'; // the native cpu backend when built, else reference
import { Tensor, tidy, memoryStats } from '../src/tensor/index.js';
import { Rng } from '../src/tensor/random.js';
import { randn, sum, mul, tensor } from '../src/tensor/ops/basic.js';
import { linear } from '../src/tensor/ops/nn.js';
import { Module, ModuleList } from '../src/nn/module.js';
import { Conv1D, Linear, RMSNorm } from '../src/nn/layers.js';
import { dequantizeNF4, quantizeNF4 } from '../src/quant/nf4.js';
import { Linear4bit, roundToDtype, setLinear4bitDeviceTileElements, setLinear4bitTileElements } from '../src/quant/linear4bit.js';
import { dequantizeModel, loadModelIn4bit, prepareModelForKbitTraining, quantizeModel } from '../src/quant/model.js';
import { isUint8Key } from '../src/quant/serialize.js';
import { iterSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { getBackend, withBackend } from '../src/tensor/registry.js';
import type { makeDeferredBackend } from '../src/backends/index.js';
import { BACKENDS, hasCpu } from './helpers/backends.js';

/**
 * A test run once per backend (reference, cpu when built, cuda with a GPU) and on `deferred`,
 * which takes the device path (codes in backend memory, kernels queued until a host read).
 */
function onBackends(title: string, fn: () => void): void {
  for (const [name, skip] of [...BACKENDS, ['deferred', false] as [string, false]]) {
    test(`${title} [${name}]`, { skip }, () => withBackend(name, fn));
  }
}

/** Runs fn with tiles of `elems` weight elements on the host and device paths alike. */
function withTiles<T>(elems: number, fn: () => T): T {
  const h = setLinear4bitTileElements(elems), d = setLinear4bitDeviceTileElements(elems);
  try { return fn(); } finally { setLinear4bitTileElements(h); setLinear4bitDeviceTileElements(d); }
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** w [rows, cols] transposed into a tensor [cols, rows]. */
function transposed(w: Float32Array, rows: number, cols: number): Tensor {
  const t = new Float32Array(w.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = w[r * cols + c];
  return tensor(t, [cols, rows]);
}

function makeLayer(inF: number, outF: number, seed: number, bias = true): { w: Float32Array; b: Tensor | null; q: Linear4bit } {
  const rng = new Rng(seed);
  const w = randn([outF, inF], 0.05, rng).data.slice();
  const b = bias ? randn([outF], 0.1, rng) : null;
  return { w, b, q: Linear4bit.fromWeight(w, inF, outF, b) };
}

onBackends('forward equals x @ dequant(W)^T + b, across several tiles and a 3-D input', () => {
  withTiles(70 * 13, () => { // 13 rows per tile: uneven last tile
    const { q, b } = makeLayer(70, 45, 1);
    const x = randn([2, 3, 70], 1, new Rng(2));
    const y = q.forward(x);
    const ref = linear(x, q.dequantizeWeight(), b);
    assert.deepEqual(y.shape, [2, 3, 45]);
    assert.ok(maxDiff(y.data, ref.data) < 1e-5, `max diff ${maxDiff(y.data, ref.data)}`);
  });
});

onBackends('input gradient: matches gy @ dequant(W) and finite differences; bias grad flows', () => {
  withTiles(33 * 7, () => {
    const { q, b } = makeLayer(33, 20, 3);
    b!.setRequiresGrad(true);
    const x = randn([4, 33], 1, new Rng(4)).setRequiresGrad(true);
    const r = randn([4, 20], 1, new Rng(5));
    const lossOf = (xx: Tensor) => sum(mul(q.forward(xx), r));
    tidy(() => { lossOf(x).backward(); return 0; });
    const gx = x.grad!.data.slice();
    // analytic: gx = r @ W
    const W = dequantizeNF4(q.packedWeight, q.quantState);
    for (let i = 0; i < 4; i++) for (let k = 0; k < 33; k++) {
      let s = 0;
      for (let o = 0; o < 20; o++) s += r.data[i * 20 + o] * W[o * 33 + k];
      assert.ok(Math.abs(s - gx[i * 33 + k]) < 1e-5, `gx[${i},${k}]`);
    }
    // finite differences on a few coordinates (the function is linear in x: central difference is exact up to rounding)
    for (const idx of [0, 17, 40, 131]) {
      const eps = 1e-2;
      const xp = tensor(x.data.slice(), [4, 33]), xm = tensor(x.data.slice(), [4, 33]);
      xp.data[idx] += eps; xm.data[idx] -= eps;
      const fd = (lossOf(xp).item() - lossOf(xm).item()) / (2 * eps);
      assert.ok(Math.abs(fd - gx[idx]) < 2e-3 * Math.max(1, Math.abs(fd)), `fd ${fd} vs ${gx[idx]} at ${idx}`);
    }
    // bias gradient = column sums of r
    for (let o = 0; o < 20; o++) {
      let s = 0;
      for (let i = 0; i < 4; i++) s += r.data[i * 20 + o];
      assert.ok(Math.abs(b!.grad!.data[o] - s) < 1e-5);
    }
  });
});

onBackends('bfloat16 / float16 compute dtype rounds input and weight tiles before the float32 GEMM (and in backward)', () => {
  const { w, q } = makeLayer(64, 8, 6, false);
  for (const dtype of ['bfloat16', 'float16'] as const) {
    const qb = Linear4bit.fromWeight(w, 64, 8, null, dtype);
    const x = randn([3, 64], 1, new Rng(7)).setRequiresGrad(true);
    const xr = x.data.slice(); roundToDtype(xr, dtype);
    const wr = q.dequantizeWeight().data.slice(); roundToDtype(wr, dtype);
    const ref = linear(tensor(xr, [3, 64]), tensor(wr, [8, 64]));
    const gy = randn([3, 8], 1, new Rng(8));
    for (const tiles of [1 << 20, 64 * 3]) {
      withTiles(tiles, () => {
        const y = qb.forward(x);
        assert.ok(maxDiff(y.data, ref.data) < 1e-5, `${dtype} tiles ${tiles}: forward`);
        tidy(() => { sum(mul(y, gy)).backward(); return 0; });
        const wantGx = linear(gy, transposed(wr, 8, 64)); // gy @ round(W)
        assert.ok(maxDiff(x.grad!.data, wantGx.data) < 1e-5, `${dtype} tiles ${tiles}: input gradient`);
        x.grad = null;
      });
    }
    if (dtype === 'bfloat16') for (const v of xr) assert.equal(new Uint32Array(new Float32Array([v]).buffer)[0] & 0xffff, 0);
  }
});

test('mergeDelta requantizes dequant(W) + scale * delta (with peft\'s rounding warning)', () => {
  const { q } = makeLayer(64, 4, 8, false);
  const before = dequantizeNF4(q.packedWeight, q.quantState);
  const delta = randn([4, 64], 0.01, new Rng(9)).data;
  const warn = console.warn; const msgs: string[] = [];
  console.warn = (m: string) => { msgs.push(m); };
  try { q.mergeDelta(delta, 2); } finally { console.warn = warn; }
  const expect = before.map((v, i) => v + 2 * delta[i]);
  const ref = quantizeNF4(expect, [4, 64], { compressStatistics: true });
  assert.deepEqual(q.packedWeight, ref.packed);
  assert.match(msgs.join(''), /rounding errors/);
});

test('device path (deferred backend): forward and backward only queue kernels; codes live in backend memory; host readers, merge and backend switches stay right', () => {
  const { w, q, b } = makeLayer(96, 40, 31);
  const q2 = Linear4bit.fromWeight(w, 96, 40, b, 'float32', { compressStatistics: false });
  const host = q.packedWeight.slice();
  const x = randn([5, 96], 1, new Rng(32)).setRequiresGrad(true);
  const gy = randn([5, 40], 1, new Rng(33));
  // expected on the plain host path (reference backend)
  const want = withBackend('reference', () => {
    const out: Float32Array[] = [];
    for (const m of [q, q2]) {
      const y = m.forward(x);
      tidy(() => { sum(mul(y, gy)).backward(); return 0; });
      out.push(y.data.slice(), x.grad!.data.slice());
      x.grad = null;
    }
    return out;
  });
  withTiles(96 * 11, () => withBackend('deferred', () => {
    const be = getBackend() as ReturnType<typeof makeDeferredBackend>;
    [q, q2].forEach((m, k) => {
      m.forward(x); // first use: the codes and scales are copied into backend memory (one synchronize)
      be.synchronize!();
      const f0 = be.flushes();
      const y = m.forward(x);
      tidy(() => { sum(mul(y, gy)).backward(); return 0; });
      assert.equal(be.flushes(), f0, 'forward + backward ran without waiting for the queue');
      assert.ok(be.queued() > 0);
      assert.ok(maxDiff(y.data, want[2 * k]) < 1e-5, 'forward');
      assert.ok(maxDiff(x.grad!.data, want[2 * k + 1]) < 1e-5, 'input gradient');
      x.grad = null;
    });
    // the packed codes are the backend's array now; host readers see the same bytes
    assert.deepEqual(q.packedWeight, host);
    assert.deepEqual(q.stateTensors('l').get('l.weight')!.ints, Int32Array.from(host));
  }));
  // another backend reads the codes where they are (host-visible), with the same results
  withBackend(hasCpu ? 'cpu' : 'reference', () => assert.ok(maxDiff(q.forward(x).data, want[0]) < 1e-5));
  // a merge requantizes on the host and the next device call copies the new codes
  withBackend('deferred', () => {
    const warn = console.warn;
    console.warn = () => {};
    try { q.mergeDelta(new Float32Array(96 * 40).fill(0.01), 1); } finally { console.warn = warn; }
    const W = q.dequantizeWeight();
    assert.ok(maxDiff(q.forward(x).data, linear(x, W, b).data) < 1e-5, 'after merge');
  });
});

// A Llama-shaped stack: attention and MLP projections, norms, and an lm_head that stays float.
class Block extends Module {
  constructor(d: number, h: number, rng: Rng) {
    super();
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) this.registerModule(n, new Linear(d, d, false, rng));
    this.registerModule('gate_proj', new Linear(d, h, false, rng));
    this.registerModule('down_proj', new Linear(h, d, false, rng));
    this.registerModule('input_layernorm', new RMSNorm(d));
  }
  forward(x: Tensor): Tensor {
    const l = (n: string) => this.getSubmodule(n) as unknown as { forward(t: Tensor): Tensor };
    const a = l('o_proj').forward(l('v_proj').forward(l('input_layernorm').forward(x)));
    return l('down_proj').forward(l('gate_proj').forward(a));
  }
}
class Tiny extends Module {
  gradientCheckpointing = false;
  constructor(d: number, h: number, n: number, seed: number) {
    super();
    const rng = new Rng(seed);
    this.registerModule('layers', new ModuleList(Array.from({ length: n }, () => new Block(d, h, rng))));
    this.registerModule('lm_head', new Linear(d, 11, false, rng));
    this.registerModule('c_proj', new Conv1D(d, d, rng));
  }
  outputHeadNames(): string[] { return ['lm_head']; }
  forward(x: Tensor): Tensor {
    let h = x;
    for (const b of this.getSubmodule('layers') as ModuleList<Block>) h = b.forward(h);
    h = (this.getSubmodule('c_proj') as Conv1D).forward(h);
    return (this.getSubmodule('lm_head') as Linear).forward(h);
  }
}

onBackends('quantizeModel: every Linear/Conv1D but the head becomes Linear4bit; forward matches the dequantized float model', () => {
  const m = new Tiny(32, 48, 2, 10);
  const x = randn([2, 5, 32], 1, new Rng(11));
  const c = m.getSubmodule('c_proj') as Conv1D;
  const cw = c.weight.data.slice();
  const replaced = quantizeModel(m);
  assert.equal(replaced.length, 2 * 6 + 1);
  assert.ok(m.getSubmodule('lm_head') instanceof Linear);
  assert.ok(m.getSubmodule('layers.0.q_proj') instanceof Linear4bit);
  // Conv1D [in, out] was transposed to bnb's [out, in]
  const cq = m.getSubmodule('c_proj') as Linear4bit;
  const t = new Float32Array(32 * 32);
  for (let i = 0; i < 32; i++) for (let o = 0; o < 32; o++) t[o * 32 + i] = cw[i * 32 + o];
  assert.deepEqual(cq.packedWeight, quantizeNF4(t, [32, 32], { compressStatistics: true }).packed);
  const y4 = m.forward(x).data.slice();
  dequantizeModel(m);
  assert.ok(m.getSubmodule('layers.1.down_proj') instanceof Linear);
  assert.ok(maxDiff(m.forward(x).data, y4) < 1e-4);
});

onBackends('prepareModelForKbitTraining freezes the base and turns on gradient checkpointing', () => {
  const m = new Tiny(16, 16, 1, 12);
  quantizeModel(m);
  prepareModelForKbitTraining(m);
  assert.equal(m.numParameters(true), 0);
  assert.equal(m.gradientCheckpointing, true);
  // input gradients still flow through frozen 4-bit layers
  const x = randn([1, 3, 16], 1, new Rng(1)).setRequiresGrad(true);
  tidy(() => { sum(m.forward(x)).backward(); return 0; });
  assert.ok(x.grad && x.grad.data.some((v) => v !== 0));
});

onBackends('loadModelIn4bit: float checkpoint streamed into 4-bit, then a bnb-format checkpoint through safetensors', () => {
  const src = new Tiny(32, 64, 2, 20);
  const srcState = [...src.stateDict()].map(([k, v]) => [k, tensor(v.data.slice(), v.shape)] as [string, Tensor]);
  const dst = new Tiny(32, 64, 2, 21);
  const rep = loadModelIn4bit(dst, srcState, { bnb4bitUseDoubleQuant: true });
  assert.equal(rep.quantized.length, 13);
  assert.deepEqual(rep.missingKeys, []);
  assert.deepEqual(rep.unexpectedKeys, []);
  const x = randn([1, 4, 32], 1, new Rng(22));
  const ref = new Tiny(32, 64, 2, 20);
  quantizeModel(ref);
  const yRef = ref.forward(x).data.slice();
  assert.ok(maxDiff(dst.forward(x).data, yRef) === 0, 'same bits as quantizing the source model');

  // Save the quantized model with bnb's keys, read back, load into a fresh model.
  const state = new Map<string, Tensor>();
  for (const [p, mod] of ref.namedModules()) {
    if (mod instanceof Linear4bit) for (const [k, v] of mod.stateTensors(p)) state.set(k, v);
  }
  for (const [k, v] of ref.stateDict()) if (!state.has(k)) state.set(k, v);
  assert.ok(state.has('layers.0.q_proj.weight.quant_state.bitsandbytes__nf4'));
  assert.ok(isUint8Key('layers.0.q_proj.weight') && isUint8Key('layers.0.q_proj.weight.absmax'));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quant-'));
  const file = path.join(dir, 'model.safetensors');
  try {
    writeSafetensors(file, state);
    const fresh = new Tiny(32, 64, 2, 23);
    const rep2 = loadModelIn4bit(fresh, iterSafetensors(file));
    assert.equal(rep2.prequantized.length, 13);
    assert.equal(rep2.quantized.length, 0);
    assert.deepEqual(rep2.missingKeys, []);
    assert.ok(maxDiff(fresh.forward(x).data, yRef) === 0);
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
});

test('memory: 8 Llama-sized 1024x1024 projections hold ~0.5 byte/param plus absmax; float32 weights are freed', () => {
  const d = 1024, n = 8;
  class Stack extends Module {
    constructor() { super(); this.registerModule('layers', new ModuleList(Array.from({ length: n }, () => new Linear(d, d, false, new Rng(1))))); }
  }
  const m = new Stack();
  const params = n * d * d;
  const live0 = memoryStats().liveBytes;
  quantizeModel(m);
  const freed = live0 - memoryStats().liveBytes;
  assert.ok(freed >= params * 4, `float32 weights freed: ${freed} bytes`);
  let held = 0, absmaxOverhead = 0;
  for (const [, mod] of m.namedModules()) if (mod instanceof Linear4bit) {
    held += mod.quantizedBytes();
    const s = mod.quantState;
    absmaxOverhead += s.absmax.byteLength + (s.nested ? s.nested.absmax.byteLength : 0);
    assert.equal(mod.getParameter('weight'), null);
  }
  const expected = params * 0.5 + absmaxOverhead;
  assert.ok(Math.abs(held - expected) / expected < 0.15, `held ${held} vs expected ${expected}`);
  assert.ok(held < params * 0.5 * 1.05, `double-quantized overhead stays small: ${held / params} bytes/param`);
  const x = randn([2, d], 1, new Rng(3));
  const y = (m.getSubmodule('layers.0') as Linear4bit).forward(x);
  assert.deepEqual(y.shape, [2, d]);
});

test('quantization_config round trip and clear errors', async () => {
  const { bnbConfigFromDict, bnbConfigToDict } = await import('../src/quant/model.js');
  const c = bnbConfigFromDict({ quant_method: 'bitsandbytes', load_in_4bit: true, bnb_4bit_quant_type: 'nf4',
    bnb_4bit_use_double_quant: true, bnb_4bit_compute_dtype: 'bfloat16', llm_int8_skip_modules: ['score'] });
  assert.deepEqual(c, { loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true, bnb4bitComputeDtype: 'bfloat16', llmInt8SkipModules: ['score'] });
  assert.deepEqual(bnbConfigFromDict(bnbConfigToDict(c)), c);
  assert.throws(() => bnbConfigFromDict({ load_in_4bit: true, bnb_4bit_quant_type: 'fp4' }), /fp4/);
  assert.throws(() => bnbConfigFromDict({ load_in_8bit: true }), /load_in_4bit/);
  assert.throws(() => bnbConfigFromDict({ quant_method: 'gptq', load_in_4bit: true }), /gptq/);
});
