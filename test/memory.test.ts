// A long training-like loop must not grow: liveBytes stays flat once the pool is warm and
// process RSS stays bounded (1,000 steps of a tiny MLP forward + backward + AdamW in tidy()).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, getBackend, memoryStats, tensor, tidy, withBackend, zeros } from '../src/tensor/index.js';
import * as T from '../src/tensor/index.js';
import { Linear } from '../src/nn/layers.js';
import '../src/backends/index.js';
import { BACKENDS } from './helpers/backends.js';

function train(steps: number, onStep: (i: number, loss: number) => void): void {
  const rng = new Rng(3);
  const l1 = new Linear(16, 32, true, rng), l2 = new Linear(32, 4, true, rng);
  const params = [...l1.parameters(), ...l2.parameters()];
  const state = params.map((p) => ({ m: zeros(p.shape), v: zeros(p.shape) }));
  const x = T.randn([8, 16], 1, rng);
  const y = tensor(Int32Array.from([0, 1, 2, 3, 0, 1, 2, 3]), [8]);
  for (let i = 1; i <= steps; i++) {
    const loss = tidy(() => {
      const h = T.gelu(l1.forward(x), 'tanh');
      const logits = l2.forward(T.layerNorm(h, null, null));
      const l = T.crossEntropy(logits, y);
      l.backward();
      return l.item();
    });
    params.forEach((p, k) => {
      getBackend().adamw(p.data, (p.grad as Tensor).data, state[k].m.data, state[k].v.data, 1e-2, 0.9, 0.999, 1e-8, 0.01, i);
      p.grad!.dispose(); p.grad = null;
    });
    onStep(i, loss);
  }
}

for (const [backend, skip] of BACKENDS) {
  test(`1,000 training steps keep memory flat on ${backend}`, { skip }, () => {
    withBackend(backend, () => {
      let liveAt100 = 0, rssAt100 = 0, first = 0, last = 0;
      train(1000, (i, loss) => {
        if (i === 1) first = loss;
        if (i === 100) { liveAt100 = memoryStats().liveBytes; rssAt100 = process.memoryUsage().rss; }
        if (i > 100) assert.equal(memoryStats().liveBytes, liveAt100, `liveBytes changed at step ${i}`);
        last = loss;
      });
      const growth = process.memoryUsage().rss - rssAt100;
      assert.ok(growth < 64 * 2 ** 20, `RSS grew by ${(growth / 2 ** 20).toFixed(1)} MiB`);
      assert.ok(last < first * 0.5, `loss should fall (from ${first} to ${last})`);
    });
  });
}
