// Decoder-only architectures against transformers 5.17 + peft 0.21 (fixtures from
// scripts/make_decoder_fixtures.py): Qwen3, Gemma 1/2/3, Phi-3, Phi, GPT-NeoX, GPT-J, Falcon
// (new, alibi, sequential), OPT (pre- and post-norm). Logits and loss on a left- and a
// right-padded batch, with peft's adapter loaded, merged; greedy and beam ids with the KV cache;
// peft's default target modules by model_type.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors } from '../src/io/safetensors.js';
import { Rng, memoryStats, noGrad, tensor, tidy } from '../src/tensor/index.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { AutoModelForCausalLM, AutoModelForSequenceClassification, type HFModel } from '../src/models/index.js';
import { LoraConfig, PeftModel, getPeftModel, captureWarnings, inspectModules } from '../src/peft/index.js';
import { generate } from '../src/generate/index.js';
import { AdamW } from '../src/train/optim.js';
import { alibiBias } from '../src/models/attention.js';
import { minimalTargetModules } from '../src/peft/targets.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIX = [path.join(here, 'fixtures', 'decoders'), path.join(here, '..', '..', 'test', 'fixtures', 'decoders'), path.resolve('test/fixtures/decoders')]
  .find((p) => fs.existsSync(p))!;
const CASES = fs.readdirSync(FIX).filter((n) => fs.existsSync(path.join(FIX, n, 'config.json'))).sort();

interface GenCase { input_ids: number[][]; attention_mask: number[][]; sequences: number[][]; settings: Record<string, number> }
interface Meta {
  model_type: string; architecture: string; peft_default_targets: string[] | string | null; trainable: [number, number];
  generate: Record<'greedy' | 'beam' | 'greedy_lora', GenCase>; adapter_targets: string[]; linear_names: string[];
}

function relErr(got: Float32Array, want: Float32Array): number {
  let maxDiff = 0, maxAbs = 0;
  for (let i = 0; i < want.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(got[i] - want[i]));
    maxAbs = Math.max(maxAbs, Math.abs(want[i]));
  }
  return maxDiff / Math.max(maxAbs, 1e-12);
}

function load(name: string): { model: HFModel; warnings: string[] } {
  const warnings: string[] = [];
  const model = AutoModelForCausalLM.fromPretrainedSync(path.join(FIX, name), { logger: (m) => warnings.push(m) });
  return { model, warnings };
}

type Fwd = { forward(i: { inputIds: Tensor; attentionMask?: Tensor; labels?: Tensor }): { logits: Tensor; loss?: Tensor } };

function logitsOf(model: Fwd, exp: Map<string, Tensor>, side: string, labels = false): { logits: Float32Array; loss?: number } {
  return tidy(() => noGrad(() => {
    const out = model.forward({
      inputIds: exp.get(`${side}_input_ids`)!, attentionMask: exp.get(`${side}_attention_mask`)!,
      labels: labels ? exp.get(`${side}_labels`)! : undefined,
    });
    return { logits: out.logits.toFloat32Array(), loss: out.loss?.item() };
  }));
}

const rows = (r: number[][]) => tensor(Int32Array.from(r.flat()), [r.length, r[0].length], { dtype: 'int32' });

function generated(model: Parameters<typeof generate>[0], c: GenCase, useCache = true): number[][] {
  const s = c.settings;
  const out = generate(model, rows(c.input_ids), {
    attentionMask: rows(c.attention_mask), maxNewTokens: s.max_new_tokens, numBeams: s.num_beams ?? 1,
    numReturnSequences: s.num_return_sequences ?? 1, eosTokenId: 2, padTokenId: 0, useCache,
  });
  const [n, w] = out.shape;
  return Array.from({ length: n }, (_, i) => Array.from(out.ints.subarray(i * w, (i + 1) * w)));
}

test('decoder fixtures are present and small', () => {
  assert.ok(CASES.length >= 14, `found ${CASES.length}`);
  let total = 0;
  const walk = (d: string): void => { for (const f of fs.readdirSync(d)) { const p = path.join(d, f); if (fs.statSync(p).isDirectory()) walk(p); else total += fs.statSync(p).size; } };
  walk(FIX);
  assert.ok(total < 2.2 * 1024 * 1024, `fixtures take ${total} bytes`);
});

for (const name of CASES) {
  const meta = JSON.parse(fs.readFileSync(path.join(FIX, name, 'expected.json'), 'utf8')) as Meta;
  const exp = readSafetensors(path.join(FIX, name, 'expected.safetensors'));

  test(`${name}: base, adapter and merged logits match transformers + peft (left and right padding)`, () => {
    const { model, warnings } = load(name);
    assert.deepEqual(warnings, [], 'a full checkpoint loads with no missing or unexpected keys');
    assert.equal(model.architecture, meta.architecture);
    for (const side of ['left', 'right']) {
      const { logits, loss } = logitsOf(model, exp, side, true);
      const e = relErr(logits, exp.get(`${side}_base`)!.data);
      assert.ok(e < 1e-4, `${name} ${side}: base logits rel err ${e}`);
      const lw = exp.get(`${side}_loss`)!.data[0];
      assert.ok(Math.abs(loss! - lw) / Math.abs(lw) < 1e-4, `${name} ${side}: loss ${loss} vs ${lw}`);
    }
    const pm = PeftModel.fromPretrainedSync(model, path.join(FIX, name, 'adapter'));
    for (const side of ['left', 'right']) {
      const got = logitsOf(pm as unknown as Fwd, exp, side).logits;
      assert.ok(relErr(exp.get(`${side}_lora`)!.data, exp.get(`${side}_base`)!.data) > 1e-2, 'the adapter changes the outputs');
      const e = relErr(got, exp.get(`${side}_lora`)!.data);
      assert.ok(e < 1e-4, `${name} ${side}: adapter logits rel err ${e}`);
    }
    const merged = pm.mergeAndUnload() as unknown as Fwd;
    for (const side of ['left', 'right']) {
      const e = relErr(logitsOf(merged, exp, side).logits, exp.get(`${side}_merged`)!.data);
      assert.ok(e < 1e-4, `${name} ${side}: merged logits rel err ${e}`);
    }
  });

  test(`${name}: greedy and beam search ids with the KV cache equal transformers'`, () => {
    const { model } = load(name);
    assert.deepEqual(generated(model, meta.generate.greedy), meta.generate.greedy.sequences, 'greedy');
    assert.deepEqual(generated(model, meta.generate.greedy, false), meta.generate.greedy.sequences, 'greedy without cache');
    assert.deepEqual(generated(model, meta.generate.beam), meta.generate.beam.sequences, 'beam');
    const pm = PeftModel.fromPretrainedSync(model, path.join(FIX, name, 'adapter'));
    assert.deepEqual(generated(pm as unknown as HFModel, meta.generate.greedy_lora), meta.generate.greedy_lora.sequences, 'greedy with adapter');
  });

  test(`${name}: peft's default targets, all-linear and the saved adapter's layout`, () => {
    const { model } = load(name);
    const names = [...new Set(inspectModules(model).filter((m) => m.type === 'Linear').map((m) => m.name.split('.').pop()!))].sort();
    assert.deepEqual(names, meta.linear_names, 'inspect lists the linear layers transformers has');
    const cfg = new LoraConfig({ r: 4, loraAlpha: 8, taskType: 'CAUSAL_LM' });
    if (meta.peft_default_targets === null) {
      assert.throws(() => captureWarnings(() => getPeftModel(model, cfg)), /specify `targetModules`/);
    } else {
      const pm = captureWarnings(() => getPeftModel(model, cfg)).result;
      assert.deepEqual([...(pm.activePeftConfig.targetModules as string[])].sort(), meta.peft_default_targets);
    }
    const { model: m2 } = load(name);
    const all = captureWarnings(() => getPeftModel(m2, new LoraConfig({ r: 4, loraAlpha: 8, targetModules: 'all-linear', taskType: 'CAUSAL_LM' }))).result;
    assert.deepEqual([...(all.activePeftConfig.targetModules as string[])].sort(), meta.adapter_targets, 'all-linear expands as peft does');
    const [trainable, total] = all.getNbTrainableParameters();
    assert.deepEqual([trainable, total], meta.trainable, 'trainable / all params as peft counts them');
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dec-adapter-'));
    try {
      all.savePretrained(tmp);
      const ours = readSafetensors(path.join(tmp, 'adapter_model.safetensors'));
      const theirs = readSafetensors(path.join(FIX, name, 'adapter', 'adapter_model.safetensors'));
      const shapes = (m: Map<string, Tensor>) => [...m].map(([k, t]) => `${k}:${t.shape.join('x')}`).sort();
      assert.deepEqual(shapes(ours), shapes(theirs));
    } finally { fs.rmSync(tmp, { recursive: true, force: true }); }
  });
}

// Adapters trained "by us" (random A and B), saved, with the merged model: reloaded here they
// give the same outputs; with PEFT_TS_EXPORT_DIR set they are kept for scripts/peft_check_ours.py
// (Python peft loads the adapter onto transformers' model, transformers loads the merged one).
test('our adapters and merged models of every decoder save and reload (exported for peft_check_ours.py)', () => {
  const keep = process.env.PEFT_TS_EXPORT_DIR;
  const root = keep ?? fs.mkdtempSync(path.join(os.tmpdir(), 'dec-export-'));
  const rng = new Rng(321);
  try {
    for (const name of CASES) {
      const exp = readSafetensors(path.join(FIX, name, 'expected.safetensors'));
      const ids = exp.get('left_input_ids')!;
      const run = (m: Fwd) => tidy(() => noGrad(() => m.forward({ inputIds: ids }).logits.toFloat32Array()));
      const pm = captureWarnings(() => getPeftModel(load(name).model, new LoraConfig({ r: 4, loraAlpha: 8, targetModules: 'all-linear', taskType: 'CAUSAL_LM' }), 'default', { rng })).result;
      for (const [, p] of pm.namedParameters()) if (p.requiresGrad) for (let i = 0; i < p.size; i++) p.data[i] += 0.3 * rng.normal();
      pm.eval();
      const out = path.join(root, name);
      fs.mkdirSync(out, { recursive: true });
      pm.savePretrained(path.join(out, 'adapter'));
      const ours = run(pm as unknown as Fwd);
      const again = PeftModel.fromPretrainedSync(load(name).model, path.join(out, 'adapter'));
      assert.ok(relErr(run(again as unknown as Fwd), ours) < 1e-6, `${name}: reloaded adapter`);
      const merged = pm.mergeAndUnload() as unknown as HFModel;
      merged.savePretrained(path.join(out, 'merged'));
      const reloaded = AutoModelForCausalLM.fromPretrainedSync(path.join(out, 'merged'), { logger: () => {} });
      assert.deepEqual(reloaded.loadingInfo!.missingKeys, [], `${name}: merged checkpoint complete`);
      assert.ok(relErr(run(reloaded), ours) < 1e-5, `${name}: saved merged model`);
      const savedKeys = [...readSafetensors(path.join(out, 'merged', 'model.safetensors')).keys()];
      const fixtureKeys = [...readSafetensors(path.join(FIX, name, 'model.safetensors')).keys()];
      assert.deepEqual(savedKeys.sort(), fixtureKeys.sort(), `${name}: saved under transformers' checkpoint names`);
      fs.writeFileSync(path.join(out, 'ours.json'), JSON.stringify({
        base_dir: path.resolve(path.join(FIX, name)), task: 'CAUSAL_LM', attn_implementation: name === 'falcon_alibi_lm' ? 'sdpa' : 'eager', input_ids: [...Array(ids.shape[0]).keys()].map((b) => Array.from(ids.ints.subarray(b * ids.shape[1], (b + 1) * ids.shape[1]))),
        shape: [ids.shape[0], ids.shape[1], ours.length / ids.size], logits: Array.from(ours), merged_logits: Array.from(ours),
      }));
      // SEQ_CLS: our classifier (saved as the base), a peft-default adapter with the score head trained in full.
      const cls = AutoModelForSequenceClassification.fromPretrainedSync(path.join(FIX, name), { numLabels: 3, logger: () => {}, rng });
      const clsDir = path.join(root, `${name}_seqcls`);
      cls.savePretrained(path.join(clsDir, 'base'));
      const cpm = captureWarnings(() => getPeftModel(cls, new LoraConfig({ r: 4, loraAlpha: 8, taskType: 'SEQ_CLS', targetModules: name.startsWith('phi3') ? ['qkv_proj'] : null }), 'default', { rng })).result;
      for (const [, p] of cpm.namedParameters()) if (p.requiresGrad) for (let i = 0; i < p.size; i++) p.data[i] += 0.3 * rng.normal();
      cpm.eval();
      cpm.savePretrained(path.join(clsDir, 'adapter'));
      const clsOurs = run(cpm as unknown as Fwd);
      const clsMerged = cpm.mergeAndUnload() as unknown as HFModel;
      clsMerged.savePretrained(path.join(clsDir, 'merged'));
      fs.writeFileSync(path.join(clsDir, 'ours.json'), JSON.stringify({
        base_dir: path.resolve(path.join(clsDir, 'base')), task: 'SEQ_CLS', attn_implementation: name === 'falcon_alibi_lm' ? 'sdpa' : 'eager',
        input_ids: [...Array(ids.shape[0]).keys()].map((b) => Array.from(ids.ints.subarray(b * ids.shape[1], (b + 1) * ids.shape[1]))),
        shape: [ids.shape[0], 3], logits: Array.from(clsOurs), merged_logits: Array.from(clsOurs),
      }));
    }
  } finally { if (!keep) fs.rmSync(root, { recursive: true, force: true }); }
});

// Training: the new blocks differentiate (soft-capping, partial / interleaved RoPE, fused
// projections, ALiBi): a LoRA gradient agrees with a central difference, a few AdamW steps
// lower the loss, and gradient checkpointing gives the same loss and gradients.
for (const name of CASES) {
  test(`${name}: LoRA trains (finite differences, AdamW steps, gradient checkpointing)`, () => {
    const exp = readSafetensors(path.join(FIX, name, 'expected.safetensors'));
    const inputs = { inputIds: exp.get('right_input_ids')!, attentionMask: exp.get('right_attention_mask')!, labels: exp.get('right_labels')! };
    const rng = new Rng(5);
    const base = load(name).model;
    // No dropout (OPT's config has 0.1), so that finite differences see the same function.
    for (const k of Object.keys(base.config.raw)) if (/dropout|pdrop/.test(k) && typeof base.config.raw[k] === 'number') base.config.raw[k] = 0;
    const pm = captureWarnings(() => getPeftModel(base, new LoraConfig({ r: 4, loraAlpha: 8, targetModules: 'all-linear', taskType: 'CAUSAL_LM', initLoraWeights: 'gaussian' }), 'default', { rng })).result;
    const params = [...pm.namedParameters()].filter(([, p]) => p.requiresGrad);
    for (const [n, p] of params) if (n.includes('lora_B')) for (let i = 0; i < p.size; i++) p.data[i] = 0.05 * rng.normal();
    pm.train();
    const lossOf = (ckpt = false, fused = false): number => tidy(() => {
      (pm.getBaseModel() as HFModel).gradientCheckpointing = ckpt;
      const out = pm.forward({ ...inputs, returnLogits: !fused });
      out.loss!.backward();
      return out.loss!.item();
    });
    const zero = () => { for (const [, p] of params) p.grad = null; };
    zero();
    const l0 = lossOf();
    const grads = new Map(params.map(([n, p]) => [n, Float32Array.from(p.grad!.data)]));
    // central differences on the largest-gradient entries of two LoRA weights (float32: loose tolerance)
    for (const [n, p] of [params[0], params[params.length - 1]]) {
      const g = grads.get(n)!;
      let k = 0;
      for (let i = 1; i < g.length; i++) if (Math.abs(g[i]) > Math.abs(g[k])) k = i;
      const h = 1e-2, x = p.data[k];
      const f = (v: number) => { p.data[k] = v; return tidy(() => noGrad(() => pm.forward(inputs).loss!.item())); };
      const fd = (f(x + h) - f(x - h)) / (2 * h);
      p.data[k] = x;
      assert.ok(Math.abs(fd - g[k]) <= 0.03 * Math.abs(g[k]) + 1e-4, `${name} ${n}[${k}]: grad ${g[k]} vs finite difference ${fd}`);
    }
    zero();
    const l1 = lossOf(true, true);
    assert.ok(Math.abs(l1 - l0) < 1e-5 * Math.abs(l0), `${name}: checkpointed + fused-head loss ${l1} vs ${l0}`);
    for (const [n, p] of params) assert.ok(relErr(p.grad!.data, grads.get(n)!) < 1e-4, `${name}: checkpointed gradient of ${n}`);
    const opt = new AdamW(params, { lr: 1e-2 });
    let last = l0;
    for (let s = 0; s < 4; s++) { zero(); last = lossOf(); opt.step(); }
    zero();
    assert.ok(lossOf() < l0 - 0.05, `${name}: loss ${l0} -> ${last} after AdamW steps`);
  });
}

test('ALiBi slopes and positions equal transformers\' build_alibi_tensor (power-of-2 and other head counts)', () => {
  const fx = JSON.parse(fs.readFileSync(path.join(FIX, 'alibi.json'), 'utf8')) as { attention_mask: number[][]; cases: Record<string, number[]> };
  const mask = rows(fx.attention_mask);
  for (const [h, want] of Object.entries(fx.cases)) {
    const heads = Number(h);
    const got = alibiBias(null, mask, 2, heads, 1, 7, 7, 1);
    assert.deepEqual(got.shape, [2, heads, 1, 7]);
    assert.ok(relErr(got.data, Float32Array.from(want)) < 1e-7, `${heads} heads`);
  }
});

test('peft condenses 20+ targets to the distinguishing suffixes (_find_minimal_target_modules)', () => {
  const targets = [...Array(100).keys()].flatMap((i) => [`model.decoder.layers.${i}.self_attn.q_proj`, `model.decoder.layers.${i}.self_attn.v_proj`]);
  const others = [...Array(100).keys()].map((i) => `model.encoder.layers.${i}.self_attn.k_proj`);
  assert.deepEqual(minimalTargetModules(targets, others).sort(), ['q_proj', 'v_proj']);
  // a suffix another module shares is not enough: the shortest distinguishing one is kept (as peft 0.21 gives)
  const t2 = [...Array(20).keys()].map((i) => `model.decoder.layers.${i}.q_proj`);
  const o2 = [...Array(20).keys()].map((i) => `model.encoder.layers.${i}.q_proj`);
  assert.deepEqual(minimalTargetModules(t2, o2).sort(), t2.map((t) => t.slice('model.'.length)).sort());
});

test('decoder configs transformers cannot run, or that break an assumption, are refused clearly', () => {
  const cfg = (name: string) => JSON.parse(fs.readFileSync(path.join(FIX, name, 'config.json'), 'utf8')) as Record<string, unknown>;
  const build = (c: Record<string, unknown>) => AutoModelForCausalLM.fromConfig(c);
  assert.throws(() => build({ ...cfg('falcon_lm'), parallel_attn: false }), /new_decoder_architecture without parallel_attn/);
  assert.throws(() => build({ ...cfg('falcon_lm'), num_kv_heads: 3 }), /not a multiple of num_kv_heads 3/);
  assert.throws(() => build({ ...cfg('gemma2_lm'), use_bidirectional_attention: true }), /use_bidirectional_attention is not supported/);
  assert.throws(() => build({ ...cfg('gemma3_text_lm'), layer_types: ['full_attention'] }), /layer_types has 1 entries for 3 layers/);
  assert.throws(() => build({ ...cfg('phi_lm'), hidden_size: 24, rope_parameters: { rope_type: 'default', partial_rotary_factor: 0.5 } }), /rotary dim 3 .* must be even/);
  const opt = build(cfg('opt_lm'));
  assert.throws(() => opt.forward({ inputIds: tensor(new Int32Array(65).fill(5), [1, 65], { dtype: 'int32' }) }), /outside OPT's 64 positions/);
  // Without a saved head_dim, each config class's default applies (Qwen3: 128, Gemma: 256).
  const q = cfg('qwen3_lm');
  delete q.head_dim;
  assert.equal((build(q) as unknown as { headDim: number }).headDim, 128);
});

// Sequence classification: the LM fixture's body with a 3-label score head (seqcls/score.safetensors),
// transformers' logits and loss on both paddings, with peft's SEQ_CLS adapter (default targets,
// score in modules_to_save), and the trainable count of a fresh SEQ_CLS adapter.
for (const name of CASES.filter((n) => fs.existsSync(path.join(FIX, n, 'seqcls')))) {
  test(`${name}: sequence classification head, with and without peft's SEQ_CLS adapter`, () => {
    const dir = path.join(FIX, name, 'seqcls');
    const exp = readSafetensors(path.join(FIX, name, 'expected.safetensors'));
    for (const [k, v] of readSafetensors(path.join(dir, 'expected.safetensors'))) exp.set(k, v);
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as { architecture: string; trainable: [number, number] };
    const load3 = () => {
      const m = AutoModelForSequenceClassification.fromPretrainedSync(path.join(FIX, name), { numLabels: 3, logger: () => {} });
      assert.deepEqual(m.loadingInfo!.newlyInitialized, ['score.weight']);
      m.getSubmodule('score').getParameter('weight')!.data.set(readSafetensors(path.join(dir, 'score.safetensors')).get('score.weight')!.data);
      return m;
    };
    const model = load3();
    assert.equal(model.architecture, meta.architecture);
    for (const side of ['left', 'right']) {
      const { logits, loss } = logitsOf(model, exp, side, true);
      assert.ok(relErr(logits, exp.get(`${side}_base`)!.data) < 1e-4, `${side}: logits ${Array.from(logits)} vs ${Array.from(exp.get(`${side}_base`)!.data)}`);
      const lw = exp.get(`${side}_loss`)!.data[0];
      assert.ok(Math.abs(loss! - lw) / Math.abs(lw) < 1e-4, `${side}: loss ${loss} vs ${lw}`);
    }
    const pm = PeftModel.fromPretrainedSync(model, path.join(dir, 'adapter'));
    for (const side of ['left', 'right']) {
      const got = logitsOf(pm as unknown as Fwd, exp, side).logits;
      assert.ok(relErr(exp.get(`${side}_lora`)!.data, exp.get(`${side}_base`)!.data) > 1e-2, 'the adapter changes the outputs');
      assert.ok(relErr(got, exp.get(`${side}_lora`)!.data) < 1e-4, `${side}: adapter logits ${Array.from(got)} vs ${Array.from(exp.get(`${side}_lora`)!.data)}`);
    }
    const cfg = new LoraConfig({ r: 4, loraAlpha: 8, taskType: 'SEQ_CLS', targetModules: name.startsWith('phi3') ? ['qkv_proj'] : null });
    const fresh = captureWarnings(() => getPeftModel(load3(), cfg)).result;
    assert.deepEqual(fresh.getNbTrainableParameters(), meta.trainable);
  });
}

test('dispose releases every decoder\'s weights and RoPE tables (Gemma 3: one per layer type)', () => {
  for (const name of CASES) {
    const baseline = memoryStats().liveBytes;
    const m = load(name).model;
    tidy(() => noGrad(() => { m.forward({ inputIds: tensor(Int32Array.from([1, 5, 9, 3]), [1, 4], { dtype: 'int32' }) }); }));
    m.dispose();
    assert.equal(memoryStats().liveBytes, baseline, name);
  }
});
