// `peft-ts train / eval / generate` with an encoder-decoder: a tiny T5 (random, made here)
// with the T5-style tokenizer of test/fixtures/seq2seq/t5_tok, learning source -> target.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng } from '../src/tensor/index.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { AutoModelForSeq2SeqLM } from '../src/models/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const CLI = resolve(here, '../src/cli/main.js');
const root = [resolve(here, '../..'), resolve(here, '..'), process.cwd()].find((p) => existsSync(join(p, 'assets', 'default-model')))!;
const TOK = join(root, 'test', 'fixtures', 'seq2seq', 't5_tok');
const tmp = mkdtempSync(join(tmpdir(), 'peft-ts-s2s-cli-'));

const MODEL = join(tmp, 't5');
const tok = Tokenizer.fromFile(TOK);
AutoModelForSeq2SeqLM.fromConfig({
  model_type: 't5', vocab_size: tok.vocabSize, d_model: 16, d_kv: 8, d_ff: 32, num_layers: 2, num_heads: 2, dropout_rate: 0,
  relative_attention_num_buckets: 8, relative_attention_max_distance: 16, feed_forward_proj: 'relu',
  pad_token_id: 0, eos_token_id: 1, decoder_start_token_id: 0,
}, { rng: new Rng(1) }).savePretrained(MODEL);
for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(TOK, f), join(MODEL, f));
const DATA = join(tmp, 'pairs.jsonl');
writeFileSync(DATA, [{ source: 'hello world', target: 'HELLO WORLD' }, { source: 'good morning', target: 'GOOD MORNING' }].map((r) => JSON.stringify(r)).join('\n') + '\n');

function cli(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, PEFT_TS_DEBUG: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('cli: train --task seq2seq-lm (from the T5 model), eval loss, generate the learned target', () => {
  const out = join(tmp, 'run');
  const t = cli('train', '--model', MODEL, '--data', DATA, '--eval-data', DATA, '--max-steps', '150', '--lr', '2e-2', '--batch-size', '2',
    '--target-modules', 'q,k,v,o,wi,wo', '--lora-dropout', '0', '--output-dir', out, '--logging-steps', '50');
  assert.equal(t.code, 0, t.stderr);
  const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.task_type, 'SEQ_2_SEQ_LM');
  assert.equal(JSON.parse(readFileSync(join(out, 'label_mapping.json'), 'utf8')).task, 'seq2seq-lm');
  const base = cli('eval', '--model', MODEL, '--data', DATA, '--json');
  assert.equal(base.code, 0, base.stderr);
  const tuned = cli('eval', '--model', MODEL, '--adapter', out, '--data', DATA, '--json');
  assert.equal(tuned.code, 0, tuned.stderr);
  const before = JSON.parse(base.stdout).eval_loss, after = JSON.parse(tuned.stdout).eval_loss;
  assert.ok(after < before / 5, `eval loss ${before} -> ${after}`);
  assert.ok(JSON.parse(tuned.stdout).eval_perplexity > 1);
  const g = cli('generate', '--model', MODEL, '--adapter', out, '--prompt', 'hello world', '--max-new-tokens', '12');
  assert.equal(g.code, 0, g.stderr);
  assert.equal(g.stdout.trim(), 'HELLO WORLD');
  const gb = cli('generate', '--model', MODEL, '--adapter', out, '--prompt', 'good morning', '--max-new-tokens', '12', '--num-beams', '2');
  assert.equal(gb.code, 0, gb.stderr);
  assert.equal(gb.stdout.trim(), 'GOOD MORNING');
});

test('cli: seq2seq-lm columns are checked, renamed ones are taken', () => {
  const other = join(tmp, 'io.jsonl');
  writeFileSync(other, JSON.stringify({ input: 'hello world', output: 'HELLO WORLD' }) + '\n');
  const bad = cli('train', '--model', MODEL, '--data', other, '--max-steps', '1', '--output-dir', join(tmp, 'bad'));
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /source/);
  const ok = cli('train', '--model', MODEL, '--data', other, '--source-column', 'input', '--target-column', 'output', '--max-steps', '2', '--output-dir', join(tmp, 'io'));
  assert.equal(ok.code, 0, ok.stderr);
  assert.ok(existsSync(join(tmp, 'io', 'adapter_model.safetensors')));
});
