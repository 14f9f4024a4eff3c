// model.dispose() / PeftModel.dispose() hand every buffer back at once: liveBytes returns to its
// baseline after loading, using and disposing the default model several times (it grew by the
// whole model for each discarded one before), LoRA and RoPE caches included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { memoryStats, tensor, tidy, noGrad } from '../src/tensor/index.js';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { LoraConfig, getPeftModel } from '../src/peft/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = [path.resolve(here, '../..'), path.resolve(here, '..'), process.cwd()].find((p) => fs.existsSync(path.join(p, 'assets', 'default-model')))!;
const DEFAULT = path.join(root, 'assets', 'default-model');
const LLAMA = path.join(root, 'test', 'fixtures', 'models', 'llama_lm');
const quiet = { logger: () => {} };

function forward(m: { forward(i: { inputIds: ReturnType<typeof tensor> }): { logits: ReturnType<typeof tensor> } }): number {
  return tidy(() => noGrad(() => m.forward({ inputIds: tensor(Int32Array.from([1, 5, 9, 3]), [1, 4]) }).logits.toFloat32Array()[0]));
}

test('loading, using and disposing the default model (and a LoRA on it) returns liveBytes to the baseline', () => {
  const baseline = memoryStats().liveBytes;
  let first: number | null = null;
  for (let i = 0; i < 3; i++) {
    const m = AutoModelForCausalLM.fromPretrained(DEFAULT, quiet);
    const held = memoryStats().liveBytes - baseline;
    assert.ok(held > 1e6, `the model holds its weights (${held} bytes)`);
    const y = forward(m);
    if (first === null) first = y; else assert.equal(y, first);
    m.dispose();
    assert.equal(memoryStats().liveBytes, baseline, `after dispose #${i}`);
  }
  const pm = getPeftModel(AutoModelForCausalLM.fromPretrained(DEFAULT, quiet), new LoraConfig({ r: 4, targetModules: ['c_attn'], modulesToSave: ['lm_head'] }));
  forward(pm);
  pm.dispose();
  assert.equal(memoryStats().liveBytes, baseline, 'PeftModel.dispose releases base, LoRA and modules_to_save copies');
});

test('a Llama model releases its RoPE tables too; a disposed model refuses to run', () => {
  const baseline = memoryStats().liveBytes;
  const m = AutoModelForCausalLM.fromPretrained(LLAMA, quiet);
  forward(m); // builds the cos/sin tables
  m.dispose();
  assert.equal(memoryStats().liveBytes, baseline);
  assert.throws(() => forward(m), /dispos/i);
  m.dispose(); // twice is harmless
});
