import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, parseConfig, labelNames } from '../src/io/config.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIX = [path.resolve(here, '../../test/fixtures/io'), path.resolve(process.cwd(), 'test/fixtures/io')].find((p) => fs.existsSync(p))!;
const expected = JSON.parse(fs.readFileSync(path.join(FIX, 'configs_expected.json'), 'utf8')) as Record<string, Record<string, unknown>>;

test('config.json of each architecture maps to the values transformers exposes', () => {
  for (const [name, exp] of Object.entries(expected)) {
    const dir = path.join(FIX, 'configs', name);
    const cfg = loadConfig(dir);
    const raw = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    assert.deepEqual(cfg.raw, raw);
    for (const k of ['modelType', 'vocabSize', 'hiddenSize', 'numLayers', 'numHeads', 'maxPositions'] as const) {
      assert.equal(cfg[k], exp[k], `${name}.${k}`);
    }
    // transformers' num_labels, 2 when the file states none (test/config_labels.test.ts has the cases).
    assert.equal(cfg.numLabels, exp.numLabels, `${name}.numLabels`);
  }
});

test('labels from id2label', () => {
  const cfg = loadConfig(path.join(FIX, 'configs', 'bert'));
  assert.deepEqual(labelNames(cfg), ['neg', 'pos', 'neutral']);
  const r = parseConfig({ model_type: 'roberta', vocab_size: 5, hidden_size: 4, num_hidden_layers: 1, num_attention_heads: 1, max_position_embeddings: 9, num_labels: 3 });
  assert.deepEqual(labelNames(r), ['LABEL_0', 'LABEL_1', 'LABEL_2']);
});

test('config errors name the file and the missing field', () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'io-cfg-'));
  try {
    assert.throws(() => loadConfig(d), /no config\.json at .*config\.json/);
    fs.writeFileSync(path.join(d, 'config.json'), '{"model_type": "gpt2", "n_embd": 8');
    assert.throws(() => loadConfig(d), /config\.json: invalid JSON/);
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ model_type: 'gpt2', vocab_size: 10, n_embd: 8, n_layer: 1, n_positions: 4 }));
    assert.throws(() => loadConfig(d), /config\.json: model_type "gpt2" has none of "n_head"/);
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ vocab_size: 10 }));
    assert.throws(() => loadConfig(d), /missing "model_type"/);
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ model_type: 'llama', vocab_size: 10, hidden_size: '8', num_hidden_layers: 1, num_attention_heads: 1, max_position_embeddings: 4 }));
    assert.throws(() => loadConfig(d), /"hidden_size" must be a positive integer, got "8"/);
  } finally { fs.rmSync(d, { recursive: true, force: true }); }
});
