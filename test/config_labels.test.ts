// num_labels / id2label / label2id resolved by the one config parser (src/io/config.ts) as
// transformers resolves them: test/fixtures/config/labels.json from
// scripts/config_labels_fixture.py. The models and their saved config.json follow it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseConfig, labelNames, withNumLabels } from '../src/io/config.js';
import { AutoModelForTokenClassification, AutoModelForSequenceClassification } from '../src/models/auto.js';
import { Rng } from '../src/tensor/random.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FILE = [path.resolve(here, '../../test/fixtures/config/labels.json'), path.resolve('test/fixtures/config/labels.json')].find((p) => fs.existsSync(p))!;
type View = { numLabels: number; id2label: Record<string, string>; label2id: Record<string, number> | null };
const fix = JSON.parse(fs.readFileSync(FILE, 'utf8')) as { cases: Record<string, { config: Record<string, unknown>; expected: View; override: Record<string, View> }> };

/** transformers leaves label2id None beside a config's own id2label; we give its inverse. */
function check(got: { numLabels?: number; id2label?: Record<string, string>; label2id?: Record<string, number> }, exp: View, what: string): void {
  assert.equal(got.numLabels, exp.numLabels, `${what}: numLabels`);
  assert.deepEqual(got.id2label, exp.id2label, `${what}: id2label`);
  const l2i = exp.label2id ?? Object.fromEntries(Object.entries(exp.id2label).map(([k, v]) => [v, Number(k)]));
  assert.deepEqual(got.label2id, l2i, `${what}: label2id`);
}

test('the disagreement cases are all in the fixture', () => {
  for (const c of ['num_labels_only', 'id2label_only', 'both_agree', 'both_disagree', 'label2id_only']) assert.ok(fix.cases[c], c);
  // What makes them worth testing: transformers 5 lets num_labels win over a disagreeing id2label.
  assert.equal(fix.cases.both_disagree.expected.numLabels, 5);
  assert.equal(fix.cases.label2id_only.expected.numLabels, 2);
});

test('parseConfig resolves labels as transformers does', () => {
  for (const [name, c] of Object.entries(fix.cases)) {
    const cfg = parseConfig(c.config);
    check(cfg, c.expected, name);
    assert.deepEqual(cfg.raw, c.config, `${name}: raw kept as read`);
    assert.deepEqual(labelNames(cfg), Array.from({ length: c.expected.numLabels }, (_, i) => c.expected.id2label[String(i)]), `${name}: labelNames`);
  }
});

test('a numLabels override resolves as from_pretrained(num_labels=N)', () => {
  for (const [name, c] of Object.entries(fix.cases)) {
    for (const [n, exp] of Object.entries(c.override)) check(withNumLabels(parseConfig(c.config), Number(n)), exp, `${name} numLabels=${n}`);
  }
});

test('models size their heads from the resolved labels and save them as transformers would', () => {
  for (const [name, c] of Object.entries(fix.cases)) {
    const m = AutoModelForTokenClassification.fromConfig(c.config, { rng: new Rng(0) });
    assert.equal(m.numLabels, c.expected.numLabels, name);
    assert.deepEqual(m.stateDict().get('classifier.weight')!.shape, [c.expected.numLabels, 4], name);
    const saved = m.configForSave();
    assert.deepEqual(saved.id2label, c.expected.id2label, `${name}: saved id2label`);
    assert.equal(saved.num_labels, undefined);
    // What was saved reads back to the same labels.
    check(parseConfig(saved), { ...c.expected, label2id: saved.label2id as Record<string, number> }, `${name}: reloaded`);
    const o = AutoModelForSequenceClassification.fromConfig(c.config, { rng: new Rng(0), numLabels: 4 });
    check(o.config, c.override['4'], `${name}: seq-cls numLabels=4`);
  }
});

test('label fields of the wrong type are errors that name the field', () => {
  const base = { model_type: 'bert', vocab_size: 10, hidden_size: 4, num_hidden_layers: 1, num_attention_heads: 1, max_position_embeddings: 8 };
  assert.throws(() => parseConfig({ ...base, num_labels: 0 }), /"num_labels" must be a positive integer/);
  assert.throws(() => parseConfig({ ...base, id2label: ['a', 'b'] }), /"id2label" must be an object/);
  assert.throws(() => parseConfig({ ...base, id2label: { a: 'x' } }), /"id2label" keys must be integer ids/);
});
