// Probes of training runs and their output folders: a finished run resumed trains no
// further, a fresh run does not mix with another run's checkpoints, folders left by a crash
// mid-write are cleaned, unwritable output folders fail at once with a clear message,
// non-finite losses stop training (or are skipped on request) and never reach the adapter,
// predict refuses NaN scores, and merge never writes over its inputs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runTrain, trainOptions } from '../src/cli/commands/train.js';
import { classify } from '../src/cli/commands/predict.js';
import { loadTokenizer } from '../src/cli/common.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { makeDirs } from '../src/io/files.js';
import { AutoModelForCausalLM, AutoModelForSequenceClassification } from '../src/models/index.js';
import { LoraConfig, getPeftModel } from '../src/peft/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = [path.resolve(here, '../..'), path.resolve(here, '..'), process.cwd()].find((p) => fs.existsSync(path.join(p, 'assets', 'default-model')))!;
const CLI = path.resolve(here, '../src/cli/main.js');
const MODEL = path.join(root, 'assets', 'default-model');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-probe-train-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
const quiet = () => {};

const lines = fs.readFileSync(path.join(root, 'assets', 'data', 'kjv_section_train.jsonl'), 'utf8').split('\n').filter(Boolean);
const DATA = path.join(tmp, 'train.jsonl');
fs.writeFileSync(DATA, lines.slice(0, 16).join('\n') + '\n');
const base = { data: DATA, task: 'seq-cls', maxLength: 32, perDeviceTrainBatchSize: 4, learningRate: 1e-2, r: 2, loggingSteps: 1 };
const cli = (...a: string[]) => spawnSync(process.execPath, [CLI, ...a], { cwd: root, encoding: 'utf8', timeout: 60_000, env: { ...process.env, PEFT_TS_DEBUG: '' } });
const steps = (dir: string) => fs.readFileSync(path.join(dir, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => 'loss' in e).map((e) => e.step);

test('resuming a finished run trains no further and leaves the adapter as it was', async () => {
  const out = path.join(tmp, 'finished');
  // 16 rows / batch 4 = 4 steps an epoch: max-steps 6 ends mid-epoch, where a resume used to redo the tail.
  const r1 = await runTrain(trainOptions({ ...base, outputDir: out, maxSteps: 6, saveSteps: 3 }), quiet);
  assert.equal(r1.globalStep, 6);
  const adapter = fs.readFileSync(path.join(out, 'adapter_model.safetensors'));
  for (let i = 0; i < 2; i++) {
    const r = await runTrain(trainOptions({ ...base, outputDir: out, maxSteps: 6, saveSteps: 3, resume: true }), quiet);
    assert.equal(r.globalStep, 6, 'no step past max-steps');
    assert.ok(fs.readFileSync(path.join(out, 'adapter_model.safetensors')).equals(adapter), 'adapter unchanged');
  }
  assert.deepEqual(steps(out), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(fs.readdirSync(out).filter((d) => d.startsWith('checkpoint-')).sort(), ['checkpoint-3', 'checkpoint-6']);
});

test("a fresh run into another run's checkpoints is refused unless overwrite or resume; crash leftovers are removed", async () => {
  const out = path.join(tmp, 'reuse');
  await runTrain(trainOptions({ ...base, outputDir: out, maxSteps: 8, saveSteps: 4 }), quiet);
  await assert.rejects(runTrain(trainOptions({ ...base, outputDir: out, maxSteps: 2, saveSteps: 1, saveTotalLimit: 1 }), quiet),
    /output folder .*reuse already holds checkpoints of another run \(checkpoint-4, checkpoint-8\).*--resume.*--overwrite-output-dir/);
  assert.ok(fs.existsSync(path.join(out, 'checkpoint-8')), 'nothing deleted by the refused run');
  // A crash mid-checkpoint leaves .tmp-checkpoint-<step>-<pid>: removed when the next run starts.
  const stale = path.join(out, '.tmp-checkpoint-9-2147483646');
  fs.mkdirSync(stale);
  fs.writeFileSync(path.join(stale, 'adapter_model.safetensors'), 'half');
  const r = await runTrain(trainOptions({ ...base, outputDir: out, maxSteps: 2, saveSteps: 1, saveTotalLimit: 1, overwriteOutputDir: true }), quiet);
  assert.equal(r.globalStep, 2);
  assert.deepEqual(fs.readdirSync(out).filter((d) => d.includes('checkpoint')).sort(), ['checkpoint-2'], "only this run's newest checkpoint");
  assert.ok(!fs.existsSync(stale));
  assert.deepEqual(steps(out), [1, 2]);
});

test('output folders that cannot be written fail at once with the reason, never ENOENT or a spin', () => {
  // Node's recursive mkdir loops forever on /proc/x: the CLI must fail within the timeout.
  const t0 = Date.now();
  const r = cli('train', '--data', DATA, '--output-dir', '/proc/peft-ts-probe/x', '--max-steps', '1');
  assert.equal(r.error, undefined, 'did not time out');
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /output folder \/proc\/peft-ts-probe\/x: cannot create \/proc\/peft-ts-probe/);
  assert.ok(Date.now() - t0 < 30_000);
  assert.throws(() => makeDirs(path.join(DATA, 'sub')), /train\.jsonl is not a folder|not a folder/);
  // Read-only: a chmod 555 folder (root ignores modes, so then /sys, which refuses mkdir).
  let ro = path.join(tmp, 'ro');
  fs.mkdirSync(ro);
  fs.chmodSync(ro, 0o555);
  if (process.getuid?.() === 0) ro = '/sys';
  if (fs.existsSync(ro)) {
    assert.throws(() => makeDirs(path.join(ro, 'peft-ts-probe', 'out')), (e: Error) => {
      assert.match(e.message, /permission denied, (EACCES|EPERM)|read-only file system, EROFS/);
      assert.doesNotMatch(e.message, /ENOENT/);
      return true;
    });
  }
});

function nanModelDir(): string {
  const d = path.join(tmp, 'nan-model');
  if (fs.existsSync(d)) return d;
  fs.mkdirSync(d);
  for (const f of fs.readdirSync(MODEL)) if (f !== 'model.safetensors') fs.copyFileSync(path.join(MODEL, f), path.join(d, f));
  const w = readSafetensors(path.join(MODEL, 'model.safetensors'));
  w.get('transformer.h.0.mlp.c_fc.weight')!.data[0] = NaN;
  writeSafetensors(path.join(d, 'model.safetensors'), w, { format: 'pt' });
  return d;
}

test('a non-finite loss stops training with a clear error; with skip, no update reaches the adapter', async () => {
  const model = nanModelDir();
  const out = path.join(tmp, 'nan-run');
  await assert.rejects(runTrain(trainOptions({ ...base, model, outputDir: out, maxSteps: 3 }), quiet),
    /non-finite loss NaN at step 1 .*--non-finite-action skip/);
  assert.ok(!fs.existsSync(path.join(out, 'adapter_model.safetensors')), 'no all-NaN adapter saved');
  const r = cli('train', '--model', model, '--data', DATA, '--task', 'seq-cls', '--output-dir', path.join(tmp, 'nan-cli'), '--max-steps', '2', '--max-length', '32');
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /hold non-finite values \(NaN \/ Inf\): transformer\.h\.0\.mlp\.c_fc\.weight/);
  assert.match(r.stderr, /error: Trainer: non-finite loss NaN at step 1/);

  const skipOut = path.join(tmp, 'nan-skip');
  const s = await runTrain(trainOptions({ ...base, model, outputDir: skipOut, maxSteps: 3, nonFiniteAction: 'skip' }), quiet);
  assert.equal(s.trainer.state.skippedSteps, 3);
  const ad = readSafetensors(path.join(skipOut, 'adapter_model.safetensors'));
  for (const [k, t] of ad) assert.ok(t.data.every(Number.isFinite), `${k} finite`);
});

test('predict refuses to print NaN scores', () => {
  const tok = loadTokenizer(MODEL);
  const model = AutoModelForSequenceClassification.fromPretrainedSync(nanModelDir(), { numLabels: 2, logger: quiet });
  assert.throws(() => classify(model, tok, ['In the beginning'], { 0: 'a', 1: 'b' }), /non-finite logit \(NaN\) for input 1/);
  const ok = classify(AutoModelForSequenceClassification.fromPretrainedSync(MODEL, { numLabels: 2, logger: quiet }), tok, ['In the beginning'], { 0: 'a', 1: 'b' });
  assert.ok(Number.isFinite(ok[0].score));
});

test('merge never writes over the base model or the adapter', () => {
  const ad = path.join(tmp, 'merge-adapter');
  getPeftModel(AutoModelForCausalLM.fromPretrainedSync(MODEL), new LoraConfig({ r: 2, targetModules: ['c_attn'], fanInFanOut: true, taskType: 'CAUSAL_LM' })).savePretrained(ad);
  const baseCopy = path.join(tmp, 'merge-base');
  fs.cpSync(MODEL, baseCopy, { recursive: true });
  const before = fs.readFileSync(path.join(baseCopy, 'model.safetensors'));
  for (const out of [baseCopy, path.join(baseCopy, 'merged'), ad, tmp]) {
    const r = cli('merge', '--model', baseCopy, '--adapter', ad, '--output-dir', out);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--output-dir .* is \(or holds, or is inside\) --(model|adapter)/);
  }
  assert.ok(fs.readFileSync(path.join(baseCopy, 'model.safetensors')).equals(before));
  assert.ok(!fs.existsSync(path.join(baseCopy, 'merged')));
});

test('a label column missing from the data and a huge rank get clear errors', async () => {
  const noLabel = path.join(tmp, 'nolabel.jsonl');
  fs.writeFileSync(noLabel, '{"text": "a"}\n{"text": "b"}\n');
  await assert.rejects(runTrain(trainOptions({ ...base, data: noLabel, outputDir: path.join(tmp, 'nl'), maxSteps: 1 }), quiet), /nolabel\.jsonl:1: missing column 'label'/);
  const m = AutoModelForCausalLM.fromPretrainedSync(MODEL);
  assert.throws(() => getPeftModel(m, new LoraConfig({ r: 2 ** 24, targetModules: ['c_attn'], fanInFanOut: true })), /LoRA rank r=16777216 is too large for a 128 x 384 layer/);
});
