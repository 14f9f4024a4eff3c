import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tensor } from '../src/tensor/ops/basic.js';
import { AdamW, clipGradNorm, decayParameterNames, paramGroups } from '../src/train/optim.js';
import { LRScheduler, SchedulerType, warmupStepsFor } from '../src/train/schedulers.js';
import { TrainingArguments } from '../src/train/args.js';
import { accuracy, f1Score, precisionRecallF1, perplexity, softmaxRows } from '../src/train/metrics.js';
import { ToyClassifier } from './fixtures/train/toys.js';

// Compiled tests run from <out>/test; fixtures stay in the source tree (the cwd under npm test).
const fx = (f: string) => JSON.parse(fs.readFileSync(path.join(process.cwd(), 'test', 'fixtures', 'train', f), 'utf8'));

test('schedulers match transformers.get_scheduler step by step', () => {
  for (const c of fx('schedulers.json')) {
    const kw = c.kwargs as Record<string, number>;
    const s = new LRScheduler(c.name as SchedulerType, c.base, {
      numWarmupSteps: c.warmup, numTrainingSteps: c.total, numCycles: kw.num_cycles, power: kw.power, lrEnd: kw.lr_end, minLrRate: kw.min_lr_rate,
    });
    (c.lrs as number[]).forEach((want, i) => {
      const got = s.lr();
      assert.ok(Math.abs(got - want) <= 1e-12 + 1e-9 * Math.abs(want), `${c.name} step ${i}: ${got} vs ${want}`);
      s.step();
    });
  }
});

test('warmup steps: count, ratio (ceil) and transformers 5 fractional warmupSteps', () => {
  assert.equal(warmupStepsFor(100, 7, 0), 7);
  assert.equal(warmupStepsFor(100, 0, 0.031), 4);
  assert.equal(warmupStepsFor(10, 0.25, 0), 3);
});

test('AdamW matches torch.optim.AdamW over 3 steps (decay and no-decay groups)', () => {
  const f = fx('adamw.json');
  const w = tensor(f.w0, [3, 4], { requiresGrad: true }), b = tensor(f.b0, [4], { requiresGrad: true });
  const opt = new AdamW([{ params: [['w', w]], weightDecay: f.wd }, { params: [['b', b]], weightDecay: 0 }],
    { lr: f.lr, betas: [f.beta1, f.beta2], eps: f.eps });
  for (const s of f.steps) {
    w.grad = tensor(s.gw, [3, 4]); b.grad = tensor(s.gb, [4]);
    opt.step();
    w.data.forEach((v, i) => assert.ok(Math.abs(v - s.w[i]) < 1e-6, `w[${i}] ${v} vs ${s.w[i]}`));
    b.data.forEach((v, i) => assert.ok(Math.abs(v - s.b[i]) < 1e-6, `b[${i}] ${v} vs ${s.b[i]}`));
  }
  // state round trip: a fresh optimizer loaded from the state continues identically
  const st = opt.stateDict();
  const w2 = tensor(w.data.slice(), [3, 4], { requiresGrad: true }), b2 = tensor(b.data.slice(), [4], { requiresGrad: true });
  const opt2 = new AdamW([{ params: [['w', w2]], weightDecay: f.wd }, { params: [['b', b2]], weightDecay: 0 }], { lr: f.lr, betas: [f.beta1, f.beta2], eps: f.eps });
  opt2.loadStateDict(st);
  const g = f.steps[0];
  w.grad = tensor(g.gw, [3, 4]); b.grad = tensor(g.gb, [4]); w2.grad = tensor(g.gw, [3, 4]); b2.grad = tensor(g.gb, [4]);
  opt.step(); opt2.step();
  assert.deepEqual(Array.from(w2.data), Array.from(w.data));
  assert.deepEqual(Array.from(b2.data), Array.from(b.data));
  assert.throws(() => opt2.loadStateDict({ step: 1, m: new Map([['zzz', new Float32Array(1)]]), v: new Map() }), /zzz/);
});

test('clipGradNorm matches torch.nn.utils.clip_grad_norm_', () => {
  const f = fx('clip.json');
  const a = tensor(new Float32Array(5), [5], { requiresGrad: true }), c = tensor(new Float32Array(6), [2, 3], { requiresGrad: true });
  a.grad = tensor(f.ga, [5]); c.grad = tensor(f.gc, [2, 3]);
  const n = clipGradNorm([a, c], 1.0);
  assert.ok(Math.abs(n - f.norm) < 1e-5 * f.norm);
  a.grad.data.forEach((v, i) => assert.ok(Math.abs(v - f.ca[i]) < 1e-6));
  c.grad.data.forEach((v, i) => assert.ok(Math.abs(v - f.cc[i]) < 1e-6));
  // under the limit: untouched
  const before = Array.from(a.grad.data);
  clipGradNorm([a], 100);
  assert.deepEqual(Array.from(a.grad.data), before);
});

test('weight decay skips biases and LayerNorm weights, by name and module type', () => {
  const m = new ToyClassifier(10, 4, 2);
  assert.deepEqual([...decayParameterNames(m)].sort(), ['classifier.weight', 'embed.weight']);
  const g = paramGroups(m, 0.1);
  assert.deepEqual(g[1].params.map(([n]) => n).sort(), ['classifier.bias', 'norm.bias', 'norm.weight']);
  assert.equal(g[1].weightDecay, 0);
  m.requiresGrad_(false);
  assert.throws(() => paramGroups(m, 0.1), /no trainable parameters/);
});

test('TrainingArguments defaults and validation', () => {
  const a = new TrainingArguments({ outputDir: '/tmp/x' });
  assert.equal(a.learningRate, 5e-5); assert.equal(a.maxGradNorm, 1); assert.equal(a.lrSchedulerType, 'linear');
  assert.equal(a.perDeviceTrainBatchSize, 8); assert.equal(a.adamEpsilon, 1e-8);
  assert.throws(() => new TrainingArguments({ outputDir: '/tmp/x', learningRat: 1 } as never), /unknown option.*learningRat/);
  assert.throws(() => new TrainingArguments({ outputDir: '/tmp/x', loadBestModelAtEnd: true }), /evalStrategy/);
  const b = new TrainingArguments({ outputDir: '/tmp/x', evalStrategy: 'steps', evalSteps: 2, saveSteps: 4, loadBestModelAtEnd: true });
  assert.equal(b.metricForBestModel, 'loss'); assert.equal(b.greaterIsBetter, false);
  const c = new TrainingArguments({ outputDir: '/tmp/x', metricForBestModel: 'accuracy' });
  assert.equal(c.greaterIsBetter, true);
  assert.match(new TrainingArguments({ outputDir: '/tmp/x', fp16: true }).computeDtypeNote!, /float32/);
  assert.equal(new TrainingArguments({ outputDir: '/tmp/x', bf16: true }).computeDtypeNote, null);
  assert.throws(() => new TrainingArguments({ outputDir: '/tmp/x', lrSchedulerType: 'nope' as never }), /nope/);
});

test('metrics: accuracy, precision/recall/F1 (sklearn definitions, hand-counted), perplexity', () => {
  const y = [0, 1, 1, 0, 1, 2, 2, 0], p = [0, 1, 0, 0, 1, 2, 1, 2];
  assert.equal(accuracy(p, y), 5 / 8);
  // per class (tp, fp, fn): 0 -> (2,1,1), 1 -> (2,1,1), 2 -> (1,1,1): F1 2/3, 2/3, 1/2
  const r = precisionRecallF1(p, y, { average: 'macro' });
  assert.ok(Math.abs(r.f1 - (2 / 3 + 2 / 3 + 0.5) / 3) < 1e-12);
  assert.ok(Math.abs(r.precision - (2 / 3 + 2 / 3 + 0.5) / 3) < 1e-12);
  // weighted by support 3, 3, 2; micro F1 equals accuracy for single-label data
  assert.ok(Math.abs(precisionRecallF1(p, y, { average: 'weighted' }).f1 - (3 * 2 / 3 + 3 * 2 / 3 + 2 * 0.5) / 8) < 1e-12);
  assert.ok(Math.abs(precisionRecallF1(p, y, { average: 'micro' }).f1 - 5 / 8) < 1e-12);
  // binary: y=[1,0,1,1], p=[1,1,0,1] -> p=2/3, r=2/3, f1=2/3
  assert.ok(Math.abs(f1Score([1, 1, 0, 1], [1, 0, 1, 1]) - 2 / 3) < 1e-12);
  assert.throws(() => f1Score(p, y, 'binary'), /macro/);
  assert.ok(Math.abs(perplexity(Math.log(7)) - 7) < 1e-12);
  const s = softmaxRows(Float32Array.from([0, Math.log(3)]), 2);
  assert.ok(Math.abs(s[1] - 0.75) < 1e-6);
});
