// The peft-ts command line, run as a child process: train -> adapter + log + chart, predict's
// output, seeded generation, merge equal to base + adapter, inspect, and bad-input errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tensor, noGrad } from '../src/tensor/index.js';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { PeftModel } from '../src/peft/index.js';
import { Tokenizer } from '../src/io/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const CLI = resolve(here, '../src/cli/main.js');
const root = [resolve(here, '../..'), resolve(here, '..'), process.cwd()].find((p) => existsSync(join(p, 'assets', 'default-model')))!;
const MODEL = join(root, 'assets', 'default-model');
const DATA = join(root, 'assets', 'data');
const tmp = mkdtempSync(join(tmpdir(), 'peft-ts-cli-'));

function cli(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, PEFT_TS_DEBUG: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function head(file: string, n: number, to: string): string {
  const lines = readFileSync(join(DATA, file), 'utf8').split('\n').filter(Boolean);
  writeFileSync(join(tmp, to), lines.slice(0, n).join('\n') + '\n');
  return join(tmp, to);
}

const clsTrain = head('kjv_section_train.jsonl', 32, 'cls_train.jsonl');
const clsTest = head('kjv_section_test.jsonl', 16, 'cls_test.jsonl');
const clmTrain = head('kjv_complete_train.jsonl', 16, 'clm_train.jsonl');
const clsDir = join(tmp, 'cls');
const clmDir = join(tmp, 'clm');

test('train (seq-cls, 3 steps) writes the adapter, label mapping, log and chart', () => {
  const r = cli('train', '--data', clsTrain, '--eval-data', clsTest, '--output-dir', clsDir, '--max-steps', '3',
    '--batch-size', '4', '--logging-steps', '1', '--eval-steps', '3', '--lr', '1e-3', '--max-length', '48');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: [\d.]+/);
  assert.match(r.stdout, /eval_accuracy\s+[\d.]+/);
  for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'label_mapping.json', 'trainer_log.jsonl', 'training_curves.svg', 'tokenizer.json']) {
    assert.ok(existsSync(join(clsDir, f)), `${f} written`);
  }
  const cfg = JSON.parse(readFileSync(join(clsDir, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.task_type, 'SEQ_CLS');
  assert.ok(cfg.modules_to_save.includes('score'), 'the head is saved with the adapter');
  const map = JSON.parse(readFileSync(join(clsDir, 'label_mapping.json'), 'utf8'));
  assert.deepEqual(Object.values(map.id2label).sort(), ['epistle', 'gospel', 'law', 'wisdom']);
  const log = readFileSync(join(clsDir, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(log.filter((e) => 'loss' in e).map((e) => e.step), [1, 2, 3]);
  // The evaluation of the last step (3) is reported as the final one, not run a second time.
  assert.deepEqual(log.filter((e) => 'eval_accuracy' in e).map((e) => e.step), [3]);
  assert.equal(r.stderr.split('\n').filter((l) => l.includes('eval_accuracy=')).length, 1, r.stderr);
  assert.match(readFileSync(join(clsDir, 'training_curves.svg'), 'utf8'), /^<svg|<svg /);
});

test('predict prints label + softmax scores per text, and writes jsonl', () => {
  const r = cli('predict', '--adapter', clsDir, '--text', 'Blessed are the meek: for they shall inherit the earth.', '--text', 'The fear of the LORD is the beginning of wisdom.');
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 2);
  for (const l of lines) {
    const [label, score, scores] = l.split('\t');
    assert.ok(['epistle', 'gospel', 'law', 'wisdom'].includes(label), l);
    const vals = Object.fromEntries([...scores.matchAll(/(\w+)=([\d.]+)/g)].map((m) => [m[1], Number(m[2])]));
    assert.equal(Object.keys(vals).length, 4);
    assert.ok(Math.abs(Object.values(vals).reduce((a, b) => a + b, 0) - 1) < 5e-3, 'scores sum to 1');
    assert.equal(Number(score), Math.max(...Object.values(vals)), 'the label is the top score');
    assert.equal(vals[label], Number(score));
  }
  const out = join(tmp, 'pred.jsonl');
  const r2 = cli('predict', '--adapter', clsDir, '--data', clsTest, '--output', out);
  assert.equal(r2.code, 0, r2.stderr);
  const rows = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(rows.length, 16);
  assert.ok(Math.abs(Object.values(rows[0].scores as Record<string, number>).reduce((a, b) => a + b, 0) - 1) < 1e-5);
});

test('eval of the adapter reports accuracy and f1', () => {
  const r = cli('eval', '--adapter', clsDir, '--data', clsTest, '--json');
  assert.equal(r.code, 0, r.stderr);
  const m = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.ok(m.eval_accuracy >= 0 && m.eval_accuracy <= 1 && m.eval_f1 >= 0 && Number.isFinite(m.eval_loss));
});

test('generate with a fixed seed is deterministic; another seed differs', () => {
  const args = ['generate', '--prompt', 'The LORD is my shepherd', '--do-sample', '--top-p', '0.9', '--max-new-tokens', '16'];
  const a = cli(...args, '--seed', '7'), b = cli(...args, '--seed', '7'), c = cli(...args, '--seed', '8');
  assert.equal(a.code, 0, a.stderr);
  assert.ok(a.stdout.startsWith('The LORD is my shepherd'), 'the prompt is echoed');
  assert.ok(a.stdout.length > 'The LORD is my shepherd'.length + 5, 'new text streamed');
  assert.equal(a.stdout, b.stdout);
  assert.notEqual(a.stdout, c.stdout);
});

test('generate --num-beams prints transformers\' best beam', () => {
  const fx = JSON.parse(readFileSync(join(root, 'test', 'fixtures', 'generate', 'beam-search.json'), 'utf8'));
  const c = fx.cases.find((x: { model: string; label: string }) => x.model === 'default-model' && x.label === 'beams3');
  const tok = Tokenizer.fromFile(MODEL);
  const prompt = tok.decode(c.inputIds[0]);
  const r = cli('generate', '--prompt', prompt, '--num-beams', '3', '--max-new-tokens', String(c.settings.max_new_tokens));
  assert.equal(r.code, 0, r.stderr);
  let row: number[] = c.sequences[0];
  const stop = row.findIndex((x, j) => j >= c.inputIds[0].length && x === tok.eosTokenId);
  if (stop >= 0) row = row.slice(0, stop + 1);
  assert.equal(r.stdout, tok.decode(row, { skipSpecialTokens: true }) + '\n');
  assert.notEqual(cli('generate', '--prompt', prompt, '--num-beams', '2', '--do-sample').code, 0);
});

test('merge: the merged checkpoint gives the logits of base + adapter', () => {
  const t = cli('train', '--data', clmTrain, '--task', 'causal-lm', '--output-dir', clmDir, '--max-steps', '2', '--batch-size', '8', '--lr', '1e-2', '--r', '4');
  assert.equal(t.code, 0, t.stderr);
  const g = cli('generate', '--adapter', clmDir, '--prompt', 'Praise ye the LORD', '--max-new-tokens', '5');
  assert.equal(g.code, 0, g.stderr);
  const mergedDir = join(tmp, 'merged');
  const m = cli('merge', '--adapter', clmDir, '--output-dir', mergedDir);
  assert.equal(m.code, 0, m.stderr);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) assert.ok(existsSync(join(mergedDir, f)), f);
  const ids = tensor(Int32Array.from([5, 100, 200, 7, 42, 3000]), [1, 6]);
  const logits = (mdl: { forward(i: { inputIds: typeof ids }): { logits: { toFloat32Array(): Float32Array } } }) => noGrad(() => mdl.forward({ inputIds: ids }).logits.toFloat32Array());
  const merged = logits(AutoModelForCausalLM.fromPretrainedSync(mergedDir));
  const withAdapter = logits(PeftModel.fromPretrainedSync(AutoModelForCausalLM.fromPretrainedSync(MODEL), clmDir));
  const base = logits(AutoModelForCausalLM.fromPretrainedSync(MODEL));
  let dMerge = 0, dBase = 0;
  for (let i = 0; i < merged.length; i++) { dMerge = Math.max(dMerge, Math.abs(merged[i] - withAdapter[i])); dBase = Math.max(dBase, Math.abs(base[i] - withAdapter[i])); }
  assert.ok(dBase > 1e-3, `the adapter changes the logits (max diff ${dBase})`);
  assert.ok(dMerge < 1e-4, `merged == base + adapter (max diff ${dMerge})`);
});

test('train --dtype bfloat16: LoRA on bf16 base weights saves an ordinary adapter; bad dtypes are usage errors', () => {
  const out = join(tmp, 'clm-bf16');
  const t = cli('train', '--data', clmTrain, '--task', 'causal-lm', '--output-dir', out, '--max-steps', '2', '--batch-size', '4', '--r', '4', '--lr', '1e-2', '--dtype', 'bfloat16');
  assert.equal(t.code, 0, t.stderr);
  const ids = tensor(Int32Array.from([5, 100, 200, 7]), [1, 4]);
  const logits = (mdl: { forward(i: { inputIds: typeof ids }): { logits: { toFloat32Array(): Float32Array } } }) => noGrad(() => mdl.forward({ inputIds: ids }).logits.toFloat32Array());
  const base = logits(AutoModelForCausalLM.fromPretrainedSync(MODEL, { dtype: 'bfloat16' }));
  const tuned = logits(PeftModel.fromPretrainedSync(AutoModelForCausalLM.fromPretrainedSync(MODEL, { dtype: 'bfloat16' }), out));
  assert.ok(tuned.some((v, i) => Math.abs(v - base[i]) > 1e-4), 'the adapter trained on the bf16 base changes its logits');
  const bad = cli('train', '--data', clmTrain, '--task', 'causal-lm', '--output-dir', out, '--max-steps', '1', '--dtype', 'float16');
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /--dtype must be float32 or bfloat16/);
  // The other commands load the base the same way.
  const g = cli('generate', '--adapter', out, '--dtype', 'bfloat16', '--prompt', 'In the beginning', '--max-new-tokens', '4', '--no-stream');
  assert.equal(g.code, 0, g.stderr);
  assert.ok(g.stdout.trim().length > 'In the beginning'.length, g.stdout);
  // --bf16: every decoding step under autocast (bf16-rounded activations in the GEMMs).
  const g16 = cli('generate', '--adapter', out, '--dtype', 'bfloat16', '--bf16', '--prompt', 'In the beginning', '--max-new-tokens', '4', '--no-stream');
  assert.equal(g16.code, 0, g16.stderr);
  assert.ok(g16.stdout.startsWith('In the beginning') && g16.stdout.trim().length > 'In the beginning'.length, g16.stdout);
  assert.match(cli('generate', '--help').stdout, /--bf16\s+mixed precision/);
  const badEval = cli('eval', '--data', clmTrain, '--adapter', out, '--dtype', 'float16');
  assert.equal(badEval.code, 2, badEval.stderr);
  assert.match(badEval.stderr, /--dtype must be float32 or bfloat16/);
});

test('inspect lists linear modules and the trainable-parameter line', () => {
  const r = cli('inspect', '--r', '8', '--target-modules', 'c_attn,c_fc');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /transformer\.h\.0\.attn\.c_attn\s+Conv1D\s+128 -> 384/);
  assert.match(r.stdout, /transformer\.wte\s+Embedding\s+\d+ -> 128/); // embeddings are targets too
  // r * (in + out) per layer, 4 layers: c_attn 8*(128+384), c_fc 8*(128+512).
  assert.match(r.stdout, new RegExp(`trainable params: ${(4 * 8 * (128 + 384 + 128 + 512)).toLocaleString('en-US')} \\|\\|`));
});

test('bad input: clear message naming file and row, no stack trace, non-zero exit', () => {
  const noStack = (s: string) => assert.doesNotMatch(s, /\n\s+at /, 'no stack trace');
  const missing = join(tmp, 'missing.jsonl');
  writeFileSync(missing, '{"text": "a", "label": "law"}\n{"txt": "b", "label": "law"}\n');
  let r = cli('train', '--data', missing, '--task', 'seq-cls', '--output-dir', join(tmp, 'x'), '--max-steps', '1');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /missing\.jsonl:2: missing column 'text'/);
  noStack(r.stderr);

  const empty = join(tmp, 'empty.jsonl');
  writeFileSync(empty, '');
  r = cli('train', '--data', empty, '--output-dir', join(tmp, 'x'));
  assert.equal(r.code, 1);
  assert.match(r.stderr, /empty\.jsonl/);
  noStack(r.stderr);

  const range = join(tmp, 'range.jsonl');
  writeFileSync(range, '{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n{"text": "c", "label": -1}\n');
  r = cli('train', '--data', range, '--output-dir', join(tmp, 'x'), '--max-steps', '1');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /range\.jsonl:3: label -1 is out of range/);
  noStack(r.stderr);

  r = cli('eval', '--adapter', clsDir, '--data', range);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /range\.jsonl:\d/);
  noStack(r.stderr);

  r = cli('train', '--data', clsTrain, '--lr', 'fast');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--lr expects a number/);
  r = cli('train', '--data', clsTrain, '--learning-rat', '1');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown option --learning-rat \(did you mean --learning-rate\?\)/);
  r = cli('frobnicate');
  assert.equal(r.code, 2);
  for (const c of ['train', 'eval', 'predict', 'generate', 'merge', 'inspect', 'demo']) {
    const h = cli(c, '--help');
    assert.equal(h.code, 0);
    assert.match(h.stdout, new RegExp(`peft-ts ${c}`));
  }
});
