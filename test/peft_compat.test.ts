// Compatibility with Python peft 0.21: adapters saved by peft (scripts/peft_make_fixtures.py)
// load here and give peft's outputs; adapters saved here have peft's keys, shapes and config keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng, tensor, tidy, noGrad } from '../src/tensor/index.js';
import { AutoModelForCausalLM, AutoModelForSequenceClassification } from '../src/models/index.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { LoraConfig, PeftModel, getPeftModel, captureWarnings } from '../src/peft/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = [path.join(here, 'fixtures', 'peft'), path.join(here, '..', '..', 'test', 'fixtures', 'peft'), path.resolve('test/fixtures/peft')]
  .find((p) => fs.existsSync(p))!;

interface Expected {
  input_ids: number[][]; shape: number[]; base: number[]; lora: number[]; disabled: number[];
  reloaded: number[]; merged: number[]; fresh_trainable: string; loaded_trainable: string; second?: number[];
}

const CASES: Record<string, 'CAUSAL_LM' | 'SEQ_CLS'> = {
  gpt2_lora: 'CAUSAL_LM', gpt2_dora: 'CAUSAL_LM', bert_seqcls: 'SEQ_CLS', llama_rslora: 'CAUSAL_LM', llama_regex_dora: 'CAUSAL_LM',
  gpt2_emb: 'CAUSAL_LM', llama_emb_dora: 'CAUSAL_LM',
};

function load(name: string) {
  const dir = path.join(ROOT, name);
  const exp = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as Expected;
  const auto = CASES[name] === 'SEQ_CLS' ? AutoModelForSequenceClassification : AutoModelForCausalLM;
  const base = () => captureWarnings(() => auto.fromPretrainedSync(path.join(dir, 'base'))).result;
  return { dir, exp, base, adapter: path.join(dir, 'adapter') };
}

function run(model: { forward(i: { inputIds: ReturnType<typeof tensor> }): { logits: ReturnType<typeof tensor> } }, ids: number[][]): Float32Array {
  return tidy(() => noGrad(() => {
    const x = tensor(Int32Array.from(ids.flat()), [ids.length, ids[0].length]);
    return model.forward({ inputIds: x }).logits.toFloat32Array();
  }));
}

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (1 + Math.abs(b[i])));
  assert.ok(worst <= tol, `${what}: max rel diff ${worst.toExponential(2)} > ${tol}`);
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i] - b[i]));
  return w;
}

for (const name of Object.keys(CASES)) {
  test(`${name}: peft adapter loads and reproduces peft's outputs`, () => {
    const { exp, base, adapter } = load(name);
    const model = base();
    close(run(model, exp.input_ids), exp.base, 1e-4, 'base model');
    const pm = PeftModel.fromPretrainedSync(model, adapter);
    const out = run(pm, exp.input_ids);
    assert.ok(maxDiff(exp.lora, exp.base) > 1e-2, 'fixture adapter must change the outputs');
    close(out, exp.lora, 1e-4, 'with adapter');
    // loaded for inference: the count matches peft's (0 trainable unless bias="all")
    assert.equal(pm.trainableParametersString().split('\n')[0], exp.loaded_trainable);
    if (exp.loaded_trainable.startsWith('trainable params: 0 ')) assert.match(pm.trainableParametersString(), /isTrainable: true/);
    close(pm.disableAdapter(() => run(pm, exp.input_ids)), exp.disabled, 1e-4, 'adapter disabled');
    close(run(pm, exp.input_ids), exp.lora, 1e-4, 'adapter re-enabled');
    // merge / unmerge
    // merging into a tied embedding also changes the tied lm head (peft warns): then the merged
    // outputs are peft's merged ones, not the unmerged ones
    const tiedMerge = maxDiff(exp.merged, exp.lora) > 1e-3;
    pm.mergeAdapter();
    close(run(pm, exp.input_ids), tiedMerge ? exp.merged : out, tiedMerge ? 1e-4 : 1e-5, 'merged vs unmerged');
    pm.unmergeAdapter();
    close(run(pm, exp.input_ids), out, 1e-5, 'after unmerge');
    const merged = pm.mergeAndUnload();
    assert.ok(![...merged.namedParameters()].some(([n]) => n.includes('lora_')), 'no LoRA parameters after mergeAndUnload');
    close(run(merged, exp.input_ids), exp.merged, 1e-4, 'mergeAndUnload');
  });

  test(`${name}: a fresh adapter matches peft's trainable count and saves peft's layout`, () => {
    const { exp, base, adapter } = load(name);
    const cfgJson = JSON.parse(fs.readFileSync(path.join(adapter, 'adapter_config.json'), 'utf8'));
    const cfg = LoraConfig.fromPeftJson(cfgJson);
    cfg.inferenceMode = false;
    // as the user wrote it: our getPeftModel must expand all-linear / add classifier heads itself
    if (name === 'llama_rslora') cfg.targetModules = 'all-linear';
    if (name === 'bert_seqcls') cfg.modulesToSave = ['pooler'];
    const pm = captureWarnings(() => getPeftModel(base(), cfg)).result;
    assert.equal(pm.trainableParametersString(), exp.fresh_trainable);
    // a fresh adapter is a no-op (B = 0, DoRA magnitude = ||W||)
    if (name !== 'bert_seqcls') close(run(pm, exp.input_ids), exp.base, 1e-4, 'fresh adapter output');
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-'));
    try {
      pm.savePretrained(tmp);
      const ours = readSafetensors(path.join(tmp, 'adapter_model.safetensors'));
      const theirs = readSafetensors(path.join(adapter, 'adapter_model.safetensors'));
      const shapes = (m: Map<string, { shape: number[] }>) => [...m].map(([k, t]) => `${k}:${t.shape.join('x')}`).sort();
      assert.deepEqual(shapes(ours), shapes(theirs));
      const ourCfg = JSON.parse(fs.readFileSync(path.join(tmp, 'adapter_config.json'), 'utf8'));
      assert.deepEqual(Object.keys(ourCfg), Object.keys(cfgJson), 'same adapter_config.json keys, same order');
      // peft writes its target set in hash order; compare as sets
      assert.deepEqual([...ourCfg.target_modules].sort(), [...cfgJson.target_modules].sort());
      for (const k of ['r', 'lora_alpha', 'modules_to_save', 'use_dora', 'use_rslora', 'fan_in_fan_out', 'bias',
        'rank_pattern', 'alpha_pattern', 'task_type', 'peft_type', 'inference_mode', 'init_lora_weights', 'layers_to_transform']) {
        assert.deepEqual(ourCfg[k], cfgJson[k], `adapter_config.json "${k}"`);
      }
      // and it round-trips through our loader
      const again = PeftModel.fromPretrainedSync(base(), tmp);
      close(run(again, exp.input_ids), run(pm, exp.input_ids), 1e-6, 'reloaded own adapter');
    } finally { fs.rmSync(tmp, { recursive: true, force: true }); }
  });
}

test('llama: several adapters switch, disable and delete', () => {
  const { exp, base, adapter } = load('llama_rslora');
  const pm = PeftModel.fromPretrainedSync(base(), adapter);
  pm.loadAdapter(path.join(adapter, 'second'), 'second');
  close(run(pm, exp.input_ids), exp.lora, 1e-4, 'default stays active after loadAdapter');
  pm.setAdapter('second');
  close(run(pm, exp.input_ids), exp.second!, 1e-4, 'second adapter');
  // setAdapter makes the adapter trainable, like peft
  assert.ok(pm.getNbTrainableParameters()[0] > 0);
  close(pm.disableAdapter(() => run(pm, exp.input_ids)), exp.base, 1e-4, 'disabled');
  pm.setAdapter('default');
  close(run(pm, exp.input_ids), exp.lora, 1e-4, 'back to default');
  pm.deleteAdapter('default');
  assert.equal(pm.activeAdapter, 'second');
  assert.ok(![...pm.namedParameters()].some(([n]) => n.includes('.default.')));
  close(run(pm, exp.input_ids), exp.second!, 1e-4, 'after deleting default');
  // saving several adapters puts the non-default one in a subfolder, as peft
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-'));
  try {
    pm.loadAdapter(adapter, 'default');
    pm.savePretrained(tmp);
    assert.ok(fs.existsSync(path.join(tmp, 'adapter_model.safetensors')));
    assert.ok(fs.existsSync(path.join(tmp, 'second', 'adapter_model.safetensors')));
    const a = readSafetensors(path.join(tmp, 'second', 'adapter_model.safetensors'));
    const b = readSafetensors(path.join(adapter, 'second', 'adapter_model.safetensors'));
    assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
    for (const [k, t] of b) assert.deepEqual(Array.from(a.get(k)!.data), Array.from(t.data), k);
  } finally { fs.rmSync(tmp, { recursive: true, force: true }); }
});

test('target not found lists the linear modules (GPT-2 q_attn)', () => {
  const { base } = load('gpt2_lora');
  assert.throws(() => getPeftModel(base(), new LoraConfig({ targetModules: ['q_attn'] })),
    /Target modules \{'q_attn'\} not found in the base model.*c_attn, c_proj, c_fc/);
});

test('isTrainable: true keeps the loaded adapter trainable', () => {
  const { base, adapter } = load('bert_seqcls');
  const pm = PeftModel.fromPretrainedSync(base(), adapter, { isTrainable: true });
  const trainable = [...pm.namedParameters()].filter(([, p]) => p.requiresGrad).map(([n]) => n);
  assert.ok(trainable.some((n) => n.endsWith('lora_A.default.weight')));
  assert.ok(trainable.includes('base_model.model.classifier.modules_to_save.default.weight'));
  assert.ok(!trainable.includes('base_model.model.classifier.original_module.weight'));
  assert.ok(!trainable.some((n) => n.includes('base_layer')));
});

// Adapters trained "by us" (random B), saved, then: our merged model saved with the model's
// savePretrained reloads to the same outputs. With PEFT_TS_EXPORT_DIR set, everything is kept
// there for scripts/peft_check_ours.py to verify with Python peft + transformers.
test('our adapters + merged models export (checked by scripts/peft_check_ours.py)', () => {
  const keep = process.env.PEFT_TS_EXPORT_DIR;
  const root = keep ?? fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-export-'));
  const rng = new Rng(123);
  try {
    for (const name of Object.keys(CASES)) {
      const { exp, base, adapter, dir } = load(name);
      const cfg = LoraConfig.fromPeftJson(JSON.parse(fs.readFileSync(path.join(adapter, 'adapter_config.json'), 'utf8')));
      cfg.inferenceMode = false;
      const pm = captureWarnings(() => getPeftModel(base(), cfg, 'default', { rng })).result;
      for (const [n, p] of pm.namedParameters()) {
        if (!p.requiresGrad) continue;
        for (let i = 0; i < p.size; i++) p.data[i] = n.includes('lora_magnitude_vector') ? p.data[i] * (1 + 0.2 * rng.normal()) : p.data[i] + 0.3 * rng.normal();
      }
      pm.eval();
      const out = path.join(root, name);
      fs.mkdirSync(out, { recursive: true });
      pm.savePretrained(path.join(out, 'adapter'));
      const ours = run(pm, exp.input_ids);
      assert.ok(maxDiff(ours, exp.base) > 1e-2);
      const merged = pm.mergeAndUnload() as unknown as { savePretrained(d: string): void; forward(i: { inputIds: ReturnType<typeof tensor> }): { logits: ReturnType<typeof tensor> } };
      // equal to `ours` unless a tied embedding was merged (then the lm head changed too, as in peft)
      const oursMerged = run(merged, exp.input_ids);
      merged.savePretrained(path.join(out, 'merged'));
      const auto = CASES[name] === 'SEQ_CLS' ? AutoModelForSequenceClassification : AutoModelForCausalLM;
      const reloaded = captureWarnings(() => auto.fromPretrainedSync(path.join(out, 'merged'))).result;
      close(run(reloaded, exp.input_ids), oursMerged, 1e-5, `${name}: saved merged model`);
      fs.writeFileSync(path.join(out, 'ours.json'), JSON.stringify({
        base_dir: path.resolve(path.join(dir, 'base')), task: CASES[name], input_ids: exp.input_ids, shape: exp.shape, logits: Array.from(ours), merged_logits: Array.from(oursMerged),
      }));
    }
  } finally { if (!keep) fs.rmSync(root, { recursive: true, force: true }); }
});

test('training step: only adapter parameters receive gradients (GPT-2, DoRA + bias="all")', () => {
  const { exp, base } = load('gpt2_dora');
  const cfg = new LoraConfig({ r: 4, targetModules: ['c_attn'], useDora: true, bias: 'all', loraDropout: 0.1 });
  const pm = captureWarnings(() => getPeftModel(base(), cfg)).result;
  pm.train();
  const ids = tensor(Int32Array.from(exp.input_ids.flat()), [2, exp.input_ids[0].length]);
  tidy(() => { pm.forward({ inputIds: ids, labels: ids }).loss!.backward(); return null; });
  for (const [n, p] of pm.namedParameters()) {
    // a fresh adapter has B = 0, so A's gradient is exactly zero on the first step (as in peft)
    if (p.requiresGrad) assert.ok(p.grad && (n.includes('lora_A') || p.grad.toArray().some((v) => v !== 0)), `${n} should get a gradient`);
    else assert.equal(p.grad, null, `${n} is frozen`);
  }
  assert.ok([...pm.namedParameters()].some(([n, p]) => n.endsWith('lora_magnitude_vector.default.weight') && p.requiresGrad));
});
