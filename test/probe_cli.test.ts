// Probes of the command-line parser: every flag comes from one schema per command, a flag
// without its value is an error (never `true` / 1), values may start with '-' when written
// --flag=VALUE, numbers / choices / ranges are refused before anything loads, names follow
// TrainingArguments / LoraConfig (kebab-case, old short names kept), --config takes
// snake_case keys with type checks, and --help is generated from the schema.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type CommandDef, UsageError, helpText, parseCommand } from '../src/cli/args.js';
import { TRAIN, trainOptions } from '../src/cli/commands/train.js';
import { GENERATE } from '../src/cli/commands/generate.js';
import { PREDICT } from '../src/cli/commands/predict.js';
import { EVAL } from '../src/cli/commands/eval.js';
import { MERGE } from '../src/cli/commands/merge.js';
import { INSPECT } from '../src/cli/commands/inspect.js';
import { DEMO } from '../src/cli/commands/demo.js';

const here = dirname(fileURLToPath(import.meta.url));
const CLI = resolve(here, '../src/cli/main.js');
const root = [resolve(here, '../..'), resolve(here, '..'), process.cwd()].find((p) => existsSync(join(p, 'assets', 'default-model')))!;
const tmp = mkdtempSync(join(tmpdir(), 'peft-ts-probe-cli-'));
const D = ['--data', 'x.jsonl'];

const usage = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: Error) => {
  assert.ok(e instanceof UsageError, `a usage error, got ${e?.constructor?.name}: ${e?.message}`);
  assert.match(e.message, re);
  return true;
});

test('a value flag without its value is an error, never true or 1', () => {
  for (const f of ['--lr', '--learning-rate', '--r', '--max-steps', '--output-dir', '--batch-size', '--target-modules', '--config']) {
    usage(() => parseCommand(TRAIN, [...D, f]), new RegExp(`${f} needs a value`));
    usage(() => parseCommand(TRAIN, [...D, f, '--seed', '1']), new RegExp(`${f} needs a value`));
  }
  usage(() => parseCommand(GENERATE, ['--prompt']), /--prompt needs a value/);
  // --resume alone is meaningful (the last checkpoint), with a value it is a folder.
  assert.equal(parseCommand(TRAIN, [...D, '--resume']).resume, true);
  assert.equal(parseCommand(TRAIN, [...D, '--resume', '--seed', '3']).resume, true);
  assert.equal(parseCommand(TRAIN, [...D, '--resume', 'runs/x/checkpoint-3']).resume, 'runs/x/checkpoint-3');
  assert.equal(parseCommand(TRAIN, [...D, '--resume-from-checkpoint=c']).resume, 'c');
});

test('values that start with "-" are written --flag=VALUE; bare ones are not taken for flags', () => {
  assert.equal(parseCommand(GENERATE, ['--prompt=-- the LORD']).prompt, '-- the LORD');
  assert.equal(parseCommand(GENERATE, ['--prompt=--max-new-tokens 3']).maxNewTokens, 40);
  usage(() => parseCommand(GENERATE, ['--prompt', '-- the LORD']), /--prompt needs a value.*--prompt="-- the LORD"/);
  assert.deepEqual(parseCommand(PREDICT, ['--adapter', 'a', '--text=-x', '--text', 'y', '--text=--z']).text, ['-x', 'y', '--z']);
  usage(() => parseCommand(TRAIN, [...D, 'stray']), /unexpected argument 'stray'/);
  usage(() => parseCommand(TRAIN, [...D, '-x']), /unknown option -x/);
  usage(() => parseCommand(TRAIN, [...D, '--', '--lr']), /unexpected '--'/);
});

test('numbers, integers, ranges and choices are checked at parse time', () => {
  usage(() => parseCommand(TRAIN, [...D, '--lr', 'abc']), /--lr expects a number, got 'abc'/);
  usage(() => parseCommand(TRAIN, [...D, '--lr', '']), /--lr expects a number/);
  usage(() => parseCommand(TRAIN, [...D, '--lr', '0x10']), /--lr expects a number/);
  usage(() => parseCommand(TRAIN, [...D, '--lr', 'Infinity']), /--lr expects a number/);
  usage(() => parseCommand(TRAIN, [...D, '--lr=-1']), /--lr must be in \[0, 10\]/);
  usage(() => parseCommand(TRAIN, [...D, '--r', '2.5']), /--r expects an integer/);
  usage(() => parseCommand(TRAIN, [...D, '--r', '0']), /--r must be in \[1, 8192\]/);
  usage(() => parseCommand(TRAIN, [...D, '--r', '100000000']), /--r must be in \[1, 8192\]/);
  usage(() => parseCommand(TRAIN, [...D, '--max-length', '0']), /--max-length must be in \[1, /);
  usage(() => parseCommand(TRAIN, [...D, '--max-steps', '0']), /--max-steps must be a positive integer/);
  usage(() => parseCommand(TRAIN, [...D, '--lora-dropout', '1']), /--lora-dropout must be in \[0, 1\)/);
  usage(() => parseCommand(TRAIN, [...D, '--warmup-ratio', '1.5']), /--warmup-ratio must be in \[0, 1\]/);
  usage(() => parseCommand(TRAIN, [...D, '--scheduler', 'cosin']), /--scheduler must be one of linear, cosine/);
  usage(() => parseCommand(TRAIN, [...D, '--task', 'seq2seq-x']), /--task must be (one of )?seq-cls, token-cls, causal-lm,? (or )?seq2seq-lm/);
  usage(() => parseCommand(TRAIN, [...D, '--non-finite-action', 'ignore']), /--non-finite-action must be error or skip/);
  usage(() => parseCommand(GENERATE, ['--prompt', 'a', '--top-p', '2']), /--top-p must be in \(0, 1\], got 2/);
  usage(() => parseCommand(GENERATE, ['--prompt', 'a', '--top-p', '0']), /--top-p must be in \(0, 1\]/);
  usage(() => parseCommand(GENERATE, ['--prompt', 'a', '--temperature', '0']), /--temperature must be/);
  usage(() => parseCommand(GENERATE, ['--prompt', 'a', '--num-beams', '0']), /--num-beams must be in \[1, 1024\]/);
  usage(() => parseCommand(GENERATE, ['--prompt', 'a', '--max-new-tokens', '-3']), /--max-new-tokens must be in \[1, /);
  const o = parseCommand(TRAIN, [...D, '--lr', '1e-3', '--r', '4', '--max-length', '64', '--lr-scheduler-type', 'cosine', '--seed=-0']);
  assert.equal(o.learningRate, 1e-3); assert.equal(o.r, 4); assert.equal(o.maxLength, 64); assert.equal(o.lrSchedulerType, 'cosine');
});

test("names are TrainingArguments' and LoraConfig's in kebab-case; the short ones stay; camelCase gets a hint", () => {
  const long = parseCommand(TRAIN, [...D, '--learning-rate', '0.01', '--max-steps', '7', '--per-device-train-batch-size', '4',
    '--gradient-accumulation-steps', '2', '--num-train-epochs', '2', '--lora-alpha', '32', '--per-device-eval-batch-size', '3']);
  const short = parseCommand(TRAIN, [...D, '--lr', '0.01', '--max-steps', '7', '--batch-size', '4', '--grad-accum', '2', '--epochs', '2',
    '--lora-alpha', '32', '--eval-batch-size', '3']);
  for (const k of ['learningRate', 'maxSteps', 'perDeviceTrainBatchSize', 'gradientAccumulationSteps', 'numTrainEpochs', 'loraAlpha', 'perDeviceEvalBatchSize'] as const) {
    assert.equal(long[k], short[k], k);
  }
  assert.equal(long.learningRate, 0.01); assert.equal(long.perDeviceTrainBatchSize, 4);
  usage(() => parseCommand(TRAIN, [...D, '--maxSteps', '3']), /unknown option --maxSteps \(did you mean --max-steps\?\)/);
  usage(() => parseCommand(TRAIN, [...D, '--learningRate', '3']), /did you mean --learning-rate\?/);
  usage(() => parseCommand(TRAIN, [...D, '--max-step', '3']), /did you mean --max-steps\?/);
  usage(() => parseCommand(TRAIN, [...D, '--lr', '1', '--learning-rate', '2']), /--lr and --learning-rate are the same option/);
  // switches: --x, --no-x, --x=false
  assert.equal(parseCommand(TRAIN, [...D, '--use-dora']).useDora, true);
  assert.equal(parseCommand(TRAIN, [...D, '--use-dora=false']).useDora, false);
  assert.equal(parseCommand(GENERATE, ['--prompt', 'a', '--no-stream']).stream, false);
  assert.equal(parseCommand(GENERATE, ['--prompt', 'a']).stream, true);
  usage(() => parseCommand(TRAIN, [...D, '--use-dora=maybe']), /--use-dora is a switch/);
  usage(() => parseCommand(TRAIN, []), /--data is required/);
});

test('--config: snake_case TrainingArguments keys, typed; flags win', () => {
  const cfg = (name: string, v: unknown) => { const f = join(tmp, name); writeFileSync(f, typeof v === 'string' ? v : JSON.stringify(v)); return f; };
  const good = cfg('good.json', { learning_rate: 0.005, max_steps: 9, per_device_train_batch_size: 2, r: 4, target_modules: ['c_attn', 'c_fc'], use_dora: true, lr_scheduler_type: 'cosine', 'lora-dropout': 0.1, loraAlpha: 8 });
  const o = parseCommand(TRAIN, [...D, '--config', good, '--max-steps', '3']);
  assert.equal(o.learningRate, 0.005); assert.equal(o.maxSteps, 3); assert.equal(o.perDeviceTrainBatchSize, 2); assert.equal(o.r, 4);
  assert.deepEqual(o.targetModules, ['c_attn', 'c_fc']); assert.equal(o.useDora, true); assert.equal(o.lrSchedulerType, 'cosine');
  assert.equal(o.loraDropout, 0.1); assert.equal(o.loraAlpha, 8);
  usage(() => parseCommand(TRAIN, [...D, '--config', cfg('b1.json', { r: true })]), /"r" expects an integer, got true/);
  usage(() => parseCommand(TRAIN, [...D, '--config', cfg('b2.json', { target_modules: 5 })]), /"target_modules" expects a list of names or a regex string, got 5/);
  usage(() => parseCommand(TRAIN, [...D, '--config', cfg('b3.json', { learning_rate: 'fast' })]), /"learning_rate" expects a number/);
  usage(() => parseCommand(TRAIN, [...D, '--config', cfg('b4.json', { use_dora: 'yes' })]), /"use_dora" is a switch/);
  usage(() => parseCommand(TRAIN, [...D, '--config', cfg('b5.json', { learning_rat: 1 })]), /unknown option "learning_rat".*learning-rate/);
  usage(() => parseCommand(TRAIN, [...D, '--config', cfg('b6.json', [1, 2])]), /expected a JSON object of options, got an array/);
  usage(() => parseCommand(TRAIN, [...D, '--config', cfg('b7.json', { max_steps: 0 })]), /"max_steps" must be a positive integer/);
  assert.throws(() => parseCommand(TRAIN, [...D, '--config', cfg('b8.json', '{"r": ')]), /b8\.json: invalid JSON/);
  assert.throws(() => parseCommand(TRAIN, [...D, '--config', join(tmp, 'none.json')]), /none\.json: no such file/);
  assert.equal(parseCommand(TRAIN, [...D, '--config', cfg('bom.json', '\uFEFF{"r": 2}')]).r, 2);
});

test('--help of every command is generated from its schema and lists every flag', () => {
  for (const def of [TRAIN, GENERATE, PREDICT, EVAL, MERGE, INSPECT, DEMO] as unknown as CommandDef[]) {
    const h = helpText(def);
    assert.match(h, new RegExp(`^peft-ts ${def.name}: `));
    for (const [k, s] of Object.entries(def.options)) {
      assert.ok(h.includes(`--${k}`), `${def.name} --help shows --${k}`);
      for (const a of s.alias ?? []) assert.ok(h.includes(`--${a}`), `${def.name} --help shows alias --${a}`);
    }
    assert.equal(parseCommand(def, ['--help']).help, true);
  }
});

test('commandOptions: code that runs a command (the demo) goes through the same checks', () => {
  const o = trainOptions({ data: 'x', maxSteps: 3, learningRate: 0.1 });
  assert.equal(o.maxSteps, 3); assert.equal(o.r, 8); assert.equal(o.outputDir, 'runs/train');
  assert.throws(() => trainOptions({ data: 'x', maxSteps: '3x' }), /maxSteps expects an integer/);
  assert.throws(() => trainOptions({ data: 'x', maxStep: 3 }), /unknown option --max-step/);
});

test('the binary: usage errors exit 2 before any model is loaded, with one line and no stack', () => {
  const cli = (...a: string[]) => spawnSync(process.execPath, [CLI, ...a], { cwd: root, encoding: 'utf8', env: { ...process.env, PEFT_TS_DEBUG: '' } });
  for (const [args, re] of [
    [['train', '--data', 'assets/data/kjv_section_train.jsonl', '--lr'], /--lr needs a value/],
    [['train', '--data', 'assets/data/kjv_section_train.jsonl', '--maxSteps', '2'], /did you mean --max-steps/],
    [['generate', '--prompt', 'x', '--top-p', '2'], /--top-p must be in \(0, 1\]/],
    [['merge', '--adapter', 'a', '--output-dir', 'b', '--seed', 'x'], /--seed expects an integer/],
    [['train', '--data', 'assets/data/kjv_section_train.jsonl', '--max-length', '0'], /--max-length must be/],
  ] as const) {
    // --model names no folder: had anything been loaded first, that would be the error.
    const r = cli(...args, '--model', '/nonexistent/peft-ts-model');
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, re);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
  const g = cli('generate', '--prompt=-- the LORD', '--max-new-tokens', '2', '--no-stream');
  assert.equal(g.status, 0, g.stderr);
  assert.ok(g.stdout.startsWith('-- the LORD'), g.stdout);
});
