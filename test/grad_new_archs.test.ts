// Gradients of the new architectures by finite differences: T5's relative-position bias
// table, BART's learned positions, ModernBERT's fused qkv and DeBERTa's relative embeddings
// (through the c2p / p2c gathers) get the derivative of the loss (eval mode, no dropout).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng, tensor, tidy, noGrad } from '../src/tensor/index.js';
import { AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, AutoModelForTokenClassification, type HFModel } from '../src/models/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIX = [path.join(here, 'fixtures'), path.join(here, '..', '..', 'test', 'fixtures'), path.resolve('test/fixtures')].find((p) => fs.existsSync(path.join(p, 'seq2seq')))!;

const ids2 = (a: number[][]) => tensor(Int32Array.from(a.flat()), [a.length, a[0].length], { dtype: 'int32' });

const CASES: [string, string, () => HFModel, string[]][] = [
  ['seq2seq/t5', 'seq2seq', () => AutoModelForSeq2SeqLM.fromPretrainedSync(path.join(FIX, 'seq2seq/t5/base'), { logger: () => {} }),
    ['encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight', 'decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight', 'decoder.block.1.layer.1.EncDecAttention.k.weight']],
  ['seq2seq/bart', 'seq2seq', () => AutoModelForSeq2SeqLM.fromPretrainedSync(path.join(FIX, 'seq2seq/bart/base'), { logger: () => {} }),
    ['model.decoder.embed_positions.weight', 'model.encoder.layers.1.self_attn.q_proj.weight']],
  ['encoders/modernbert_tokcls', 'tok', () => AutoModelForTokenClassification.fromPretrainedSync(path.join(FIX, 'encoders/modernbert_tokcls/base'), { logger: () => {} }),
    ['model.layers.1.attn.Wqkv.weight', 'model.layers.2.mlp.Wi.weight']],
  ['encoders/deberta_v2_seqcls', 'seq', () => AutoModelForSequenceClassification.fromPretrainedSync(path.join(FIX, 'encoders/deberta_v2_seqcls/base'), { logger: () => {} }),
    ['deberta.encoder.rel_embeddings.weight', 'deberta.encoder.layer.1.attention.self.key_proj.weight', 'deberta.encoder.LayerNorm.weight']],
];

for (const [name, kind, make, params] of CASES) {
  test(`${name}: gradients match finite differences`, () => {
    const exp = JSON.parse(fs.readFileSync(path.join(FIX, name, 'expected.json'), 'utf8'));
    const model = make();
    model.eval();
    const labels = kind === 'seq' ? tensor(Int32Array.from(exp.labels), [exp.labels.length], { dtype: 'int32' }) : ids2(exp.labels);
    const inputs = { inputIds: ids2(exp.input_ids), attentionMask: ids2(exp.attention_mask), labels };
    const lossOf = () => tidy(() => noGrad(() => model.forward(inputs).loss!.item()));
    model.zeroGrad();
    tidy(() => { model.forward(inputs).loss!.backward(); });
    const named = new Map(model.namedParameters());
    const rng = new Rng(5);
    for (const pn of params) {
      const p = named.get(pn)!;
      assert.ok(p, pn);
      const g = Float32Array.from(p.grad!.data);
      const dir = Float32Array.from({ length: p.size }, () => rng.normal());
      let analytic = 0;
      for (let i = 0; i < p.size; i++) analytic += g[i] * dir[i];
      const orig = Float32Array.from(p.data), eps = 1e-3;
      const at = (s: number) => { for (let i = 0; i < p.size; i++) p.data[i] = orig[i] + s * eps * dir[i]; return lossOf(); };
      const numeric = (at(1) - at(-1)) / (2 * eps);
      p.data.set(orig);
      assert.ok(Math.abs(analytic) > 1e-3, `${pn}: gradient is (almost) zero`);
      assert.ok(Math.abs(numeric - analytic) <= 2e-2 * Math.abs(analytic) + 1e-3, `${pn}: analytic ${analytic} vs numeric ${numeric}`);
    }
  });
}

test('dtype bfloat16: the new architectures load with bf16 weights and stay close to float32', () => {
  for (const [name, kind, , ] of CASES) {
    const exp = JSON.parse(fs.readFileSync(path.join(FIX, name, 'expected.json'), 'utf8'));
    const auto = kind === 'seq2seq' ? AutoModelForSeq2SeqLM : kind === 'seq' ? AutoModelForSequenceClassification : AutoModelForTokenClassification;
    const m = auto.fromPretrainedSync(path.join(FIX, name, 'base'), { dtype: 'bfloat16', logger: () => {} });
    const labels = kind === 'seq' ? tensor(Int32Array.from(exp.labels), [exp.labels.length], { dtype: 'int32' }) : ids2(exp.labels);
    const lg = tidy(() => noGrad(() => m.forward({ inputIds: ids2(exp.input_ids), attentionMask: ids2(exp.attention_mask), labels }).logits.toFloat32Array()));
    let worst = 0, scale = 0;
    for (let i = 0; i < lg.length; i++) { worst = Math.max(worst, Math.abs(lg[i] - exp.base_logits[i])); scale = Math.max(scale, Math.abs(exp.base_logits[i])); }
    assert.ok(worst < 0.05 * scale, `${name}: bf16 logits differ by ${worst} (scale ${scale})`);
  }
});
