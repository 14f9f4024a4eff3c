// The Trainer leaves the event loop free (timers fire during train / evaluate / predict),
// reports progress as events, and an AbortSignal stops it with a checkpoint that a resume
// continues from exactly. Also the console: log lines above the bar, evaluation notice,
// steady number formats, no duplicate final evaluation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Trainer, TrainingAbortedError, TrainProgress } from '../src/train/trainer.js';
import { TrainerCallback, formatLogValue } from '../src/train/callbacks.js';
import { AbortError } from '../src/tensor/yield.js';
import { ToyClassifier, paramValues, toyRows } from './fixtures/train/toys.js';

const tmp = (n: string) => fs.mkdtempSync(path.join(os.tmpdir(), `async-${n}-`));
const quiet = { write: () => true, isTTY: false };

const rows = toyRows;
const params = paramValues;

/** Stands in for real compute: each optimizer step holds the thread for `ms` milliseconds. */
const busy = (ms: number): TrainerCallback => ({
  onStepBegin: () => { const t = performance.now(); while (performance.now() - t < ms); },
});

test('a 10 ms timer keeps firing while train(), evaluate() and predict() run', async () => {
  const data = rows(40);
  let ticks = 0;
  const timer = setInterval(() => { ticks++; }, 10);
  try {
    const t = new Trainer({ model: new ToyClassifier(10, 8, 2), trainDataset: data, evalDataset: data, progressStream: quiet, callbacks: [busy(6)],
      args: { outputDir: tmp('loop'), perDeviceTrainBatchSize: 2, perDeviceEvalBatchSize: 1, maxSteps: 50, saveStrategy: 'no', plotCurves: false, reportTo: 'none' } });
    const t0 = performance.now();
    await t.train();
    const ms = performance.now() - t0;
    // 50 steps of >= 6 ms: >= 300 ms, so >= ~30 ticks when the loop is free between steps; 0 when blocked.
    assert.ok(ms >= 300, `train took ${ms} ms`);
    assert.ok(ticks >= 10, `the timer fired ${ticks} times in ${ms.toFixed(0)} ms of training`);

    // Evaluation: 40 batches of one row; hold each prediction step for 3 ms.
    const slow: TrainerCallback = { onPredictionStep: () => { const s = performance.now(); while (performance.now() - s < 3); } };
    t.addCallback(slow);
    ticks = 0;
    await t.evaluate();
    const afterEval = ticks;
    assert.ok(afterEval >= 4, `the timer fired ${afterEval} times during evaluate()`);
    ticks = 0;
    const p = await t.predict(data);
    assert.equal(p.predictionsShape[0], 40);
    assert.ok(ticks >= 4, `the timer fired ${ticks} times during predict()`);
  } finally {
    clearInterval(timer);
  }
});

test("'progress', 'log', 'evaluate' and 'save' events", async () => {
  const data = rows(16);
  const t = new Trainer({ model: new ToyClassifier(10, 8, 2), trainDataset: data, evalDataset: data.slice(0, 4), progressStream: quiet,
    args: { outputDir: tmp('events'), perDeviceTrainBatchSize: 4, maxSteps: 6, loggingSteps: 2, evalStrategy: 'steps', evalSteps: 3, saveSteps: 3, plotCurves: false } });
  const progress: TrainProgress[] = [], logs: number[] = [], evals: number[] = [], saves: string[] = [];
  t.on('progress', (p) => progress.push(p));
  t.on('log', (l) => { if (l.loss !== undefined) logs.push(l.step); });
  t.on('evaluate', (m) => evals.push(m.eval_loss));
  t.on('save', (d) => saves.push(path.basename(d)));
  await t.train();
  assert.deepEqual(progress.map((p) => p.globalStep), [1, 2, 3, 4, 5, 6]);
  assert.ok(progress.every((p) => p.maxSteps === 6 && p.elapsed >= 0));
  assert.equal(progress[0].loss, null);
  assert.equal(progress[1].loss, t.state.logHistory.find((h) => h.step === 2 && h.loss !== undefined)!.loss);
  assert.deepEqual(progress.map((p) => p.epoch.toFixed(2)), ['0.25', '0.50', '0.75', '1.00', '1.25', '1.50']);
  assert.deepEqual(logs, [2, 4, 6]);
  assert.equal(evals.length, 2);
  assert.deepEqual(saves, ['checkpoint-3', 'checkpoint-6']);
  // finalEvaluation: the evaluation of the last step, reused instead of evaluating again.
  assert.equal(t.finalEvaluation()!.eval_loss, evals[1]);
});

test('an AbortSignal stops training with a checkpoint; resuming from it gives the uninterrupted weights', async () => {
  const data = rows(24, 6, 5);
  const args = (dir: string) => ({
    outputDir: dir, perDeviceTrainBatchSize: 4, gradientAccumulationSteps: 2, numTrainEpochs: 2, learningRate: 5e-2,
    weightDecay: 0.1, warmupSteps: 1, lrSchedulerType: 'cosine' as const, saveStrategy: 'no' as const, loggingSteps: 1, plotCurves: false,
  });
  const full = new ToyClassifier(10, 8, 2, 3, 0.3);
  await new Trainer({ model: full, trainDataset: data, progressStream: quiet, args: args(tmp('full')) }).train();

  const dir = tmp('abort');
  const ac = new AbortController();
  const t1 = new Trainer({ model: new ToyClassifier(10, 8, 2, 3, 0.3), trainDataset: data, progressStream: quiet, args: args(dir) });
  // Abort from outside the training loop (a timer callback), as a server would.
  t1.on('progress', (p) => { if (p.globalStep === 4) setImmediate(() => ac.abort()); });
  const err = await t1.train({ signal: ac.signal }).then(() => null, (e: unknown) => e);
  assert.ok(err instanceof TrainingAbortedError, String(err));
  assert.ok(err instanceof AbortError);
  assert.equal((err as Error).name, 'AbortError');
  const ck = (err as TrainingAbortedError).checkpoint!;
  const stopped = (err as TrainingAbortedError).globalStep;
  assert.ok(stopped >= 4 && stopped < 6, `stopped at ${stopped}`);
  assert.equal(path.basename(ck), `checkpoint-${stopped}`);
  assert.ok(fs.existsSync(path.join(ck, 'trainer_state.json')));

  const resumed = new ToyClassifier(10, 8, 2, 99, 0.3);
  await new Trainer({ model: resumed, trainDataset: data, progressStream: quiet, args: args(dir) }).train({ resumeFromCheckpoint: true });
  const a = params(full), b = params(resumed);
  for (const [n, v] of a) assert.deepEqual(b.get(n), v, `${n} differs after abort + resume`);

  // Already aborted: nothing runs, nothing is saved.
  const dir2 = tmp('pre');
  const e2 = await new Trainer({ model: new ToyClassifier(10, 8, 2), trainDataset: data, progressStream: quiet, args: args(dir2) })
    .train({ signal: AbortSignal.abort() }).then(() => null, (e: unknown) => e);
  assert.ok(e2 instanceof TrainingAbortedError && e2.checkpoint === null);
  assert.deepEqual(fs.readdirSync(dir2), []);
});

test('an abort during an evaluation stops it at the next batch and still saves the checkpoint', async () => {
  const data = rows(16);
  const ac = new AbortController();
  let evalBatches = 0;
  const abortInEval: TrainerCallback = { onPredictionStep: () => { if (++evalBatches === 2) ac.abort(); } };
  const dir = tmp('abort-eval');
  const t = new Trainer({ model: new ToyClassifier(10, 8, 2), trainDataset: data, evalDataset: data, progressStream: quiet, callbacks: [abortInEval],
    args: { outputDir: dir, perDeviceTrainBatchSize: 4, perDeviceEvalBatchSize: 2, maxSteps: 8, evalStrategy: 'steps', evalSteps: 3, saveStrategy: 'no', plotCurves: false } });
  const err = await t.train({ signal: ac.signal }).then(() => null, (e: unknown) => e) as TrainingAbortedError;
  assert.ok(err instanceof TrainingAbortedError);
  assert.equal(evalBatches, 2);
  assert.equal(err.globalStep, 3);
  assert.ok(fs.existsSync(path.join(dir, 'checkpoint-3', 'trainer_state.json')));
  assert.ok(!t.state.logHistory.some((h) => h.eval_loss !== undefined), 'a cut-short evaluation is not logged');
});

test('console: log lines above the bar, an evaluating notice, steady number formats, ETA from step time', async () => {
  let out = '';
  const stream = { write: (s: string) => { out += s; return true; }, isTTY: true };
  const data = rows(16);
  const slowEval: TrainerCallback = { onPredictionStep: () => { const s = performance.now(); while (performance.now() - s < 400); } };
  await new Trainer({ model: new ToyClassifier(10, 8, 2), trainDataset: data, evalDataset: data.slice(0, 4), progressStream: stream, callbacks: [slowEval],
    args: { outputDir: tmp('tty'), perDeviceTrainBatchSize: 4, perDeviceEvalBatchSize: 2, maxSteps: 6, loggingSteps: 2, evalStrategy: 'steps', evalSteps: 3, saveStrategy: 'no', plotCurves: false } }).train();
  // Each log line clears the bar's line, is printed whole on its own line, and the bar is redrawn below.
  const evalLines = out.split('\n').filter((l) => l.includes('eval_loss=')).map((l) => l.slice(l.lastIndexOf('\r\x1b[K')));
  assert.equal(evalLines.length, 2);
  for (const l of evalLines) assert.match(l, /^\r\x1b\[K\[step [36]\/6\] eval_loss=\d+\.\d{4} eval_runtime=\d+\.\d{2} eval_samples_per_second=\d+\.\d epoch=\d\.\d{2}$/);
  assert.match(out, /evaluating 2\/4…/);
  assert.match(out, /evaluating 4\/4…/);
  // After the lines, the bar is drawn again.
  assert.match(out, /eval_loss=[^\n]*\n\r[█░]+ 3\/6/);
  // it/s and the ETA count step time only: each evaluation holds the thread 0.8 s, so a rate
  // that included it would be <= 3 steps / 0.8 s = 3.75 it/s after the first one. The toy
  // steps take milliseconds (tens under heavy load), far above 8 it/s.
  const rates = [...out.matchAll(/ ([\d.]+) it\/s/g)].map((m) => Number(m[1]));
  assert.ok(rates.length >= 6 && rates.every((r) => r > 8), `rates ${rates}`);
  const epochs = [...out.matchAll(/epoch=([\d.]+)/g)].map((m) => m[1]);
  assert.ok(epochs.length > 0 && epochs.every((e) => /^\d+\.\d\d$/.test(e)), `epochs ${epochs}`);
  assert.equal(formatLogValue('epoch', 1), '1.00');
  assert.equal(formatLogValue('epoch', 0.5), '0.50');
  assert.equal(formatLogValue('learning_rate', 0.0002), '2.00e-4');
  assert.equal(formatLogValue('loss', 1.5), '1.5000');
});
