// The sync discipline for asynchronous (device) backends, checked on the CPU with the
// `deferred` backend: kernels queue until a host access waits for them, and fresh buffers
// hold NaN. A training step there must give exactly the numbers of the cpu backend.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { getBackend, withBackend } from '../src/tensor/registry.js';
import { Rng, add, matmul, sum, tensor, zeros, tidy } from '../src/tensor/index.js';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { LoraConfig, getPeftModel } from '../src/peft/index.js';
import { AdamW } from '../src/train/optim.js';
import { hasCpu } from './helpers/backends.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIX = [path.join(here, 'fixtures', 'models'), path.resolve('test/fixtures/models')].find((p) => fs.existsSync(p))!;
const base = hasCpu ? 'cpu' : 'reference';

test('deferred backend: kernels wait in a queue until the host reads', () => {
  withBackend('deferred', () => {
    const be = getBackend() as ReturnType<typeof getBackend> & { queued(): number };
    const a = tensor([1, 2, 3, 4], [2, 2]), b = tensor([5, 6, 7, 8], [2, 2]);
    const c = add(matmul(a, b), a);
    assert.ok(be.queued() > 0, 'ops should be queued, not run');
    assert.ok(Number.isNaN(c.buf[0]), 'the raw buffer is not computed yet');
    assert.deepEqual(Array.from(c.data), [20, 24, 46, 54]);
    assert.equal(be.queued(), 0);
    // Fresh memory is NaN on this backend, so zeros() must fill in stream order.
    assert.deepEqual(Array.from(zeros([3]).data), [0, 0, 0]);
    assert.equal(sum(c).item(), 144);
  });
});

function trainSteps(backend: string): { losses: number[]; lora: number[] } {
  return withBackend(backend, () => {
    const model = AutoModelForCausalLM.fromPretrainedSync(path.join(FIX, 'gpt2_lm'), { logger: () => {} });
    const pm = getPeftModel(model, new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['c_attn', 'c_fc'], initLoraWeights: 'gaussian' }), 'default', { rng: new Rng(5) });
    const opt = new AdamW([...pm.namedParameters()].filter(([, p]) => p.requiresGrad), { lr: 1e-2 });
    const ids = tensor([3, 5, 7, 9, 11, 13, 2, 4, 6, 8, 10, 12], [2, 6], { dtype: 'int32' });
    const losses: number[] = [];
    for (let s = 0; s < 3; s++) {
      tidy(() => {
        const out = pm.forward({ inputIds: ids, labels: ids });
        out.loss!.backward();
        losses.push(out.loss!.item());
      });
      opt.step();
      opt.zeroGrad();
    }
    const lora = [...pm.namedParameters()].filter(([, p]) => p.requiresGrad).flatMap(([, p]) => Array.from(p.data.slice(0, 4)));
    return { losses, lora };
  });
}

test('deferred backend: a LoRA training step gives the same numbers as ' + base, () => {
  const want = trainSteps(base), got = trainSteps('deferred');
  assert.deepEqual(got.losses, want.losses);
  assert.deepEqual(got.lora, want.lora);
  assert.ok(want.losses[2] < want.losses[0], 'the loss should go down');
});
