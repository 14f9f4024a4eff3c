import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Trainer } from '../src/train/trainer.js';
import { EarlyStoppingCallback, TrainerCallback } from '../src/train/callbacks.js';
import { lastCheckpoint, listCheckpoints } from '../src/train/checkpoint.js';
import { classificationMetrics } from '../src/train/metrics.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { memoryStats } from '../src/tensor/index.js';
import { Dataset } from '../src/data/dataset.js';
import { tokenizeCausalLM } from '../src/data/tokenize.js';
import { DataCollatorForLanguageModeling } from '../src/data/collators.js';
import { ToyCausalLM, ToyClassifier, ToyTokenizer, paramValues, toyRows } from './fixtures/train/toys.js';

const tmp = (n: string) => fs.mkdtempSync(path.join(os.tmpdir(), `h5-${n}-`));
const quiet = { write: () => true, isTTY: false };

const rows = toyRows;

const params = paramValues;

test('gradient accumulation 2x4 equals one batch of 8 (mean loss, equal batches)', async () => {
  const data = rows(16);
  const run = async (bs: number, gas: number) => {
    const model = new ToyClassifier(10, 8, 2, 3, 0);
    const t = new Trainer({ model, trainDataset: data, progressStream: quiet, args: {
      outputDir: tmp('acc'), perDeviceTrainBatchSize: bs, gradientAccumulationSteps: gas, maxSteps: 3,
      learningRate: 1e-2, weightDecay: 0.01, saveStrategy: 'no', loggingSteps: 1, plotCurves: false,
    } });
    const out = await t.train();
    assert.equal(out.globalStep, 3);
    return { p: params(model), log: t.state.logHistory.filter((h) => h.loss !== undefined) };
  };
  const a = await run(8, 1), b = await run(4, 2);
  for (const [n, v] of a.p) v.forEach((x, i) => assert.ok(Math.abs(x - b.p.get(n)![i]) < 2e-6, `${n}[${i}] ${x} vs ${b.p.get(n)![i]}`));
  // logged losses (per optimizer step) agree too, and the grad norm is logged
  a.log.forEach((h, i) => { assert.ok(Math.abs(h.loss - b.log[i].loss) < 1e-5); assert.ok(h.grad_norm > 0); });
  // linear schedule: the lr logged for step 1 is the base lr (no warmup), then decreasing
  assert.equal(a.log[0].learning_rate, 1e-2);
  assert.ok(Math.abs(a.log[1].learning_rate - 1e-2 * 2 / 3) < 1e-12);
});

test('resume from a mid-epoch checkpoint gives bitwise the same weights as an uninterrupted run', async () => {
  const data = rows(24, 6, 5);
  const args = (dir: string) => ({
    outputDir: dir, perDeviceTrainBatchSize: 4, gradientAccumulationSteps: 2, numTrainEpochs: 2, learningRate: 5e-2,
    weightDecay: 0.1, warmupSteps: 1, lrSchedulerType: 'cosine' as const, saveSteps: 2, loggingSteps: 1, plotCurves: false,
  });
  // dropout on: the checkpoint must carry the RNG state
  const full = new ToyClassifier(10, 8, 2, 3, 0.3);
  await new Trainer({ model: full, trainDataset: data, progressStream: quiet, args: args(tmp('full')) }).train();

  const dir = tmp('resume');
  const stopAt4: TrainerCallback = { onStepEnd: ({ state, control }) => { if (state.globalStep === 4) control.shouldTrainingStop = true; } };
  const first = new ToyClassifier(10, 8, 2, 3, 0.3);
  const t1 = new Trainer({ model: first, trainDataset: data, progressStream: quiet, args: args(dir), callbacks: [stopAt4] });
  await t1.train();
  assert.equal(t1.state.globalStep, 4);
  assert.equal(path.basename(lastCheckpoint(dir)!), 'checkpoint-4');
  // 3 optimizer steps per epoch: step 4 is inside epoch 2
  const st = JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint-4', 'trainer_state.json'), 'utf8'));
  assert.equal(st.global_step, 4);
  assert.ok(Math.abs(st.epoch - (1 + 2 / 6)) < 1e-12);
  for (const f of ['optimizer.safetensors', 'optimizer.json', 'scheduler.json', 'rng_state.json', 'training_args.json', 'model.safetensors']) {
    assert.ok(fs.existsSync(path.join(dir, 'checkpoint-4', f)), f);
  }

  for (const from of [true, path.join(dir, 'checkpoint-2')] as const) {
    const fresh = new ToyClassifier(10, 8, 2, 99, 0.3); // different init: everything must come from the checkpoint
    const t2 = new Trainer({ model: fresh, trainDataset: data, progressStream: quiet, args: args(dir) });
    await t2.train({ resumeFromCheckpoint: from });
    assert.equal(t2.state.globalStep, 6);
    const a = params(full), b = params(fresh);
    for (const [n, v] of a) assert.deepEqual(b.get(n), v, `${n} differs after resuming from ${from}`);
  }
  // the log of the resumed run continues the interrupted one without duplicates
  const steps = fs.readFileSync(path.join(dir, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((h) => h.loss !== undefined).map((h) => h.step);
  assert.deepEqual(steps, [1, 2, 3, 4, 5, 6]);
  await assert.rejects(new Trainer({ model: fresh(), trainDataset: data, progressStream: quiet, args: args(tmp('none')) }).train({ resumeFromCheckpoint: true }), /no checkpoint/);
  function fresh() { return new ToyClassifier(10, 8, 2, 1, 0); }
});

/** computeMetrics that reports a scripted value per evaluation. */
function scripted(values: number[]) {
  let i = 0;
  return () => ({ score: values[Math.min(i++, values.length - 1)] });
}

test('early stopping after `patience` evaluations without improvement', async () => {
  const data = rows(16);
  const t = new Trainer({
    model: new ToyClassifier(10, 8, 2), trainDataset: data, evalDataset: rows(4, 6, 9), progressStream: quiet,
    computeMetrics: scripted([0.5, 0.6, 0.6, 0.55, 0.9, 0.9]), callbacks: [new EarlyStoppingCallback(2)],
    args: { outputDir: tmp('es'), perDeviceTrainBatchSize: 2, maxSteps: 6, evalStrategy: 'steps', evalSteps: 1, saveStrategy: 'no',
      metricForBestModel: 'score', loggingSteps: 1, plotCurves: false },
  });
  await t.train();
  assert.equal(t.state.globalStep, 4);
  assert.equal(t.state.bestMetric, 0.6);
  assert.equal(t.state.bestGlobalStep, 2);
  // threshold: an improvement smaller than the threshold counts as none
  const t2 = new Trainer({
    model: new ToyClassifier(10, 8, 2), trainDataset: data, evalDataset: rows(4, 6, 9), progressStream: quiet,
    computeMetrics: scripted([0.5, 0.505, 0.51, 0.515]), callbacks: [new EarlyStoppingCallback(2, 0.01)],
    args: { outputDir: tmp('es2'), perDeviceTrainBatchSize: 2, maxSteps: 6, evalStrategy: 'steps', evalSteps: 1, saveStrategy: 'no',
      metricForBestModel: 'score', loggingSteps: 1, plotCurves: false },
  });
  await t2.train();
  assert.equal(t2.state.globalStep, 3);
});

test('checkpoint rotation keeps the best; loadBestModelAtEnd restores its weights', async () => {
  const dir = tmp('best');
  const model = new ToyClassifier(10, 8, 2, 4, 0);
  const seen = new Map<number, Map<string, number[]>>();
  const snap: TrainerCallback = { onSave: ({ state }) => { seen.set(state.globalStep, params(model)); } };
  const t = new Trainer({
    model, trainDataset: rows(16), evalDataset: rows(4, 6, 9), progressStream: quiet,
    computeMetrics: scripted([0.5, 0.9, 0.6, 0.7, 0.65]), callbacks: [snap],
    args: { outputDir: dir, perDeviceTrainBatchSize: 2, maxSteps: 5, learningRate: 0.05, evalStrategy: 'steps', evalSteps: 1, saveSteps: 1,
      saveTotalLimit: 2, loadBestModelAtEnd: true, metricForBestModel: 'score', loggingSteps: 1 },
  });
  await t.train();
  assert.deepEqual(listCheckpoints(dir).map((p) => path.basename(p)), ['checkpoint-2', 'checkpoint-5']);
  assert.equal(t.state.bestModelCheckpoint, path.join(dir, 'checkpoint-2'));
  assert.deepEqual(params(model), seen.get(2));
  assert.notDeepEqual(seen.get(5), seen.get(2));
  const saved = readSafetensors(path.join(dir, 'checkpoint-2', 'model.safetensors'));
  assert.deepEqual(Array.from(saved.get('classifier.weight')!.data), seen.get(2)!.get('classifier.weight'));
  // no temp folders left behind; log and chart written
  assert.deepEqual(fs.readdirSync(dir).filter((d) => d.startsWith('.tmp')), []);
  const log = fs.readFileSync(path.join(dir, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(log.some((h) => h.eval_score === 0.9 && h.step === 2));
  assert.ok(log.some((h) => typeof h.tokens_per_second === 'number' && typeof h.learning_rate === 'number'));
  const svg = fs.readFileSync(path.join(dir, 'training_curves.svg'), 'utf8');
  assert.match(svg, /^<svg[^>]*xmlns/);
  assert.match(svg, /train loss/);
  assert.match(svg, /eval_score/);
  assert.ok((svg.match(/<path /g) ?? []).length >= 2);

  // saveTotalLimit 1: only the best survives the end of training
  const dir1 = tmp('best1');
  await new Trainer({
    model: new ToyClassifier(10, 8, 2, 4, 0), trainDataset: rows(16), evalDataset: rows(4, 6, 9), progressStream: quiet,
    computeMetrics: scripted([0.5, 0.9, 0.6, 0.7]),
    args: { outputDir: dir1, perDeviceTrainBatchSize: 2, maxSteps: 4, evalStrategy: 'steps', evalSteps: 1, saveSteps: 1,
      saveTotalLimit: 1, loadBestModelAtEnd: true, metricForBestModel: 'score', plotCurves: false },
  }).train();
  assert.deepEqual(listCheckpoints(dir1).map((p) => path.basename(p)), ['checkpoint-2']);
});

test('incomplete checkpoint folders are ignored when resuming', () => {
  const dir = tmp('partial');
  fs.mkdirSync(path.join(dir, 'checkpoint-3'));
  fs.writeFileSync(path.join(dir, 'checkpoint-3', 'trainer_state.json'), '{}');
  fs.mkdirSync(path.join(dir, 'checkpoint-7')); // no trainer_state.json: a crash mid-copy
  fs.mkdirSync(path.join(dir, '.tmp-checkpoint-9-1'));
  assert.equal(path.basename(lastCheckpoint(dir)!), 'checkpoint-3');
});

test('evaluate / predict on a classifier: loss, softmax scores, labels, metrics', async () => {
  const model = new ToyClassifier(10, 8, 2, 4, 0);
  const evalRows = rows(7, 6, 9);
  const t = new Trainer({ model, trainDataset: rows(32), evalDataset: evalRows, progressStream: quiet, computeMetrics: classificationMetrics,
    args: { outputDir: tmp('pred'), perDeviceTrainBatchSize: 4, perDeviceEvalBatchSize: 3, numTrainEpochs: 1, learningRate: 0.05, saveStrategy: 'no', plotCurves: false } });
  const before = (await t.evaluate());
  await t.train();
  const after = (await t.evaluate());
  assert.ok(after.eval_loss < before.eval_loss, `${after.eval_loss} !< ${before.eval_loss}`);
  const p = await t.predict(evalRows);
  assert.deepEqual(p.predictionsShape, [7, 2]);
  assert.deepEqual(Array.from(p.labels!), evalRows.map((r) => r.labels as number));
  for (let i = 0; i < 7; i++) assert.ok(Math.abs(p.scores![2 * i] + p.scores![2 * i + 1] - 1) < 1e-6);
  assert.ok(Math.abs(p.metrics.test_loss - after.eval_loss) < 1e-6);
  assert.ok('test_accuracy' in p.metrics && 'test_f1' in p.metrics);
});

test('causal LM: prompt-masked features, padded batches, loss goes down, memory stays flat', async () => {
  const tok = new ToyTokenizer(30);
  const ds = new Dataset([...Array(12)].map((_, i) => ({ prompt: `q ${i % 3} is`, response: ` a${i % 3} b${i % 3} c` })));
  const feats = tokenizeCausalLM(ds, tok, { promptColumn: 'prompt', responseColumn: 'response', maxLength: 16 });
  const model = new ToyCausalLM(30, 16, 2);
  const t = new Trainer({ model, trainDataset: feats, evalDataset: feats, tokenizer: tok, progressStream: quiet,
    dataCollator: DataCollatorForLanguageModeling({ tokenizer: tok }),
    args: { outputDir: tmp('clm'), perDeviceTrainBatchSize: 4, numTrainEpochs: 8, learningRate: 3e-2, saveStrategy: 'no', loggingSteps: 4, plotCurves: false } });
  const before = (await t.evaluate()).eval_loss;
  await t.train();
  const live1 = memoryStats().liveBytes;
  await t.train();
  const live2 = memoryStats().liveBytes;
  assert.ok(Math.abs(live2 - live1) < 64 * 1024, `live memory grew ${live1} -> ${live2}`);
  const after = (await t.evaluate()).eval_loss;
  assert.ok(after < before * 0.7, `${after} vs ${before}`);
  const p = await t.predict(feats.select([0, 1, 2]));
  assert.equal(p.predictionsShape.length, 3);
  assert.equal(p.scores, null);
});

test('progress: a redrawn bar on a TTY, plain lines per log otherwise, nothing with disableTqdm', async () => {
  const run = async (isTTY: boolean, disableTqdm = false) => {
    let out = '';
    const stream = { write: (s: string) => { out += s; return true; }, isTTY };
    await new Trainer({ model: new ToyClassifier(10, 8, 2), trainDataset: rows(8), progressStream: stream,
      args: { outputDir: tmp('prog'), perDeviceTrainBatchSize: 2, maxSteps: 4, loggingSteps: 2, saveStrategy: 'no', plotCurves: false, disableTqdm } }).train();
    return out;
  };
  const tty = await run(true);
  assert.match(tty, /\r.*4\/4 loss \d+\.\d{4} [\d.]+ it\/s \d+ tok\/s ETA/);
  const plain = await run(false);
  assert.deepEqual(plain.trim().split('\n').filter((l) => /\] loss=/.test(l)).map((l) => l.slice(0, 12)), ['[step 2/4] l', '[step 4/4] l']);
  assert.ok(!plain.includes('\r'));
  assert.equal(await run(true, true), '');
});
