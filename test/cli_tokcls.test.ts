// Token classification end to end: the word-to-sub-token alignment, the seqeval-style entity
// metrics, and `peft-ts train / eval / predict --task token-cls` on a tiny BERT fixture
// (test/fixtures/models/bert_tokcls with the WordPiece tokenizer of test/fixtures/io/tok_bert)
// and the NER sample in assets/data.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '../src/io/tokenizer.js';
import { Dataset } from '../src/data/dataset.js';
import { tokenizeTokenClassification } from '../src/data/tokenize.js';
import { entityScores, getEntities, tokenClassificationMetrics } from '../src/train/seqeval.js';

const here = dirname(fileURLToPath(import.meta.url));
const CLI = resolve(here, '../src/cli/main.js');
const root = [resolve(here, '../..'), resolve(here, '..'), process.cwd()].find((p) => existsSync(join(p, 'assets', 'default-model')))!;
const FIX = join(root, 'test', 'fixtures');
const tmp = mkdtempSync(join(tmpdir(), 'peft-ts-tokcls-'));

// A token-classification checkpoint with a tokenizer: the model fixture has none of its own.
const MODEL = join(tmp, 'bert_tokcls');
mkdirSync(MODEL);
for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(FIX, 'models', 'bert_tokcls', f), join(MODEL, f));
for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(FIX, 'io', 'tok_bert', f), join(MODEL, f));

function cli(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, PEFT_TS_DEBUG: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('alignment: first sub-token of each word labelled, -100 for the rest and for special tokens', () => {
  const tok = Tokenizer.fromFile(MODEL);
  const label2id = { O: 0, 'B-LOC': 1, 'I-LOC': 2 };
  // "loras" is lo ##ra ##s, "unaffable" un ##aff ##able in this vocabulary.
  const ds = new Dataset([{ tokens: ['hello', 'loras', 'unaffable', 'world'], ner_tags: ['O', 'B-LOC', 'I-LOC', 'O'] }, { tokens: ['the', 'test'], ner_tags: [1, 0] }]);
  const f = tokenizeTokenClassification(ds, tok, { label2id });
  assert.deepEqual(f.rows[0].inputIds, tok.encode('hello loras unaffable world'));
  assert.deepEqual(f.rows[0].labels, [-100, 0, 1, -100, -100, 2, -100, -100, 0, -100]);
  assert.deepEqual(f.rows[1].labels, [-100, 1, 0, -100], 'integer tags are ids');
  const cut = tokenizeTokenClassification(ds, tok, { label2id, maxLength: 4 });
  assert.deepEqual(cut.rows[0].labels, [-100, 0, 1, -100], 'truncation keeps [SEP]');
  assert.equal(cut.rows[0].inputIds[3], tok.tokenToId('[SEP]'));
  assert.throws(() => tokenizeTokenClassification(new Dataset([{ tokens: ['a'], ner_tags: ['B-PER'] }]), tok, { label2id }), /row 0: tag "B-PER" is not one of the labels/);
  assert.throws(() => tokenizeTokenClassification(new Dataset([{ tokens: ['a', 'b'], ner_tags: ['O'] }]), tok, { label2id }), /row 0: 2 words but 1 tags/);
});

test('entities and scores as seqeval computes them', () => {
  assert.deepEqual(getEntities(['B-PER', 'I-PER', 'O', 'B-LOC']), [{ type: 'PER', start: 0, end: 1 }, { type: 'LOC', start: 3, end: 3 }]);
  // Lenient (conlleval) mode: a dangling I- starts an entity, a type change ends one.
  assert.deepEqual(getEntities(['I-PER', 'I-PER', 'I-LOC', 'B-LOC', 'I-LOC']), [
    { type: 'PER', start: 0, end: 1 }, { type: 'LOC', start: 2, end: 2 }, { type: 'LOC', start: 3, end: 4 }]);
  // seqeval's README example: precision = recall = f1 = 0.5.
  const yTrue = [['O', 'O', 'O', 'B-MISC', 'I-MISC', 'I-MISC', 'O'], ['B-PER', 'I-PER', 'O']];
  const yPred = [['O', 'O', 'B-MISC', 'I-MISC', 'I-MISC', 'I-MISC', 'O'], ['B-PER', 'I-PER', 'O']];
  const s = entityScores(yTrue, yPred);
  assert.equal(s.precision, 0.5); assert.equal(s.recall, 0.5); assert.equal(s.f1, 0.5);
  assert.deepEqual(s.perType.PER, { precision: 1, recall: 1, f1: 1, support: 1 });
  // The computeMetrics over [N, T, C] logits, -100 positions skipped.
  const names = ['O', 'B-PER', 'I-PER'];
  const labels = Int32Array.from([-100, 1, 2, 0, -100, -100, 1, 0, -100, -100]);
  const predIds = [0, 1, 2, 0, 0, 0, 1, 1, 0, 0];
  const logits = new Float32Array(predIds.length * 3);
  predIds.forEach((c, i) => { logits[i * 3 + c] = 1; });
  const m = tokenClassificationMetrics(names)({ predictions: logits, predictionsShape: [2, 5, 3], labels, numLabels: 3 });
  assert.equal(m.accuracy, 4 / 5);
  assert.equal(m.precision, 2 / 3); assert.equal(m.recall, 1); assert.equal(m.f1, 0.8);
  assert.deepEqual(Object.keys(tokenClassificationMetrics(['A', 'B'])({ predictions: logits.slice(0, 6), predictionsShape: [1, 2, 3], labels: Int32Array.from([0, 1]), numLabels: 3 })), ['accuracy']);
});

const train = join(root, 'assets', 'data', 'ner_sample_train.jsonl');
const testData = join(root, 'assets', 'data', 'ner_sample_test.jsonl');
const out = join(tmp, 'run');

test('train --task token-cls: a few steps, entity metrics reported, labels saved', () => {
  const r = cli('train', '--model', MODEL, '--task', 'token-cls', '--data', train, '--eval-data', testData, '--output-dir', out,
    '--max-steps', '4', '--batch-size', '8', '--logging-steps', '2', '--eval-steps', '4', '--lr', '5e-3', '--max-length', '32');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /token-cls labels \(from the tags in the data\): B-LOC, B-PER, I-LOC, I-PER, O/);
  for (const k of ['eval_loss', 'eval_accuracy', 'eval_precision', 'eval_recall', 'eval_f1']) assert.match(r.stdout, new RegExp(`${k}\\s+[\\d.]+`), k);
  const map = JSON.parse(readFileSync(join(out, 'label_mapping.json'), 'utf8'));
  assert.equal(map.task, 'token-cls');
  assert.deepEqual(map.id2label, { 0: 'B-LOC', 1: 'B-PER', 2: 'I-LOC', 3: 'I-PER', 4: 'O' });
  assert.equal(JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')).task_type, 'TOKEN_CLS');
  const log = readFileSync(join(out, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(log.some((e) => 'eval_f1' in e && e.eval_f1 >= 0 && e.eval_f1 <= 1));
});

test('eval of the token-cls adapter (task and labels from the adapter), --json', () => {
  const r = cli('eval', '--model', MODEL, '--adapter', out, '--data', testData, '--json');
  assert.equal(r.code, 0, r.stderr);
  const m = JSON.parse(r.stdout.trim().split('\n').pop()!);
  for (const k of ['eval_accuracy', 'eval_precision', 'eval_recall', 'eval_f1']) assert.ok(m[k] >= 0 && m[k] <= 1, k);
});

test('predict --task token-cls: one label per word, text and jsonl', () => {
  const labels = new Set(['B-LOC', 'B-PER', 'I-LOC', 'I-PER', 'O']);
  const r = cli('predict', '--model', MODEL, '--adapter', out, '--text', 'And Moses went up to mount Sinai .', '--text', 'hello loras unaffable world');
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 2);
  const words = lines.map((l) => l.split(' ').map((wl) => wl.slice(0, wl.lastIndexOf('/'))));
  assert.deepEqual(words, [['And', 'Moses', 'went', 'up', 'to', 'mount', 'Sinai', '.'], ['hello', 'loras', 'unaffable', 'world']]);
  for (const l of lines) for (const wl of l.split(' ')) assert.ok(labels.has(wl.slice(wl.lastIndexOf('/') + 1)), wl);
  const file = join(tmp, 'pred.jsonl');
  const r2 = cli('predict', '--model', MODEL, '--adapter', out, '--data', testData, '--output', file);
  assert.equal(r2.code, 0, r2.stderr);
  const rows = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const src = readFileSync(testData, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(rows.length, src.length);
  rows.forEach((p, i) => {
    assert.deepEqual(p.tokens, src[i].tokens);
    assert.equal(p.labels.length, src[i].tokens.length);
    for (const l of p.labels) assert.ok(labels.has(l));
  });
});

test('token-cls label errors are usage errors', () => {
  const ints = join(tmp, 'ints.jsonl');
  writeFileSync(ints, JSON.stringify({ tokens: ['a', 'b'], ner_tags: [0, 1] }) + '\n');
  const r = cli('train', '--model', MODEL, '--task', 'token-cls', '--data', ints, '--output-dir', join(tmp, 'x'), '--max-steps', '1');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /tag ids and neither --labels nor the model's config\.json names them/);
});
