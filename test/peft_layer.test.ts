// LoRA layers, config and targeting on toy modules: gradients against finite differences,
// DoRA's formula (with dropout) written out by hand, merge/unmerge, peft's matching rules.
import { test } from 'node:test';
import { dropoutHash, dropoutThreshold } from '../src/backends/reference/math.js';
import assert from 'node:assert/strict';
import { Rng, Tensor, tensor, tidy, noGrad, sum, mul, randn } from '../src/tensor/index.js';
import { Module } from '../src/nn/module.js';
import { Conv1D, Linear } from '../src/nn/layers.js';
import { LoraConfig, LoraLinear, getPeftModel, captureWarnings, checkTargetModule, rankFor, alphaFor, inspectModules } from '../src/peft/index.js';

class Block extends Module {
  constructor(rng: Rng) {
    super();
    this.registerModule('q_proj', new Linear(6, 4, true, rng));
    this.registerModule('c_attn', new Conv1D(6, 5, rng, 0.3));
    this.registerModule('out', new Linear(4, 3, true, rng));
  }
}
class Toy extends Module {
  constructor(rng = new Rng(1)) {
    super();
    const layers = this.registerModule('layers', new (class Layers extends Module {})());
    layers.registerModule('0', new Block(rng));
    layers.registerModule('1', new Block(rng));
    this.registerModule('head', new Linear(4, 2, false, rng));
  }
  outputHeadNames(): string[] { return ['head']; }
}

const X = () => tensor(Float32Array.from({ length: 18 }, (_, i) => Math.sin(i * 1.3)), [3, 6]);

function randomizeLora(layer: LoraLinear, rng: Rng): void {
  for (const p of layer.parameters()) if (p.requiresGrad) for (let i = 0; i < p.size; i++) p.data[i] += 0.5 * rng.normal();
}

function gradCheck(layer: LoraLinear, x: Tensor, params: Tensor[]): void {
  const w = randn([...x.shape.slice(0, -1), layer.outFeatures], 1, new Rng(9));
  const loss = () => sum(mul(layer.forward(x), w));
  layer.zeroGrad();
  tidy(() => { loss().backward(); return null; });
  for (const p of params) {
    const g = p.grad!.toFloat32Array();
    for (let i = 0; i < p.size; i += Math.max(1, Math.floor(p.size / 7))) {
      const old = p.data[i], h = 1e-2;
      p.data[i] = old + h; const up = noGrad(() => tidy(() => loss().item()));
      p.data[i] = old - h; const dn = noGrad(() => tidy(() => loss().item()));
      p.data[i] = old;
      const fd = (up - dn) / (2 * h);
      assert.ok(Math.abs(fd - g[i]) <= 2e-2 * (1 + Math.abs(fd)), `grad ${p.name || p.shape} [${i}]: fd ${fd} vs ${g[i]}`);
    }
  }
}

for (const base of ['linear', 'conv1d'] as const) {
  for (const dora of [false, true]) {
    test(`LoraLinear(${base}${dora ? ', DoRA' : ''}): forward formula, gradients, merge/unmerge`, () => {
      const rng = new Rng(3);
      const b = base === 'linear' ? new Linear(6, 5, true, rng) : new Conv1D(6, 5, rng, 0.3);
      if (base === 'conv1d') for (let i = 0; i < 5; i++) b.getParameter('bias')!.data[i] = 0.1 * i;
      const cfg = new LoraConfig({ r: 3, loraAlpha: 6, useDora: dora });
      const { result: layer, warnings } = captureWarnings(() => new LoraLinear(b, 'default', cfg, 3, 6, rng));
      assert.equal(layer.fanInFanOut, base === 'conv1d');
      if (base === 'conv1d') assert.match(warnings[0], /Setting fan_in_fan_out to True/);
      const x = X();
      const y0 = noGrad(() => b.forward(x).toFloat32Array());
      // fresh adapter is a no-op
      assert.deepEqual(Array.from(noGrad(() => layer.forward(x).toFloat32Array())).map((v) => +v.toFixed(5)), Array.from(y0).map((v) => +v.toFixed(5)));
      randomizeLora(layer, rng);
      // expected output written out: W' = W + s*B@A; DoRA: m/||W'||_row * W' (bias added after)
      const A = layer.loraA.get('default')!.weight.toArray(), B = layer.loraB.get('default')!.weight.toArray();
      const W = layer.baseWeightOutIn().data, s = layer.scaling.default;
      assert.equal(s, 2);
      const Wp = new Float64Array(30);
      for (let o = 0; o < 5; o++) for (let i = 0; i < 6; i++) {
        let d = 0; for (let k = 0; k < 3; k++) d += B[o * 3 + k] * A[k * 6 + i];
        Wp[o * 6 + i] = W[o * 6 + i] + s * d;
      }
      if (dora) {
        const m = layer.loraMagnitudeVector.get('default')!.weight.toArray();
        for (let o = 0; o < 5; o++) {
          let n = 0; for (let i = 0; i < 6; i++) n += Wp[o * 6 + i] ** 2;
          for (let i = 0; i < 6; i++) Wp[o * 6 + i] *= m[o] / Math.sqrt(n);
        }
      }
      const bias = b.getParameter('bias')!.toArray();
      const want: number[] = [];
      for (let r = 0; r < 3; r++) for (let o = 0; o < 5; o++) {
        let v = bias[o]; for (let i = 0; i < 6; i++) v += x.data[r * 6 + i] * Wp[o * 6 + i];
        want.push(v);
      }
      const got = noGrad(() => layer.forward(x).toFloat32Array());
      for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) < 1e-5, `y[${i}] ${got[i]} vs ${want[i]}`);
      // gradients reach A, B (and the magnitude), not the frozen base
      b.requiresGrad_(false);
      if (!dora) gradCheck(layer, x, [layer.loraA.get('default')!.weight, layer.loraB.get('default')!.weight]);
      else {
        // The weight norm is a constant for autograd (peft detaches it), so finite differences
        // only apply to the magnitude; A and B are checked against the formula with the norm fixed.
        gradCheck(layer, x, [layer.loraMagnitudeVector.get('default')!.weight]);
        const m = layer.loraMagnitudeVector.get('default')!.weight.toArray();
        const sc: number[] = [];
        for (let o = 0; o < 5; o++) {
          let n = 0; for (let i = 0; i < 6; i++) { let d = 0; for (let k = 0; k < 3; k++) d += B[o * 3 + k] * A[k * 6 + i]; n += (W[o * 6 + i] + s * d) ** 2; }
          sc.push(m[o] / Math.sqrt(n));
        }
        const w = randn([3, 5], 1, new Rng(9));
        layer.zeroGrad();
        tidy(() => { sum(mul(layer.forward(x), w)).backward(); return null; });
        const gA = layer.loraA.get('default')!.weight.grad!.toArray(), gB = layer.loraB.get('default')!.weight.grad!.toArray();
        for (let k = 0; k < 3; k++) for (let i = 0; i < 6; i++) {
          let g = 0;
          for (let r = 0; r < 3; r++) for (let o = 0; o < 5; o++) g += w.data[r * 5 + o] * sc[o] * s * B[o * 3 + k] * x.data[r * 6 + i];
          assert.ok(Math.abs(g - gA[k * 6 + i]) < 1e-4 * (1 + Math.abs(g)), `dA[${k},${i}] ${gA[k * 6 + i]} vs ${g}`);
        }
        for (let o = 0; o < 5; o++) for (let k = 0; k < 3; k++) {
          let g = 0;
          for (let r = 0; r < 3; r++) { let ax = 0; for (let i = 0; i < 6; i++) ax += A[k * 6 + i] * x.data[r * 6 + i]; g += w.data[r * 5 + o] * sc[o] * s * ax; }
          assert.ok(Math.abs(g - gB[o * 3 + k]) < 1e-4 * (1 + Math.abs(g)), `dB[${o},${k}] ${gB[o * 3 + k]} vs ${g}`);
        }
      }
      // merge / unmerge
      const wBefore = b.getParameter('weight')!.toArray();
      layer.merge();
      assert.ok(layer.merged);
      const merged = noGrad(() => layer.forward(x).toFloat32Array());
      for (let i = 0; i < want.length; i++) assert.ok(Math.abs(merged[i] - want[i]) < 1e-5);
      layer.unmerge();
      const wAfter = b.getParameter('weight')!.toArray();
      for (let i = 0; i < wBefore.length; i++) assert.ok(Math.abs(wAfter[i] - wBefore[i]) < 1e-6);
    });
  }
}

test('DoRA with dropout in training: base term recomputed on the dropped input, as peft', () => {
  const rng = new Rng(5);
  const b = new Linear(6, 4, true, rng);
  const drng = new Rng(77);
  const layer = new LoraLinear(b, 'default', new LoraConfig({ r: 2, loraAlpha: 4, useDora: true, loraDropout: 0.5 }), 2, 4, drng);
  randomizeLora(layer, rng);
  layer.train();
  const x = X();
  const state = drng.getState();
  const y = noGrad(() => layer.forward(x).toFloat32Array());
  // replay the same mask
  drng.setState(state);
  const seed = drng.nextU32(); // dropout draws one seed for a counter-based mask
  const mask = Array.from({ length: 18 }, (_, i) => (dropoutHash(seed, i) >= dropoutThreshold(0.5) ? 2 : 0));
  assert.ok(mask.includes(0) && mask.includes(2));
  const xd = Array.from(x.data, (v, i) => v * mask[i]);
  const A = layer.loraA.get('default')!.weight.data, B = layer.loraB.get('default')!.weight.data;
  const W = b.weight.data, bias = b.bias!.data, m = layer.loraMagnitudeVector.get('default')!.weight.data, s = 2;
  for (let r = 0; r < 3; r++) for (let o = 0; o < 4; o++) {
    let n = 0;
    for (let i = 0; i < 6; i++) { let d = 0; for (let k = 0; k < 2; k++) d += B[o * 2 + k] * A[k * 6 + i]; n += (W[o * 6 + i] + s * d) ** 2; }
    const sc = m[o] / Math.sqrt(n);
    let base = bias[o], baseD = 0, lora = 0;
    for (let i = 0; i < 6; i++) {
      base += x.data[r * 6 + i] * W[o * 6 + i];
      baseD += xd[r * 6 + i] * W[o * 6 + i];
      let d = 0; for (let k = 0; k < 2; k++) d += B[o * 2 + k] * A[k * 6 + i];
      lora += xd[r * 6 + i] * d;
    }
    const want = base + (sc - 1) * baseD + sc * lora * s;
    assert.ok(Math.abs(y[r * 4 + o] - want) < 1e-5, `[${r},${o}] ${y[r * 4 + o]} vs ${want}`);
  }
});

test('two DoRA adapters merged one after the other equal the unmerged forward', () => {
  const rng = new Rng(8);
  const b = new Linear(6, 4, true, rng);
  const layer = new LoraLinear(b, 'a', new LoraConfig({ r: 2, useDora: true }), 2, 8, rng);
  layer.updateLayer('b', 3, 6, new LoraConfig({ r: 3, useDora: true }), rng);
  layer.setAdapter(['a', 'b']);
  randomizeLora(layer, rng);
  const x = X();
  const y = noGrad(() => layer.forward(x).toFloat32Array());
  const w0 = b.weight.toArray();
  layer.merge(['a', 'b']);
  const ym = noGrad(() => layer.forward(x).toFloat32Array());
  // peft feeds each DoRA adapter the running result as its "base", so chained merges
  // (each norm taken from the unmerged weight) reproduce the unmerged forward exactly.
  for (let i = 0; i < y.length; i++) assert.ok(Math.abs(ym[i] - y[i]) < 1e-5, `y[${i}] merged ${ym[i]} vs ${y[i]}`);
  layer.unmerge();
  b.weight.toArray().forEach((v, i) => assert.ok(Math.abs(v - w0[i]) < 1e-5));
});

test('LoraConfig: defaults, validation and peft JSON round trip', () => {
  const c = new LoraConfig();
  assert.equal(c.r, 8); assert.equal(c.loraAlpha, 8); assert.equal(c.bias, 'none'); assert.equal(c.initLoraWeights, true);
  assert.throws(() => new LoraConfig({ r: 0 }), /positive integer value but the value passed is 0/);
  assert.throws(() => new LoraConfig({ bias: 'some' as never }), /bias must be/);
  assert.throws(() => new LoraConfig({ loraDropout: 1 }), /loraDropout/);
  assert.throws(() => new LoraConfig({ targetModules: '.*q', layersToTransform: [0] }), /cannot be used when `target_modules` is a str/);
  assert.throws(() => new LoraConfig({ targetModules: ['q'], layersPattern: 'layers' }), /`layers_to_transform` must also be specified/);
  assert.throws(() => new LoraConfig({ initLoraWeights: 'pissa' as never }), /not supported/);
  assert.throws(() => new LoraConfig({ rr: 3 } as never), /unknown option 'rr'/);
  const j = new LoraConfig({ r: 4, targetModules: ['v', 'q'], useDora: true, taskType: 'CAUSAL_LM' }).toPeftJson();
  assert.deepEqual(Object.keys(j), Object.keys(j).slice().sort());
  assert.equal(j.peft_type, 'LORA'); assert.deepEqual(j.target_modules, ['q', 'v']); assert.equal(j.use_dora, true);
  const back = LoraConfig.fromPeftJson(j);
  assert.deepEqual(back.toPeftJson(), j);
  assert.throws(() => LoraConfig.fromPeftJson({ ...j, use_qalora: true }), /use_qalora/);
  assert.throws(() => LoraConfig.fromPeftJson({ ...j, peft_type: 'IA3' }), /only LORA/);
});

test('target matching follows peft: suffix lists, full-match regex, layers, exclude, patterns', () => {
  const cfg = (o: ConstructorParameters<typeof LoraConfig>[0]) => new LoraConfig(o);
  assert.equal(checkTargetModule(cfg({ targetModules: ['q_proj'] }), 'model.layers.0.self_attn.q_proj'), 'match');
  assert.equal(checkTargetModule(cfg({ targetModules: ['attn'] }), 'h.0.c_attn'), 'no'); // dotted suffix only
  assert.equal(checkTargetModule(cfg({ targetModules: ['h.0.c_attn'] }), 'h.0.c_attn'), 'match');
  assert.equal(checkTargetModule(cfg({ targetModules: '.*q_proj' }), 'a.q_proj'), 'match');
  assert.equal(checkTargetModule(cfg({ targetModules: 'q_proj' }), 'a.q_proj'), 'no'); // re.fullmatch
  const lt = cfg({ targetModules: ['q_proj'], layersToTransform: [1], layersPattern: 'layers' });
  assert.equal(checkTargetModule(lt, 'model.layers.1.attn.q_proj'), 'match');
  assert.equal(checkTargetModule(lt, 'model.layers.0.attn.q_proj'), 'no');
  assert.equal(checkTargetModule(cfg({ targetModules: ['q_proj'], layersToTransform: 0 }), 'model.layers.0.attn.q_proj'), 'match');
  assert.equal(checkTargetModule(cfg({ targetModules: ['q_proj'], excludeModules: ['q_proj'] }), 'a.q_proj'), 'excluded');
  assert.equal(checkTargetModule(cfg({ targetModules: ['dense'], modulesToSave: ['pooler'] }), 'bert.pooler.dense'), 'excluded');
  const pc = cfg({ r: 8, loraAlpha: 16, rankPattern: { 'layers.1.q_proj': 2, o_proj: 4 }, alphaPattern: { '.*v_proj': 3 } });
  assert.equal(rankFor(pc, 'model.layers.1.q_proj'), 2);
  assert.equal(rankFor(pc, 'model.layers.11.q_proj'), 8);
  assert.equal(rankFor(pc, 'model.layers.0.o_proj'), 4);
  assert.equal(alphaFor(pc, 'a.v_proj'), 3);
  assert.equal(alphaFor(pc, 'a.q_proj'), 16);
});

test('getPeftModel on a toy module: names, freezing, bias, printTrainableParameters, unload', () => {
  const toy = new Toy();
  assert.deepEqual(inspectModules(toy).map((m) => m.name), ['layers.0.q_proj', 'layers.0.c_attn', 'layers.0.out', 'layers.1.q_proj', 'layers.1.c_attn', 'layers.1.out', 'head']);
  const { result: pm } = captureWarnings(() => getPeftModel(toy, new LoraConfig({ r: 2, targetModules: ['q_proj', 'c_attn'], bias: 'lora_only', layersToTransform: [1], layersPattern: 'layers' })));
  const names = [...pm.namedParameters()].map(([n]) => n);
  assert.ok(names.includes('base_model.model.layers.1.q_proj.base_layer.weight'));
  assert.ok(names.includes('base_model.model.layers.1.q_proj.lora_A.default.weight'));
  assert.ok(names.includes('base_model.model.layers.1.c_attn.lora_B.default.weight'));
  assert.ok(names.includes('base_model.model.layers.0.q_proj.weight'), 'layer 0 untouched');
  const trainable = [...pm.namedParameters()].filter(([, p]) => p.requiresGrad).map(([n]) => n).sort();
  assert.deepEqual(trainable, [
    'base_model.model.layers.1.c_attn.base_layer.bias', 'base_model.model.layers.1.c_attn.lora_A.default.weight', 'base_model.model.layers.1.c_attn.lora_B.default.weight',
    'base_model.model.layers.1.q_proj.base_layer.bias', 'base_model.model.layers.1.q_proj.lora_A.default.weight', 'base_model.model.layers.1.q_proj.lora_B.default.weight',
  ]);
  const [t, a] = pm.getNbTrainableParameters();
  assert.equal(t, 2 * 6 + 4 * 2 + 4 + 2 * 6 + 5 * 2 + 5);
  assert.equal(pm.trainableParametersString(), `trainable params: ${t} || all params: ${a} || trainable%: ${(100 * t / a).toFixed(4)}`);
  // "all-linear" never takes the output head
  const pm2 = captureWarnings(() => getPeftModel(new Toy(), new LoraConfig({ targetModules: 'all-linear' }))).result;
  assert.equal(pm2.loraLayers().length, 6);
  assert.ok(!pm2.loraLayers().some(([n]) => n === 'head'));
  const unloaded = pm.unload();
  assert.ok(!inspectModules(unloaded).some((m) => m.type.startsWith('LoraLinear')));
});

test('printTrainableParameters formats thousands as peft', () => {
  class Big extends Module {
    constructor() { super(); this.registerModule('q', new Linear(100, 100, true, new Rng(1))); this.registerModule('head', new Linear(100, 10, true, new Rng(1))); }
  }
  const pm = getPeftModel(new Big(), new LoraConfig({ r: 8, targetModules: ['q'] }));
  // 10100 + 1010 base, 1600 LoRA
  assert.equal(pm.trainableParametersString(), 'trainable params: 1,600 || all params: 12,710 || trainable%: 12.5885');
});

test('LoRA and DoRA over a 4-bit base (Linear4bit): forward, merge re-quantizes, parameter count', async () => {
  const { Linear4bit } = await import('../src/quant/index.js');
  const rng = new Rng(11);
  const I = 64, O = 8;
  const w = Float32Array.from({ length: I * O }, () => rng.normal() * 0.1);
  for (const dora of [false, true]) {
    const q = Linear4bit.fromWeight(w, I, O, tensor(Float32Array.from({ length: O }, (_, i) => 0.01 * i), [O]));
    const layer = new LoraLinear(q, 'default', new LoraConfig({ r: 2, loraAlpha: 4, useDora: dora }), 2, 4, rng);
    randomizeLora(layer, rng);
    const x = tensor(Float32Array.from({ length: 2 * I }, () => rng.normal()), [2, I]);
    const Wd = q.dequantizeWeight().toArray();
    const A = layer.loraA.get('default')!.weight.toArray(), B = layer.loraB.get('default')!.weight.toArray();
    const Wp = Wd.map((v, k) => { const o = Math.floor(k / I), i = k % I; return v + 2 * (B[o * 2] * A[i] + B[o * 2 + 1] * A[I + i]); });
    if (dora) {
      const m = layer.loraMagnitudeVector.get('default')!.weight.toArray();
      for (let o = 0; o < O; o++) {
        let n = 0; for (let i = 0; i < I; i++) n += Wp[o * I + i] ** 2;
        for (let i = 0; i < I; i++) Wp[o * I + i] *= m[o] / Math.sqrt(n);
      }
    }
    const y = noGrad(() => layer.forward(x).toArray());
    for (let r = 0; r < 2; r++) for (let o = 0; o < O; o++) {
      let v = 0.01 * o; for (let i = 0; i < I; i++) v += x.data[r * I + i] * Wp[o * I + i];
      assert.ok(Math.abs(y[r * O + o] - v) < 1e-4, `${dora ? 'DoRA ' : ''}4-bit y[${r},${o}] ${y[r * O + o]} vs ${v}`);
    }
    captureWarnings(() => layer.merge());
    const requant = Linear4bit.fromWeight(Float32Array.from(Wp), I, O).dequantizeWeight().toArray();
    const merged = q.dequantizeWeight().toArray();
    for (let k = 0; k < merged.length; k++) assert.ok(Math.abs(merged[k] - requant[k]) < 1e-5, `merged weight [${k}]`);
    captureWarnings(() => layer.unmerge());
    assert.ok(!layer.merged);
  }
  // peft counts a 4-bit weight as in*out parameters
  class M extends Module { constructor() { super(); this.registerModule('q', Linear4bit.fromWeight(w, I, O)); } }
  const pm = getPeftModel(new M(), new LoraConfig({ r: 2, targetModules: ['q'] }));
  assert.deepEqual(pm.getNbTrainableParameters(), [2 * I + O * 2, I * O + 2 * I + O * 2]);
});
