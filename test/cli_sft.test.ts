// peft-ts sft as a child process: Alpaca rows (completion-only loss) and packed text rows
// train a LoRA adapter that loads back; bad flags are usage errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { PeftModel } from '../src/peft/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const CLI = resolve(here, '../src/cli/main.js');
const root = [resolve(here, '../..'), resolve(here, '..'), process.cwd()].find((p) => existsSync(join(p, 'assets', 'default-model')))!;
const tmp = mkdtempSync(join(tmpdir(), 'peft-ts-sft-'));
const fx = JSON.parse(readFileSync(join(root, 'test/fixtures/sft/expected.json'), 'utf8'));

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, PEFT_TS_DEBUG: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const jsonl = (name: string, rows: object[]) => { const p = join(tmp, name); writeFileSync(p, rows.map((r) => JSON.stringify(r)).join('\n') + '\n'); return p; };

test('sft: Alpaca rows -> prompt/completion, loss on the output; the adapter loads back', () => {
  const data = jsonl('alpaca.jsonl', [...fx.inputs.alpaca, ...fx.inputs.alpaca]);
  const out = join(tmp, 'alpaca');
  const r = cli('sft', '--data', data, '--output-dir', out, '--max-steps', '2', '--batch-size', '2', '--lr', '1e-3', '--target-modules', 'c_attn', '--r', '4');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Alpaca rows/);
  assert.match(r.stdout, /loss on completions/);
  assert.match(r.stdout, /saved the adapter .*2 steps/);
  const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.r, 4);
  assert.deepEqual(cfg.target_modules, ['c_attn']);
  const pm = PeftModel.fromPretrainedSync(AutoModelForCausalLM.fromPretrainedSync(join(root, 'assets/default-model'), { logger: () => {} }), out);
  assert.ok([...pm.namedParameters()].some(([n]) => n.includes('lora_B')));
});

test('sft: packed text rows; usage errors', () => {
  const data = jsonl('text.jsonl', (fx.inputs.texts as string[]).map((text) => ({ text })));
  const r = cli('sft', '--data', data, '--output-dir', join(tmp, 'packed'), '--max-steps', '1', '--packing', '--max-seq-length', '16', '--quiet');
  assert.equal(r.code, 0, r.stderr);
  assert.ok(existsSync(join(tmp, 'packed', 'adapter_model.safetensors')));
  const bad = cli('sft', '--data', data, '--packing-strategy', 'zip');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--packing-strategy must be/);
  const unknown = cli('sft', '--data', data, '--bogus', '1');
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown option --bogus/);
  const help = cli('sft', '--help');
  assert.match(help.stdout, /assistant-only-loss/);
});
