// The CLI and the library read each other's classifiers, and Python peft's: label names travel
// in label_mapping.json (CLI) or config.json (library), a Python adapter's label count is read off
// its saved head, the base comes from base_model_name_or_path when --model is not given, and
// predict --num-labels covers an adapter that says nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tensor, noGrad, tidy } from '../src/tensor/index.js';
import { AutoModelForSequenceClassification } from '../src/models/index.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { Tokenizer } from '../src/io/index.js';
import { AutoPeftModelForSequenceClassification, LoraConfig, captureWarnings, getPeftModel, type PeftModel } from '../src/peft/index.js';
import { softmaxRows } from '../src/train/metrics.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(here, '../src/cli/main.js');
const root = [path.resolve(here, '../..'), path.resolve(here, '..'), process.cwd()].find((p) => fs.existsSync(path.join(p, 'test', 'fixtures', 'autopeft')))!;
process.chdir(root); // the fixtures name their base relative to the repository root, as peft records it
const FIX = 'test/fixtures/autopeft';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-cli-adapters-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
const TEXT = 'and the lord said unto moses';

function cli(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, PEFT_TS_DEBUG: '', HF_HUB_OFFLINE: '1' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function predictJson(...args: string[]): { label: string; scores: Record<string, number> } {
  const out = path.join(tmp, `pred-${Math.random().toString(36).slice(2)}.jsonl`);
  const r = cli('predict', '--text', TEXT, '--output', out, ...args);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(fs.readFileSync(out, 'utf8').trim());
}

/** The library's softmax scores for TEXT. */
function libraryScores(model: PeftModel): number[] {
  const ids = Tokenizer.fromFile(`${FIX}/bert_base`).encode(TEXT);
  const logits = tidy(() => noGrad(() => model.forward({ inputIds: tensor(Int32Array.from(ids), [1, ids.length]) }).logits.toFloat32Array()));
  return Array.from(softmaxRows(logits, logits.length));
}

test("predict on Python peft's SEQ_CLS adapter: base from the adapter config, 3 labels from the saved head", () => {
  const p = predictJson('--adapter', `${FIX}/seqcls_adapter`);
  assert.deepEqual(Object.keys(p.scores), ['LABEL_0', 'LABEL_1', 'LABEL_2']);
  const lib = captureWarnings(() => AutoPeftModelForSequenceClassification.fromPretrained(`${FIX}/seqcls_adapter`, { logger: () => {} })).result;
  const want = libraryScores(lib);
  Object.values(p.scores).forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-5, `score ${i}: ${v} vs ${want[i]}`));
});

test('predict on a library-saved classifier: label names from its config.json', () => {
  const labels = { 0: 'joy', 1: 'anger', 2: 'fear', 3: 'calm' };
  const base = captureWarnings(() => AutoModelForSequenceClassification.fromPretrained(`${FIX}/bert_base`, {
    logger: () => {}, configOverrides: { id2label: labels }, ignoreMismatchedSizes: true,
  })).result;
  const pm = getPeftModel(base, new LoraConfig({ r: 2, targetModules: ['query', 'value'], taskType: 'SEQ_CLS', initLoraWeights: false }));
  const dir = path.join(tmp, 'lib-seqcls');
  captureWarnings(() => pm.savePretrained(dir));
  assert.ok(!fs.existsSync(path.join(dir, 'label_mapping.json')));
  const p = predictJson('--adapter', dir);
  assert.deepEqual(Object.keys(p.scores), ['joy', 'anger', 'fear', 'calm']);
  const want = libraryScores(pm.eval());
  Object.values(p.scores).forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-5, `score ${i}: ${v} vs ${want[i]}`));
  // --num-labels that disagrees with the adapter's labels is a usage error
  const bad = cli('predict', '--adapter', dir, '--text', TEXT, '--num-labels', '2');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--num-labels 2 disagrees with the 4 labels of the adapter/);
});

test('predict --num-labels: an adapter without head or label names', () => {
  const dir = path.join(tmp, 'headless');
  fs.cpSync(`${FIX}/seqcls_adapter`, dir, { recursive: true });
  const sd = readSafetensors(path.join(dir, 'adapter_model.safetensors'));
  for (const k of [...sd.keys()]) if (k.includes('classifier')) sd.delete(k);
  writeSafetensors(path.join(dir, 'adapter_model.safetensors'), sd, { format: 'pt' });
  assert.deepEqual(Object.keys(predictJson('--adapter', dir, '--num-labels', '5').scores), ['LABEL_0', 'LABEL_1', 'LABEL_2', 'LABEL_3', 'LABEL_4']);
  // without it: the base's own head and labels (its config.json has 2)
  assert.deepEqual(Object.keys(predictJson('--adapter', dir).scores), ['LABEL_0', 'LABEL_1']);
});

test("the library reads a CLI-trained classifier: labels from label_mapping.json, base from base_model_name_or_path", () => {
  const data = path.join(tmp, 'train.jsonl');
  const rows = ['the lord', 'moses went', 'israel came', 'the king', 'david said', 'egypt land', 'the son', 'god said'];
  fs.writeFileSync(data, rows.map((t, i) => JSON.stringify({ text: t, label: ['law', 'history', 'poetry'][i % 3] })).join('\n') + '\n');
  const out = path.join(tmp, 'cli-cls');
  const r = cli('train', '--model', `${FIX}/bert_base`, '--data', data, '--output-dir', out, '--max-steps', '2', '--batch-size', '4',
    '--target-modules', 'query,value', '--max-length', '16');
  assert.equal(r.code, 0, r.stderr);
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.base_model_name_or_path, `${FIX}/bert_base`, 'the --model string, as given');
  const lib = captureWarnings(() => AutoPeftModelForSequenceClassification.fromPretrained(out, { logger: () => {} })).result;
  const mapping = JSON.parse(fs.readFileSync(path.join(out, 'label_mapping.json'), 'utf8'));
  assert.deepEqual((lib.getBaseModel() as unknown as { config: { id2label: unknown } }).config.id2label, mapping.id2label);
  const p = predictJson('--adapter', out);
  const want = libraryScores(lib);
  assert.deepEqual(Object.keys(p.scores), Object.values(mapping.id2label));
  Object.values(p.scores).forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-5, `score ${i}: ${v} vs ${want[i]}`));
});
