// ModernBERT and DeBERTa-v2 classifiers against transformers 5.17 + peft 0.21
// (scripts/make_encoder_fixtures.py): base, adapter (saved by peft) and merged logits and
// losses on a padded batch; our adapters save peft's layout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng, tensor, tidy, noGrad } from '../src/tensor/index.js';
import { AutoModelForSequenceClassification, AutoModelForTokenClassification, logBucketPosition, type ModelOutput } from '../src/models/index.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { LoraConfig, PeftModel, getPeftModel, captureWarnings } from '../src/peft/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = [path.join(here, 'fixtures', 'encoders'), path.join(here, '..', '..', 'test', 'fixtures', 'encoders'), path.resolve('test/fixtures/encoders')]
  .find((p) => fs.existsSync(p))!;
const CASES = fs.readdirSync(ROOT).filter((n) => fs.existsSync(path.join(ROOT, n, 'expected.json'))).sort();

interface Expected {
  input_ids: number[][]; attention_mask: number[][]; labels: number[] | number[][]; logits_shape: number[];
  base_logits: number[]; base_loss: number; lora_logits: number[]; lora_loss: number; merged_logits: number[];
  target_modules: string[]; task: 'seq' | 'tok';
}
type Fwd = { forward(i: Record<string, unknown>): ModelOutput };

const ids2 = (a: number[][]) => tensor(Int32Array.from(a.flat()), [a.length, a[0].length], { dtype: 'int32' });

function load(name: string) {
  const dir = path.join(ROOT, name);
  const exp = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as Expected;
  const auto = exp.task === 'seq' ? AutoModelForSequenceClassification : AutoModelForTokenClassification;
  return { exp, base: () => auto.fromPretrainedSync(path.join(dir, 'base'), { logger: () => {} }), adapter: path.join(dir, 'adapter') };
}

function run(m: Fwd, exp: Expected): { logits: Float32Array; loss: number } {
  return tidy(() => noGrad(() => {
    const labels = exp.task === 'seq' ? tensor(Int32Array.from(exp.labels as number[]), [exp.labels.length], { dtype: 'int32' }) : ids2(exp.labels as number[][]);
    const o = m.forward({ inputIds: ids2(exp.input_ids), attentionMask: ids2(exp.attention_mask), labels });
    return { logits: o.logits.toFloat32Array(), loss: o.loss!.item() };
  }));
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'length');
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i] - b[i]));
  return w;
}

for (const name of CASES) {
  test(`${name}: base, peft adapter and merged logits and loss equal transformers' (padded batch)`, () => {
    const { exp, base, adapter } = load(name);
    const model = base();
    assert.deepEqual(model.loadingInfo!.missingKeys, []);
    assert.deepEqual(model.loadingInfo!.unexpectedKeys, []);
    const b = run(model as unknown as Fwd, exp);
    assert.ok(maxDiff(b.logits, exp.base_logits) <= 1e-4, `base logits: ${maxDiff(b.logits, exp.base_logits)}`);
    assert.ok(Math.abs(b.loss - exp.base_loss) < 1e-4, `base loss ${b.loss} vs ${exp.base_loss}`);
    const pm = PeftModel.fromPretrainedSync(model, adapter);
    const l = run(pm as unknown as Fwd, exp);
    assert.ok(maxDiff(exp.lora_logits, exp.base_logits) > 1e-2, 'fixture adapter must change the outputs');
    assert.ok(maxDiff(l.logits, exp.lora_logits) <= 1e-4, `LoRA logits: ${maxDiff(l.logits, exp.lora_logits)}`);
    assert.ok(Math.abs(l.loss - exp.lora_loss) < 1e-4, `LoRA loss ${l.loss} vs ${exp.lora_loss}`);
    const merged = pm.mergeAndUnload() as unknown as Fwd;
    assert.ok(maxDiff(run(merged, exp).logits, exp.merged_logits) <= 1e-4, 'merged logits');
  });

  test(`${name}: our adapter saves peft's layout (same keys and shapes)`, () => {
    const { exp, base, adapter } = load(name);
    const cfgJson = JSON.parse(fs.readFileSync(path.join(adapter, 'adapter_config.json'), 'utf8'));
    const cfg = LoraConfig.fromPeftJson(cfgJson);
    cfg.inferenceMode = false;
    const pm = captureWarnings(() => getPeftModel(base(), cfg)).result;
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-enc-'));
    try {
      pm.savePretrained(tmp);
      const shapes = (m: Map<string, { shape: number[] }>) => [...m].map(([k, t]) => `${k}:${t.shape.join('x')}`).sort();
      assert.deepEqual(shapes(readSafetensors(path.join(tmp, 'adapter_model.safetensors'))), shapes(readSafetensors(path.join(adapter, 'adapter_model.safetensors'))));
      const ours = JSON.parse(fs.readFileSync(path.join(tmp, 'adapter_config.json'), 'utf8'));
      assert.deepEqual([...ours.target_modules].sort(), exp.target_modules);
    } finally { fs.rmSync(tmp, { recursive: true, force: true }); }
  });
}

test('DeBERTa-v2 log-bucketed relative positions (values from transformers\' make_log_bucket_position)', () => {
  const r = [-300, -200, -129, -128, -127, -100, -64, -33, -32, -31, -5, -1, 0, 1, 2, 31, 32, 33, 64, 100, 127, 128, 129, 200, 300];
  assert.deepEqual(r.map((x) => logBucketPosition(x, 256, 512)),
    [-207, -169, -129, -128, -127, -100, -64, -33, -32, -31, -5, -1, 0, 1, 2, 31, 32, 33, 64, 100, 127, 128, 129, 169, 207]);
  assert.deepEqual(Array.from({ length: 25 }, (_, i) => logBucketPosition(i - 12, 4, 64)),
    [-3, -3, -3, -3, -3, -3, -3, -3, -3, -3, -2, -1, 0, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]);
  const { base } = load('deberta_v2_seqcls');
  assert.throws(() => AutoModelForSequenceClassification.fromConfig({ ...base().config.raw, conv_kernel_size: 3 }), /conv_kernel_size/);
});

test('modernbert: no peft default targets (as peft 0.21); bad config and pooling are refused', () => {
  const { base } = load('modernbert_seqcls');
  const m = base();
  assert.throws(() => getPeftModel(m, new LoraConfig({ taskType: 'SEQ_CLS' })), /specify `targetModules`/);
  assert.throws(() => AutoModelForSequenceClassification.fromConfig({ ...m.config.raw, layer_types: ['full_attention'] }), /layer_types must list 3/);
  const mean = AutoModelForSequenceClassification.fromConfig({ ...m.config.raw, classifier_pooling: 'max' });
  assert.throws(() => (mean as unknown as Fwd).forward({ inputIds: ids2([[1, 2]]) }), /classifier_pooling 'max'/);
});

// Our adapters (random LoRA B and heads), saved; with PEFT_TS_EXPORT_DIR set they are kept
// there for `scripts/make_encoder_fixtures.py --verify-ours DIR` (Python peft loads them).
test('our encoder adapters export (checked by scripts/make_encoder_fixtures.py --verify-ours)', () => {
  const keep = process.env.PEFT_TS_EXPORT_DIR;
  const root = keep ?? fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-enc-export-'));
  const rng = new Rng(11);
  try {
    for (const name of CASES) {
      const { exp, base, adapter } = load(name);
      const cfg = LoraConfig.fromPeftJson(JSON.parse(fs.readFileSync(path.join(adapter, 'adapter_config.json'), 'utf8')));
      cfg.inferenceMode = false;
      const pm = captureWarnings(() => getPeftModel(base(), cfg, 'default', { rng })).result;
      for (const [, p] of pm.namedParameters()) if (p.requiresGrad) for (let i = 0; i < p.size; i++) p.data[i] += 0.3 * rng.normal();
      pm.eval();
      const out = path.join(root, name);
      pm.savePretrained(path.join(out, 'adapter'));
      const ours = run(pm as unknown as Fwd, exp).logits;
      assert.ok(maxDiff(ours, exp.base_logits) > 1e-2);
      const again = PeftModel.fromPretrainedSync(base(), path.join(out, 'adapter'));
      assert.ok(maxDiff(run(again as unknown as Fwd, exp).logits, ours) <= 1e-6, `${name}: reloaded own adapter`);
      fs.writeFileSync(path.join(out, 'ours.json'), JSON.stringify({ input_ids: exp.input_ids, attention_mask: exp.attention_mask, logits: Array.from(ours) }));
    }
  } finally { if (!keep) fs.rmSync(root, { recursive: true, force: true }); }
});
