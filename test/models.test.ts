// Every architecture/head against transformers: logits and loss of tiny random models
// (fixtures from scripts/make_model_fixtures.py) must match within 1e-4 relative.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { noGrad, tensor, tidy } from '../src/tensor/index.js';
import type { Tensor } from '../src/tensor/tensor.js';
import {
  AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification, type HFModel, RopeCache, ropeSpec, seqClsLoss,
} from '../src/models/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
// Works from the source tree and from a tsc outDir (which has no fixtures).
const FIX = [path.join(here, 'fixtures', 'models'), path.join(here, '..', '..', 'test', 'fixtures', 'models'), path.resolve('test/fixtures/models')]
  .find((p) => fs.existsSync(p))!;

export const FIXTURES = fs.readdirSync(FIX).filter((n) => fs.existsSync(path.join(FIX, n, 'config.json'))).sort();

export function autoFor(name: string) {
  if (name.endsWith('_lm')) return AutoModelForCausalLM;
  if (name.endsWith('_tokcls')) return AutoModelForTokenClassification;
  return AutoModelForSequenceClassification;
}

export function relErr(got: Float32Array | number[], want: Float32Array | number[]): number {
  let maxDiff = 0, maxAbs = 0;
  for (let i = 0; i < want.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(got[i] - want[i]));
    maxAbs = Math.max(maxAbs, Math.abs(want[i]));
  }
  return maxDiff / Math.max(maxAbs, 1e-12);
}

function load(name: string, dir = path.join(FIX, name)): { model: HFModel; warnings: string[] } {
  const warnings: string[] = [];
  const model = autoFor(name).fromPretrainedSync(dir, { logger: (m) => warnings.push(m) });
  return { model, warnings };
}

function run(model: HFModel, exp: Map<string, Tensor>) {
  return noGrad(() => model.forward({
    inputIds: exp.get('input_ids')!,
    attentionMask: exp.get('attention_mask')!,
    tokenTypeIds: exp.get('token_type_ids') ?? null,
    labels: exp.get('labels')!,
  }));
}

test('fixtures are present and small', () => {
  assert.ok(FIXTURES.length >= 13, `found ${FIXTURES.length} fixtures`);
  let total = 0;
  for (const n of FIXTURES) for (const f of fs.readdirSync(path.join(FIX, n))) total += fs.statSync(path.join(FIX, n, f)).size;
  assert.ok(total < 1.5 * 1024 * 1024, `fixtures take ${total} bytes`);
});

for (const name of FIXTURES) {
  test(`${name}: logits and loss match transformers`, () => {
    const { model, warnings } = load(name);
    assert.deepEqual(warnings, [], 'a full checkpoint loads with no missing or unexpected keys');
    assert.equal(model.training, false, 'fromPretrained returns an eval-mode model');
    const exp = readSafetensors(path.join(FIX, name, 'expected.safetensors'));
    tidy(() => {
      const out = run(model, exp);
      const want = exp.get('logits')!;
      assert.deepEqual(out.logits.shape, want.shape);
      const e = relErr(out.logits.data, want.data);
      assert.ok(e < 1e-4, `${name}: logits rel err ${e}`);
      const lw = exp.get('loss')!.data[0], lg = out.loss!.item();
      assert.ok(Math.abs(lg - lw) / Math.abs(lw) < 1e-4, `${name}: loss ${lg} vs ${lw}`);
    });
  });
}

test('a checkpoint saved without the base-model prefix loads (GPT-2 hub layout, bare bert.*)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'models-prefix-'));
  try {
    for (const [name, prefix, dropHead] of [['gpt2_lm', 'transformer.', false], ['bert_seqcls', 'bert.', true]] as const) {
      const src = readSafetensors(path.join(FIX, name, 'model.safetensors'), { toFloat32: false });
      const bare = new Map<string, Tensor>();
      for (const [k, t] of src) {
        if (k.startsWith(prefix)) bare.set(k.slice(prefix.length), t);
        else if (!dropHead) bare.set(k, t);
      }
      const dir = path.join(tmp, name);
      fs.mkdirSync(dir);
      fs.copyFileSync(path.join(FIX, name, 'config.json'), path.join(dir, 'config.json'));
      writeSafetensors(path.join(dir, 'model.safetensors'), bare);
      const { model, warnings } = load(name, dir);
      const ref = load(name).model;
      if (!dropHead) {
        assert.deepEqual(warnings, []);
      } else {
        // The task head is new, as transformers reports it.
        assert.deepEqual(model.loadingInfo!.newlyInitialized.sort(), ['classifier.bias', 'classifier.weight']);
        assert.match(warnings.join('\n'), /newly initialized: .*classifier\.weight/);
      }
      for (const [k, p] of ref.stateDict()) {
        if (dropHead && k.startsWith('classifier')) continue;
        assert.equal(relErr(model.stateDict().get(k)!.data, p.data), 0, k);
      }
    }
  } finally { fs.rmSync(tmp, { recursive: true, force: true }); }
});

test('numLabels override, size mismatch and unexpected keys are reported clearly', () => {
  const dir = path.join(FIX, 'bert_seqcls');
  assert.throws(() => AutoModelForSequenceClassification.fromPretrainedSync(dir, { numLabels: 7, logger: () => {} }), /size mismatch.*classifier\.(weight|bias).*ignoreMismatchedSizes/s);
  const warnings: string[] = [];
  const m = AutoModelForSequenceClassification.fromPretrainedSync(dir, { numLabels: 7, ignoreMismatchedSizes: true, logger: (w) => warnings.push(w) });
  assert.deepEqual(m.loadingInfo!.newlyInitialized.sort(), ['classifier.bias', 'classifier.weight']);
  assert.equal((m.configForSave().id2label as Record<string, string>)['6'], 'LABEL_6');
  // A sequence-classification checkpoint into token classification: the pooler is
  // ignored (transformers' _keys_to_ignore_on_load_unexpected) and the head is new.
  const w2: string[] = [];
  const tok = AutoModelForTokenClassification.fromPretrainedSync(dir, { logger: (w) => w2.push(w) });
  assert.deepEqual(tok.loadingInfo!.unexpectedKeys, []);
  assert.equal(tok.loadingInfo!.missingKeys.length, 0, 'classifier shapes match (3 labels) so it loads');
  // Causal LM checkpoint into sequence classification: lm_head unexpected, score new.
  const w3: string[] = [];
  const sc = AutoModelForSequenceClassification.fromPretrainedSync(path.join(FIX, 'llama_lm'), { logger: (w) => w3.push(w) });
  assert.deepEqual(sc.loadingInfo!.unexpectedKeys, ['lm_head.weight']);
  assert.deepEqual(sc.loadingInfo!.newlyInitialized, ['score.weight']);
  assert.match(w3.join('\n'), /not used when initializing LlamaForSequenceClassification: lm_head\.weight/);
  // The new head gets transformers' init (normal, initializer_range 0.02), not zeros.
  const sw = sc.getSubmodule('score').getParameter('weight')!.data;
  const std = Math.sqrt(sw.reduce((a, x) => a + x * x, 0) / sw.length);
  assert.ok(std > 0.01 && std < 0.03, `score std ${std}`);
  const bw = m.getSubmodule('classifier').getParameter('weight')!.data, bb = m.getSubmodule('classifier').getParameter('bias')!.data;
  assert.ok(bw.some((x) => x !== 0) && bb.every((x) => x === 0), 're-initialised classifier: normal weight, zero bias');
  assert.throws(() => AutoModelForTokenClassification.fromPretrainedSync(path.join(FIX, 'llama_lm')), /'llama' is not supported for TOKEN_CLS/);
  assert.throws(() => AutoModelForCausalLM.fromPretrainedSync(path.join(FIX, 'nope')), /neither an existing folder nor a Hub model id/);
  assert.throws(() => AutoModelForCausalLM.fromPretrainedSync('org/not-cached', { cacheDir: os.tmpdir() }), /not in the local cache/);
});

test('architecture metadata: LoRA targets, heads, layer prefixes', () => {
  const expect: Record<string, [string[], string]> = {
    gpt2_lm: [['c_attn'], 'transformer.h'],
    bert_seqcls: [['query', 'value'], 'bert.encoder.layer'],
    roberta_tokcls: [['query', 'value'], 'roberta.encoder.layer'],
    distilbert_seqcls: [['q_lin', 'v_lin'], 'distilbert.transformer.layer'],
    llama_lm: [['q_proj', 'v_proj'], 'model.layers'],
    qwen2_lm: [['q_proj', 'v_proj'], 'model.layers'],
    mistral_lm: [['q_proj', 'v_proj'], 'model.layers'],
  };
  for (const [name, [targets, prefix]] of Object.entries(expect)) {
    const { model } = load(name);
    assert.deepEqual(model.defaultLoraTargets(), targets, name);
    assert.equal(model.layersPrefix, prefix, name);
    model.getSubmodule(`${prefix}.1`); // exists
    for (const h of model.outputHeadNames()) model.getSubmodule(h);
  }
  assert.deepEqual(load('gpt2_seqcls').model.classifierModuleNames(), ['classifier', 'score']);
  // Tied GPT-2 / Qwen2 heads share the embedding; untied Llama does not.
  const g = load('gpt2_lm').model;
  assert.equal(g.getSubmodule('lm_head').getParameter('weight'), g.getSubmodule('transformer.wte').getParameter('weight'));
  assert.ok(!g.checkpointStateDict().has('lm_head.weight'));
  const q = load('qwen2_lm').model;
  assert.equal(q.getSubmodule('lm_head').getParameter('weight'), q.getSubmodule('model.embed_tokens').getParameter('weight'));
  const l = load('llama_lm').model;
  assert.notEqual(l.getSubmodule('lm_head').getParameter('weight'), l.getSubmodule('model.embed_tokens').getParameter('weight'));
});

test('RoPE: transformers 4 (rope_theta + rope_scaling) and 5 (rope_parameters) configs agree', () => {
  const v5 = { rope_parameters: { rope_type: 'llama3', rope_theta: 500000, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } };
  const v4 = { rope_theta: 500000, rope_scaling: { type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } };
  const a = ropeSpec(v5, 128, 131072), b = ropeSpec(v4, 128, 131072);
  assert.equal(a.type, 'llama3');
  assert.deepEqual(Array.from(a.invFreq), Array.from(b.invFreq));
  // Llama 3.1's first and last frequencies (unchanged high band, divided low band).
  assert.ok(Math.abs(a.invFreq[0] - 1) < 1e-7);
  const plain = ropeSpec({ rope_theta: 500000 }, 128, 8192);
  assert.ok(Math.abs(a.invFreq[63] - plain.invFreq[63] / 8) < 1e-12);
  assert.ok(Math.abs(ropeSpec({ rope_scaling: { type: 'linear', factor: 2 } }, 8, 64).invFreq[1] - 0.05) < 1e-7);
  assert.throws(() => ropeSpec({ rope_scaling: { type: 'su', factor: 2 } }, 8, 64), /'su' is not supported/);
  assert.throws(() => ropeSpec({ rope_scaling: { type: 'yarn' } }, 8, 64), /needs 'factor'/);
});

test('RoPE yarn, dynamic and longrope match transformers (frequencies, scaling, per-length state)', () => {
  const fix = JSON.parse(fs.readFileSync(path.join(FIX, 'rope.json'), 'utf8'));
  const hd: number = fix.head_dim;
  const close = (got: ArrayLike<number>, want: number[], what: string) => {
    assert.equal(got.length, want.length, what);
    assert.ok(relErr(Array.from(got), want) < 1e-6, `${what}: ${Array.from(got)} vs ${want}`);
  };
  for (const [name, c] of Object.entries<any>(fix.cases)) {
    const raw = { rope_parameters: c.config.rope_parameters, max_position_embeddings: c.config.max_position_embeddings };
    const spec = ropeSpec(raw, hd, c.config.max_position_embeddings);
    close(spec.invFreq, c.init.inv_freq, `${name} inv_freq`);
    assert.ok(Math.abs(spec.attentionScaling - c.init.attention_scaling) < 1e-9, `${name} scaling ${spec.attentionScaling}`);
    if (!c.steps) continue;
    // The stateful update over a sequence of forwards with growing and shrinking lengths.
    const cache = new RopeCache(raw, hd, c.config.max_position_embeddings, 4);
    for (const st of c.steps) {
      const { cos } = cache.tables(st.len - 1);
      close(cache.spec.invFreq, st.inv_freq, `${name} after length ${st.len}`);
      const row = cos.data.subarray((st.len - 1) * (hd / 2), st.len * (hd / 2));
      close(row, st.cos_last.slice(0, hd / 2), `${name} cos at position ${st.len - 1}`);
    }
  }
});

test('multi-label loss is BCE-with-logits over float labels (transformers problem_type)', () => {
  const logits = tensor([2.5, -1, 0.3, -30, 40, 0], [2, 3]);
  const y = tensor([1, 0, 1, 0, 1, 0], [2, 3]);
  const got = tidy(() => seqClsLoss(logits, y, 3).item());
  let want = 0;
  for (let i = 0; i < 6; i++) { const x = logits.data[i]; want += Math.max(x, 0) - x * y.data[i] + Math.log1p(Math.exp(-Math.abs(x))); }
  want /= 6;
  assert.ok(Math.abs(got - want) < 1e-6, `${got} vs ${want}`);
  const reg = tidy(() => seqClsLoss(tensor([0.5, 2], [2, 1]), tensor([1, 1]), 1).item());
  assert.ok(Math.abs(reg - (0.25 + 1) / 2) < 1e-7);
});
