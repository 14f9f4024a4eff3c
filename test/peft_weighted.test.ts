// Adapter composition against peft 0.21 (test/fixtures/peft_weighted, made by
// scripts/peft_weighted_fixtures.py): add_weighted_adapter for every deterministic
// combination type (A and B exactly; for the *svd types B A * scaling, SVD signs being
// arbitrary), several active adapters, enable/disable_adapter_layers, get_layer_status and
// get_model_status.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { PeftModel, captureWarnings, isLoraLayer, type CombinationType } from '../src/peft/index.js';
import { dareLinear, dareTies, svd } from '../src/peft/merge-utils.js';
import { tensor } from '../src/tensor/ops/basic.js';
import { noGrad } from '../src/tensor/tensor.js';
import { Rng } from '../src/tensor/random.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..', 'test/fixtures/peft_weighted');

function load(name: string) {
  const dir = path.join(ROOT, name);
  const exp = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8'));
  const base = AutoModelForCausalLM.fromPretrainedSync(path.join(dir, 'base'), { logger: () => {} });
  const pm = PeftModel.fromPretrainedSync(base, path.join(dir, 'a'), { adapterName: 'a' });
  pm.loadAdapter(path.join(dir, 'b'), 'b');
  pm.loadAdapter(path.join(dir, 'c'), 'c');
  pm.eval();
  return { pm, exp };
}

function logits(pm: PeftModel, ids: number[][]): Float32Array {
  return noGrad(() => pm.forward({ inputIds: tensor(Int32Array.from(ids.flat()), [ids.length, ids[0].length], { dtype: 'int32' }) }).logits.data.slice());
}

function close(got: ArrayLike<number>, want: number[], tol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / Math.max(1, Math.abs(want[i])));
  assert.ok(worst <= tol, `${what}: max error ${worst}`);
}

function layerMap(pm: PeftModel) {
  return new Map(pm.loraLayers());
}

for (const name of ['gpt2', 'llama']) {
  test(`${name}: addWeightedAdapter equals peft for linear, cat, svd (and svdRank), ties, ties_svd, magnitude_prune(_svd)`, () => {
    const { pm, exp } = load(name);
    for (const [cname, c] of Object.entries(exp.combos) as [string, { adapters: string[]; weights: number[]; combination_type: CombinationType; kwargs: Record<string, unknown>; r: number; lora_alpha: number; target_modules: string[]; layers: Record<string, { A?: number[]; B?: number[]; delta?: number[]; A_shape: number[]; B_shape: number[] }> }][]) {
      const kw = c.kwargs;
      const newName = `m_${cname}`;
      captureWarnings(() => pm.addWeightedAdapter(c.adapters, c.weights, newName, c.combination_type, {
        svdRank: kw.svd_rank as number | undefined, svdClamp: kw.svd_clamp as number | undefined,
        density: kw.density as number | undefined, majoritySignMethod: kw.majority_sign_method as 'total' | undefined,
      }));
      const cfg = pm.peftConfig.get(newName)!;
      assert.equal(cfg.r, c.r, `${cname} r`);
      assert.equal(cfg.loraAlpha, c.lora_alpha, `${cname} alpha`);
      assert.deepEqual([...(cfg.targetModules as string[])].sort(), c.target_modules, `${cname} targets`);
      const layers = layerMap(pm);
      const withNew = [...layers].filter(([, l]) => l.adapterNames().includes(newName)).map(([p]) => p).sort();
      assert.deepEqual(withNew, Object.keys(c.layers).sort(), `${cname}: layers holding the new adapter`);
      for (const [lname, rec] of Object.entries(c.layers)) {
        const l = layers.get(lname)!;
        assert.ok(isLoraLayer(l));
        if (rec.A) {
          const A = 'loraA' in l ? l.loraA.get(newName)!.weight : l.loraEmbeddingA.getParameter(newName)!;
          const B = 'loraB' in l ? l.loraB.get(newName)!.weight : l.loraEmbeddingB.getParameter(newName)!;
          assert.deepEqual(A.shape, rec.A_shape);
          assert.deepEqual(B.shape, rec.B_shape);
          close(A.data, rec.A!, 2e-6, `${name} ${cname} ${lname} A`);
          close(B.data, rec.B!, 2e-6, `${name} ${cname} ${lname} B`);
          assert.equal(A.requiresGrad, false, 'the new adapter is frozen');
        } else {
          const d = l.getDeltaWeight(newName);
          close(d.data, rec.delta!, 2e-5, `${name} ${cname} ${lname} delta`);
          d.dispose();
        }
      }
    }
    // The combination is a usable adapter: activating it changes the outputs.
    pm.setAdapter('m_svd');
    assert.deepEqual(pm.activeAdapters, ['m_svd']);
  });

  test(`${name}: several active adapters sum their outputs; layer and model status as peft reports them`, () => {
    const { pm, exp } = load(name);
    pm.setAdapter(['a', 'b']);
    close(logits(pm, exp.input_ids), exp.active_ab, 2e-5, 'logits with a + b active');
    const ls = pm.getLayerStatus();
    assert.deepEqual(ls.map((s) => ({
      name: s.name, module_type: s.moduleType, enabled: s.enabled, active_adapters: s.activeAdapters, merged_adapters: s.mergedAdapters,
      requires_grad: s.requiresGrad, available_adapters: s.availableAdapters, devices: s.devices, quantization_backend: s.quantizationBackend,
    })).sort((x, y) => x.name.localeCompare(y.name)), [...exp.layer_status_ab].sort((x: { name: string }, y: { name: string }) => x.name.localeCompare(y.name)));
    const snake = (m: ReturnType<PeftModel['getModelStatus']>) => ({
      base_model_type: m.baseModelType, adapter_model_type: m.adapterModelType, peft_types: m.peftTypes, trainable_params: m.trainableParams,
      total_params: m.totalParams, num_adapter_layers: m.numAdapterLayers, enabled: m.enabled, active_adapters: m.activeAdapters,
      merged_adapters: m.mergedAdapters, requires_grad: m.requiresGrad, available_adapters: m.availableAdapters, devices: m.devices,
      quantization_backend: m.quantizationBackend,
    });
    // peft loads adapters frozen unless is_trainable; the fixture made them in training mode.
    for (const n of ['a', 'b']) for (const [, l] of pm.loraLayers()) for (const p of l.adapterParameters(n)) p.requiresGrad = true;
    assert.deepEqual(snake(pm.getModelStatus()), exp.model_status_ab);

    pm.disableAdapterLayers();
    close(logits(pm, exp.input_ids), exp.disabled_layers, 2e-5, 'logits with adapter layers disabled');
    assert.deepEqual(snake(pm.getModelStatus()), exp.model_status_disabled);
    pm.enableAdapterLayers();
    close(logits(pm, exp.input_ids), exp.active_ab, 2e-5, 'enabled again');
    pm.mergeAdapter(['a']);
    assert.deepEqual(snake(pm.getModelStatus()), exp.model_status_merged_a);
    pm.unmergeAdapter();
    // The disableAdapter scope gives the base output and restores the adapters after.
    const off = pm.disableAdapter(() => logits(pm, exp.input_ids));
    close(off, exp.disabled_layers, 2e-5, 'disableAdapter scope');
    close(logits(pm, exp.input_ids), exp.active_ab, 2e-5, 'after the scope');
  });
}

test('addWeightedAdapter: bad input gets clear errors; an existing name is left alone (as peft)', () => {
  const { pm } = load('gpt2');
  assert.throws(() => pm.addWeightedAdapter(['a', 'zz'], [1, 1], 'x'), /Adapter zz does not exist/);
  assert.throws(() => pm.addWeightedAdapter(['a', 'c'], [1, 1], 'x', 'linear'), /same r value/);
  assert.throws(() => pm.addWeightedAdapter(['a', 'b'], [1], 'x', 'linear'), /one finite weight per adapter/);
  assert.throws(() => pm.addWeightedAdapter(['a', 'b'], [1, 1], 'x', 'ties'), /needs density/);
  assert.throws(() => pm.addWeightedAdapter(['a', 'b'], [1, 1], 'x', 'bogus' as CombinationType), /Invalid combination_type/);
  assert.ok(!pm.peftConfig.has('x'));
  const before = pm.peftConfig.get('a')!;
  pm.addWeightedAdapter(['b'], [1], 'a', 'linear');
  assert.equal(pm.peftConfig.get('a'), before);
  assert.throws(() => pm.setAdapter(['a', 'nope']), /Adapter nope not found/);
  // dare_linear at density 1 prunes nothing: it is 'linear'; dare_ties_svd runs and gives a rank-4 adapter.
  captureWarnings(() => pm.addWeightedAdapter(['a', 'b'], [0.5, 0.8], 'd1', 'dare_linear', { density: 1 }));
  pm.addWeightedAdapter(['a', 'b'], [0.5, 0.8], 'l1', 'linear');
  pm.addWeightedAdapter(['a', 'b'], [0.5, 0.8], 'dts', 'dare_ties_svd', { density: 0.5, rng: new Rng(1) });
  assert.equal(pm.peftConfig.get('dts')!.r, 4);
  for (const [, l] of pm.loraLayers()) {
    if (!('loraA' in l) || !l.loraA.has('d1')) continue;
    assert.deepEqual(l.loraA.get('d1')!.weight.data, l.loraA.get('l1')!.weight.data);
    assert.deepEqual(l.loraB.get('d1')!.weight.data, l.loraB.get('l1')!.weight.data);
  }
});

test('DARE: random pruning keeps about density of the values, rescaled by 1/density; ties keeps the majority sign', () => {
  const n = 20000, t = new Float32Array(n).map((_, i) => (i % 7) - 3 + 0.5);
  const out = dareLinear([t], [1], 0.3, new Rng(1));
  let kept = 0;
  for (let i = 0; i < n; i++) if (out[i] !== 0) { kept++; assert.ok(Math.abs(out[i] - t[i] / 0.3) < 1e-5); }
  assert.ok(Math.abs(kept / n - 0.3) < 0.02, `kept ${kept / n}`);
  // Opposite signs everywhere: dare_ties never averages across signs (disjoint merge).
  const pos = new Float32Array(1000).fill(2), neg = new Float32Array(1000).fill(-1);
  const tiesOut = dareTies([pos, neg], [1, 1], 0.9, 'total', new Rng(2));
  assert.ok(tiesOut.every((v) => v === 0 || Math.abs(v - 2 / 0.9) < 1e-5 || Math.abs(v + 1 / 0.9) < 1e-5));
  assert.ok(tiesOut.filter((v) => v > 0).length > 800);
  // With density >= 1 nothing is pruned (peft warns).
  captureWarnings(() => assert.deepEqual(dareLinear([t], [2], 1, new Rng(3)), t.map((v) => 2 * v)));
  assert.throws(() => dareLinear([t], [1], -0.1), /Density should be >= 0/);
  // The seeded rng makes dare combinations reproducible.
  assert.deepEqual(dareLinear([t], [1], 0.5, new Rng(9)), dareLinear([t], [1], 0.5, new Rng(9)));
});

test('svdClamp: the SVD factors are clamped to the quantile of their values', () => {
  const { pm } = load('gpt2');
  pm.addWeightedAdapter(['a', 'c'], [1, 0.5], 'clamped', 'svd', { svdClamp: 0.8 });
  pm.addWeightedAdapter(['a', 'c'], [1, 0.5], 'free', 'svd');
  for (const [, l] of pm.loraLayers()) {
    if (!('loraA' in l) || !l.loraA.has('clamped')) continue;
    const vals = [...l.loraB.get('clamped')!.weight.data, ...l.loraA.get('clamped')!.weight.data];
    const free = [...l.loraB.get('free')!.weight.data, ...l.loraA.get('free')!.weight.data];
    const hi = Math.max(...vals.map(Math.abs));
    assert.ok(hi < Math.max(...free.map(Math.abs)), 'something was clamped');
    assert.ok(vals.filter((v) => Math.abs(v) >= hi - 1e-7).length > 1, 'values pile up at the bound');
  }
});

test('svd: reconstructs the matrix, descending singular values (tall and wide)', () => {
  const r = new Rng(4);
  for (const [m, n] of [[7, 4], [3, 9]]) {
    const a = Float64Array.from({ length: m * n }, () => r.normal());
    const f = svd(a, m, n);
    for (let j = 1; j < f.k; j++) assert.ok(f.s[j - 1] >= f.s[j]);
    for (let i = 0; i < m; i++) for (let c = 0; c < n; c++) {
      let s = 0;
      for (let j = 0; j < f.k; j++) s += f.u[i * f.k + j] * f.s[j] * f.vt[j * n + c];
      assert.ok(Math.abs(s - a[i * n + c]) < 1e-10);
    }
  }
});
