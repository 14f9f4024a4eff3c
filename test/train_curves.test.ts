// training_curves.svg: a heading naming the run, model and hyperparameters, every panel on
// one x range, legends outside the plot areas.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Trainer } from '../src/train/trainer.js';
import { classificationMetrics } from '../src/train/metrics.js';
import { trainingCurvesSvg } from '../src/train/curves.js';
import { ToyClassifier, toyRows } from './fixtures/train/toys.js';

const rows = (n: number) => toyRows(n, 6, 3);

const attr = (el: string, name: string) => Number(new RegExp(`\\b${name}="([-\\d.]+)"`).exec(el)![1]);

test('training_curves.svg: titled, one x range for all panels, legend clear of the lines', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'curves-'));
  const data = rows(24);
  await new Trainer({ model: new ToyClassifier(10, 8, 2), trainDataset: data, evalDataset: data.slice(0, 8), computeMetrics: classificationMetrics,
    progressStream: { write: () => true },
    // Evaluations stop at step 9 while training logs run to 10: the panels must still share [0, 10].
    args: { outputDir: dir, runName: 'toy-run', perDeviceTrainBatchSize: 4, maxSteps: 10, loggingSteps: 1, evalStrategy: 'steps', evalSteps: 3,
      saveStrategy: 'no', learningRate: 1e-2, seed: 7 } }).train();
  const svg = fs.readFileSync(path.join(dir, 'training_curves.svg'), 'utf8');
  const title = /class="title">([^<]+)</.exec(svg)![1], sub = /class="subtitle">([^<]+)</.exec(svg)![1];
  assert.match(title, /^toy-run · ToyClassifier$/);
  assert.match(sub, /lr 1\.0e-2 \(linear\), batch 4, 10 steps, seed 7/);
  // One panel per chart: loss, eval_accuracy, eval_f1 ... each with the same x tick labels.
  const rects = [...svg.matchAll(/<rect x="[^"]+" y="[^"]+" width="[^"]+" height="[^"]+" fill="none"[^>]*>/g)].map((m) => m[0]);
  assert.ok(rects.length >= 3, `${rects.length} panels`);
  const ticksOf = (i: number) => {
    const top = attr(rects[i], 'y'), bottom = top + attr(rects[i], 'height');
    return [...svg.matchAll(/<text x="([-\d.]+)" y="([-\d.]+)" text-anchor="middle" font-size="10">([^<]+)</g)]
      .filter((m) => Number(m[2]) > bottom && Number(m[2]) < bottom + 20).map((m) => `${Number(m[1]).toFixed(1)}:${m[3]}`);
  };
  const first = ticksOf(0);
  assert.ok(first.includes(first.find((t) => t.endsWith(':10'))!), `x axis ends at step 10: ${first}`);
  for (let i = 1; i < rects.length; i++) assert.deepEqual(ticksOf(i), first, `panel ${i} has its own x range`);
  // Legends sit above their panel's plot rectangle.
  const legends = [...svg.matchAll(/<text [^>]*class="legend">[^<]+</g)].map((m) => m[0]);
  assert.ok(legends.length >= 3);
  for (const l of legends) {
    const y = attr(l, 'y');
    assert.ok(rects.some((r) => y < attr(r, 'y') && y > attr(r, 'y') - 28), `legend at y=${y} is inside a plot area`);
  }
  // Without options: no heading, still valid.
  assert.ok(!trainingCurvesSvg([{ loss: 1, step: 1 }]).includes('class="title"'));
});
