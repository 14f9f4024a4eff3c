// AutoPeftModelFor*: an adapter folder alone loads base + adapter, reading the base from
// base_model_name_or_path as peft does (relative to the working directory). Python peft's
// adapters (scripts/autopeft_make_fixtures.py) give AutoPeftModel's logits; adapters saved here
// record the path the base was loaded from, and classifiers carry their label names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tensor, tidy, noGrad } from '../src/tensor/index.js';
import { AutoModelForCausalLM, AutoModelForSequenceClassification } from '../src/models/index.js';
import { openTensorFile } from '../src/io/safetensors.js';
import {
  AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification, AutoPeftModelForTokenClassification, AutoPeftModelForSeq2SeqLM,
  LoraConfig, getPeftModel, captureWarnings, readAdapterLabels, type PeftModel,
} from '../src/peft/index.js';
import { repoCacheFolder } from '../src/io/hub.js';
import { assertClose } from './helpers/compare.js';

// The fixtures name their base as "test/fixtures/autopeft/...": relative to the repository root.
const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = [path.join(here, '..', '..'), path.join(here, '..'), process.cwd()].find((d) => fs.existsSync(path.join(d, 'test', 'fixtures', 'autopeft')))!;
process.chdir(repoRoot);
const FIX = 'test/fixtures/autopeft';
const exp = JSON.parse(fs.readFileSync(path.join(FIX, 'expected.json'), 'utf8')) as Record<string, number[]> & { input_ids: number[][] };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-auto-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

type Fwd = { forward(i: { inputIds: ReturnType<typeof tensor> }): { logits: ReturnType<typeof tensor> } };
function run(model: Fwd, ids: number[][] = exp.input_ids): Float32Array {
  return tidy(() => noGrad(() => model.forward({ inputIds: tensor(Int32Array.from(ids.flat()), [ids.length, ids[0].length]) }).logits.toFloat32Array()));
}
const quiet = { logger: () => {} };

/** With PEFT_TS_EXPORT_DIR set, our adapters + logits go there for scripts/autopeft_check_ours.py (Python's AutoPeftModel). */
function exportForPython(name: string, dir: string, task: string, logits: Float32Array): void {
  const root = process.env.PEFT_TS_EXPORT_DIR;
  if (!root) return;
  const out = path.join(root, 'autopeft', name);
  fs.rmSync(out, { recursive: true, force: true });
  fs.cpSync(dir, out, { recursive: true });
  fs.writeFileSync(path.join(out, 'ours.json'), JSON.stringify({ task, input_ids: exp.input_ids, logits: Array.from(logits) }));
}

test("Python peft's adapters load from the adapter folder alone, with AutoPeftModel's logits", () => {
  const clm = captureWarnings(() => AutoPeftModelForCausalLM.fromPretrained(`${FIX}/clm_adapter`, quiet)).result;
  assert.equal((clm.getBaseModel() as unknown as { nameOrPath: string }).nameOrPath, `${FIX}/gpt2_base`);
  assertClose(run(clm), exp.clm, { atol: 1e-5, rtol: 1e-4, msg: 'causal LM' });
  assert.equal(clm.getNbTrainableParameters()[0], 0, 'loaded for inference by default');
  // Python needed num_labels=3 (the base's config.json has 2); here the saved classifier says 3.
  const seq = captureWarnings(() => AutoPeftModelForSequenceClassification.fromPretrained(`${FIX}/seqcls_adapter`, quiet)).result;
  assert.equal((seq.getBaseModel() as unknown as { numLabels: number }).numLabels, 3);
  assertClose(run(seq), exp.seqcls, { atol: 1e-5, rtol: 1e-4, msg: 'sequence classification' });
  assert.deepEqual(readAdapterLabels(`${FIX}/seqcls_adapter`), { id2label: { 0: 'LABEL_0', 1: 'LABEL_1', 2: 'LABEL_2' }, label2id: { LABEL_0: 0, LABEL_1: 1, LABEL_2: 2 }, source: 'weights' });
  const tok = captureWarnings(() => AutoPeftModelForTokenClassification.fromPretrained(`${FIX}/tokcls_adapter`, quiet)).result;
  assertClose(run(tok), exp.tokcls, { atol: 1e-5, rtol: 1e-4, msg: 'token classification' });
  // isTrainable as in PeftModel.fromPretrained
  const t = captureWarnings(() => AutoPeftModelForCausalLM.fromPretrained(`${FIX}/clm_adapter`, { ...quiet, isTrainable: true })).result;
  assert.ok(t.getNbTrainableParameters()[0] > 0);
});

test('AutoPeftModel: wrong task, unknown base, no seq2seq class yet, missing folder: clear errors', () => {
  assert.throws(() => AutoPeftModelForSequenceClassification.fromPretrained(`${FIX}/clm_adapter`, quiet),
    /Expected target PEFT class: PeftModelForCausalLM, but you have asked for: PeftModelForSequenceClassification/);
  const noBase = path.join(tmp, 'no-base');
  fs.mkdirSync(noBase);
  const cfg = JSON.parse(fs.readFileSync(`${FIX}/clm_adapter/adapter_config.json`, 'utf8'));
  fs.writeFileSync(path.join(noBase, 'adapter_config.json'), JSON.stringify({ ...cfg, base_model_name_or_path: null }));
  assert.throws(() => AutoPeftModelForCausalLM.fromPretrained(noBase), /has no base_model_name_or_path.*PeftModel\.fromPretrained/);
  fs.writeFileSync(path.join(noBase, 'adapter_config.json'), JSON.stringify({ ...cfg, task_type: null, auto_mapping: null }));
  assert.throws(() => AutoPeftModelForCausalLM.fromPretrained(noBase), /Cannot infer the auto class/);
  assert.throws(() => AutoPeftModelForSeq2SeqLM.fromPretrained(`${FIX}/clm_adapter`), /no model class for this task yet/);
  assert.throws(() => AutoPeftModelForCausalLM.fromPretrained(FIX), /has no adapter_config\.json/);
});

test('nameOrPath: recorded as given, written as base_model_name_or_path; our adapter loads with AutoPeftModel', () => {
  const base = captureWarnings(() => AutoModelForCausalLM.fromPretrained(`${FIX}/gpt2_base`, quiet)).result;
  assert.equal(base.nameOrPath, `${FIX}/gpt2_base`);
  assert.equal(AutoModelForCausalLM.fromConfig(base.config.raw).nameOrPath, null);
  const pm = getPeftModel(base, new LoraConfig({ r: 2, loraAlpha: 4, targetModules: ['c_attn'], taskType: 'CAUSAL_LM', initLoraWeights: false }));
  assert.equal(pm.activePeftConfig.baseModelNameOrPath, `${FIX}/gpt2_base`);
  const out = path.join(tmp, 'ours-clm');
  captureWarnings(() => pm.savePretrained(out));
  const saved = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
  assert.equal(saved.base_model_name_or_path, `${FIX}/gpt2_base`);
  const card = fs.readFileSync(path.join(out, 'README.md'), 'utf8');
  assert.match(card, /^---\nbase_model: test\/fixtures\/autopeft\/gpt2_base\nlibrary_name: peft\npipeline_tag: text-generation\ntags:\n- base_model:adapter:test\/fixtures\/autopeft\/gpt2_base\n/);
  const back = captureWarnings(() => AutoPeftModelForCausalLM.fromPretrained(out, quiet)).result;
  assertClose(run(back), run(pm), { atol: 1e-6, msg: 'reloaded through AutoPeftModel' });
  exportForPython('clm', out, 'CAUSAL_LM', run(pm));
  const plain = pm.disableAdapter(() => run(pm));
  assert.ok(run(back).some((v, i) => Math.abs(v - plain[i]) > 1e-4), 'the adapter changes the logits (so the check above means something)');
  // peft's rename warning when the config named another base
  const w = captureWarnings(() => getPeftModel(AutoModelForCausalLM.fromPretrained(`${FIX}/gpt2_base`, quiet),
    new LoraConfig({ targetModules: ['c_attn'], baseModelNameOrPath: 'other/model' }))).warnings;
  assert.ok(w.some((m) => m.includes("renamed from 'other/model' to 'test/fixtures/autopeft/gpt2_base'")), w.join('\n'));
});

test('save_embedding_layers "auto": embeddings saved when the vocab differs from the named base (local folder or Hub cache)', () => {
  const keysOf = (dir: string) => { const r = openTensorFile(path.join(dir, 'adapter_model.safetensors')); try { return r.names(); } finally { r.close(); } };
  const cfg = () => new LoraConfig({ r: 2, targetModules: ['c_attn'] });
  // same vocab as the base's config.json: only LoRA weights
  const same = getPeftModel(AutoModelForCausalLM.fromPretrained(`${FIX}/gpt2_base`, quiet), cfg());
  captureWarnings(() => same.savePretrained(path.join(tmp, 'same')));
  assert.ok(!keysOf(path.join(tmp, 'same')).some((k) => k.includes('wte')));
  // a resized vocabulary (70 rows vs the base's 64): the embedding table is saved, with peft's warning
  const resizedModel = () => AutoModelForCausalLM.fromPretrained(`${FIX}/gpt2_base`, { ...quiet, configOverrides: { vocab_size: 70 }, ignoreMismatchedSizes: true });
  const resized = getPeftModel(resizedModel(), cfg());
  const w = captureWarnings(() => resized.savePretrained(path.join(tmp, 'resized'))).warnings;
  assert.ok(w.some((m) => m.includes('embedding layer has been resized')), w.join('\n'));
  assert.ok(keysOf(path.join(tmp, 'resized')).includes('base_model.model.transformer.wte.weight'));
  // the base named by a Hub id found in the cache (HF_HUB_CACHE)
  const cache = path.join(tmp, 'hub-cache');
  const snap = path.join(repoCacheFolder('org/tiny-gpt2', cache), 'snapshots', 'c'.repeat(40));
  fs.mkdirSync(snap, { recursive: true });
  fs.copyFileSync(`${FIX}/gpt2_base/config.json`, path.join(snap, 'config.json'));
  fs.mkdirSync(path.join(repoCacheFolder('org/tiny-gpt2', cache), 'refs'));
  fs.writeFileSync(path.join(repoCacheFolder('org/tiny-gpt2', cache), 'refs', 'main'), 'c'.repeat(40));
  const old = process.env.HF_HUB_CACHE;
  process.env.HF_HUB_CACHE = cache;
  try {
    const m = resizedModel();
    m.nameOrPath = 'org/tiny-gpt2';
    const hubNamed = getPeftModel(m, cfg());
    captureWarnings(() => hubNamed.savePretrained(path.join(tmp, 'hub-named')));
    assert.ok(keysOf(path.join(tmp, 'hub-named')).includes('base_model.model.transformer.wte.weight'));
  } finally { if (old === undefined) delete process.env.HF_HUB_CACHE; else process.env.HF_HUB_CACHE = old; }
});

test('classifier labels travel with the adapter: config.json written beside it, read back by AutoPeftModel', () => {
  const labels = { 0: 'joy', 1: 'anger', 2: 'fear', 3: 'calm' };
  const base = captureWarnings(() => AutoModelForSequenceClassification.fromPretrained(`${FIX}/bert_base`, {
    ...quiet, configOverrides: { id2label: labels, label2id: { joy: 0, anger: 1, fear: 2, calm: 3 } }, ignoreMismatchedSizes: true,
  })).result;
  assert.equal(base.numLabels, 4);
  const pm: PeftModel = getPeftModel(base, new LoraConfig({ r: 2, targetModules: ['query'], taskType: 'SEQ_CLS' }));
  const out = path.join(tmp, 'ours-seqcls');
  captureWarnings(() => pm.savePretrained(out));
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
  assert.deepEqual(cfg.id2label, labels);
  assert.deepEqual(readAdapterLabels(out)?.id2label, labels);
  assert.equal(readAdapterLabels(out)?.source, 'config.json');
  const back = captureWarnings(() => AutoPeftModelForSequenceClassification.fromPretrained(out, quiet)).result;
  assert.deepEqual((back.getBaseModel() as unknown as { config: { id2label: unknown } }).config.id2label, labels);
  assertClose(run(back), run(pm.eval()), { atol: 1e-6, msg: 'classifier reloaded' });
  exportForPython('seqcls', out, 'SEQ_CLS', run(pm));
  // an adapter without a classifier head and without label files says nothing
  assert.equal(readAdapterLabels(`${FIX}/clm_adapter`), null);
});
