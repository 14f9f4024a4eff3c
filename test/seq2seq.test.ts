// Encoder-decoder LMs (T5 v1.0, T5 v1.1 / flan, BART) against transformers 5.17 and peft 0.21
// (scripts/make_seq2seq_fixtures.py): logits and loss of a padded batch for the base model,
// with peft's adapter and merged; labels shifted as transformers does; the KV cache; greedy
// and beam ids; our adapters in peft's layout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng, tensor, tidy, noGrad, type Tensor } from '../src/tensor/index.js';
import { AutoModelForSeq2SeqLM, shiftTokensRight, relativePositionBucket, type ModelOutput } from '../src/models/index.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { LoraConfig, PeftModel, getPeftModel, captureWarnings } from '../src/peft/index.js';
import { generate } from '../src/generate/index.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { Dataset, DataCollatorForSeq2Seq, tokenizeSeq2Seq } from '../src/data/index.js';
import { Trainer } from '../src/train/trainer.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = [path.join(here, 'fixtures', 'seq2seq'), path.join(here, '..', '..', 'test', 'fixtures', 'seq2seq'), path.resolve('test/fixtures/seq2seq')]
  .find((p) => fs.existsSync(p))!;
const CASES = ['t5', 't5_v1_1', 'bart'];

interface Expected {
  input_ids: number[][]; attention_mask: number[][]; labels: number[][]; decoder_input_ids: number[][]; logits_shape: number[];
  base_logits: number[]; base_loss: number; lora_logits: number[]; lora_loss: number; merged_logits: number[];
  greedy: number[][]; beam: number[][]; eos: number; greedy_eos: number[][]; beam_eos: number[][]; lora_greedy: number[][]; lora_beam: number[][]; target_modules: string[];
  num_beams: number; max_new_tokens: number;
}

type Fwd = { forward(i: Record<string, unknown>): ModelOutput };

function load(name: string) {
  const dir = path.join(ROOT, name);
  const exp = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as Expected;
  const base = () => AutoModelForSeq2SeqLM.fromPretrainedSync(path.join(dir, 'base'), { logger: () => {} });
  return { dir, exp, base, adapter: path.join(dir, 'adapter') };
}

const ids2 = (a: number[][]) => tensor(Int32Array.from(a.flat()), [a.length, a[0].length], { dtype: 'int32' });

function run(model: Fwd, exp: Expected, extra: Record<string, unknown> = {}): { logits: Float32Array; loss: number } {
  return tidy(() => noGrad(() => {
    const o = model.forward({ inputIds: ids2(exp.input_ids), attentionMask: ids2(exp.attention_mask), labels: ids2(exp.labels), ...extra });
    return { logits: o.logits.toFloat32Array(), loss: o.loss!.item() };
  }));
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'length');
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i] - b[i]));
  return w;
}

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  const d = maxDiff(a, b);
  assert.ok(d <= tol, `${what}: max abs diff ${d.toExponential(2)} > ${tol}`);
}

test('shiftTokensRight: decoder start, labels shifted right, -100 -> pad (transformers)', () => {
  const { exp, base } = load('t5');
  const m = base();
  const got = shiftTokensRight(ids2(exp.labels), m.padTokenId, (m as unknown as { decoderStartTokenId: number }).decoderStartTokenId);
  assert.deepEqual(Array.from(got.ints), exp.decoder_input_ids.flat());
  assert.throws(() => shiftTokensRight(ids2([[5, -100, 3]]), null, 0), /no pad_token_id/);
});

test('T5 relative position buckets (bidirectional and causal, log-spaced past max_exact)', () => {
  // transformers' _relative_position_bucket with num_buckets 32, max_distance 128 (values from torch)
  const bi = [-200, -128, -64, -20, -9, -8, -7, -1, 0, 1, 7, 8, 9, 20, 64, 128, 200].map((r) => relativePositionBucket(r, true, 32, 128));
  assert.deepEqual(bi, [15, 15, 14, 10, 8, 8, 7, 1, 0, 17, 23, 24, 24, 26, 30, 31, 31]);
  const uni = [-200, -100, -40, -16, -15, -1, 0, 5].map((r) => relativePositionBucket(r, false, 32, 128));
  assert.deepEqual(uni, [31, 30, 23, 16, 15, 1, 0, 0]);
});

for (const name of CASES) {
  test(`${name}: base, peft adapter and merged logits and loss equal transformers' (padded batch)`, () => {
    const { exp, base, adapter } = load(name);
    const model = base();
    assert.equal(model.task, 'SEQ_2_SEQ_LM');
    assert.deepEqual(model.loadingInfo!.missingKeys, []);
    assert.deepEqual(model.loadingInfo!.unexpectedKeys, []);
    const b = run(model as unknown as Fwd, exp);
    close(b.logits, exp.base_logits, 1e-4, 'base logits');
    assert.ok(Math.abs(b.loss - exp.base_loss) < 1e-4, `base loss ${b.loss} vs ${exp.base_loss}`);
    // explicit decoder inputs give the same logits as labels shifted inside forward
    const d = run(model as unknown as Fwd, exp, { decoderInputIds: ids2(exp.decoder_input_ids) });
    close(d.logits, b.logits, 0, 'decoderInputIds');

    const pm = PeftModel.fromPretrainedSync(model, adapter);
    const l = run(pm as unknown as Fwd, exp);
    assert.ok(maxDiff(exp.lora_logits, exp.base_logits) > 1e-2, 'fixture adapter must change the outputs');
    close(l.logits, exp.lora_logits, 1e-4, 'LoRA logits');
    assert.ok(Math.abs(l.loss - exp.lora_loss) < 1e-4, `LoRA loss ${l.loss} vs ${exp.lora_loss}`);
    const merged = pm.mergeAndUnload() as unknown as Fwd;
    close(run(merged, exp).logits, exp.merged_logits, 1e-4, 'merged logits');
  });

  test(`${name}: the decoder KV cache (self-attention growing, cross-attention once) gives the full forward's logits`, () => {
    const { exp, base } = load(name);
    const model = base() as unknown as Fwd;
    const full = run(model, exp, { decoderInputIds: ids2(exp.decoder_input_ids) }).logits;
    const [B, T, V] = exp.logits_shape;
    const stepped = new Float32Array(B * T * V);
    noGrad(() => {
      const enc = ids2(exp.input_ids), am = ids2(exp.attention_mask);
      let cache: ModelOutput['pastKeyValues'] = undefined;
      let encOut: Tensor | undefined;
      for (let j = 0; j < T; j++) {
        const step = ids2(exp.decoder_input_ids.map((r) => [r[j]]));
        const o: ModelOutput = model.forward({ inputIds: enc, attentionMask: am, decoderInputIds: step, pastKeyValues: cache ?? null, useCache: true, encoderOutputs: encOut ?? null });
        encOut = o.encoderLastHiddenState;
        if (j > 0) assert.equal(o.pastKeyValues!.cross![0].k, cache!.cross![0].k, 'cross-attention k/v reused');
        cache = o.pastKeyValues;
        assert.equal(cache!.length, j + 1);
        const lg = o.logits.toFloat32Array();
        for (let bi = 0; bi < B; bi++) stepped.set(lg.subarray(bi * V, (bi + 1) * V), (bi * T + j) * V);
      }
    });
    close(stepped, full, 1e-5, 'cached decoding');
  });

  test(`${name}: greedy and beam search ids equal transformers' (base and with the adapter)`, () => {
    const { exp, base, adapter } = load(name);
    const model = base();
    const opts = { attentionMask: ids2(exp.attention_mask), maxNewTokens: exp.max_new_tokens };
    const g = generate(model, ids2(exp.input_ids), opts);
    assert.deepEqual(g.shape, [exp.greedy.length, exp.greedy[0].length]);
    assert.deepEqual(Array.from(g.ints), exp.greedy.flat(), 'greedy');
    const bm = generate(model, ids2(exp.input_ids), { ...opts, numBeams: exp.num_beams });
    assert.deepEqual(Array.from(bm.ints), exp.beam.flat(), 'beam');
    // an eos the model produces: rows finish early and are padded, as transformers
    const ge = generate(model, ids2(exp.input_ids), { ...opts, eosTokenId: exp.eos });
    assert.deepEqual(ge.shape, [exp.greedy_eos.length, exp.greedy_eos[0].length]);
    assert.deepEqual(Array.from(ge.ints), exp.greedy_eos.flat(), 'greedy with eos');
    assert.deepEqual(Array.from(generate(model, ids2(exp.input_ids), { ...opts, eosTokenId: exp.eos, numBeams: exp.num_beams }).ints), exp.beam_eos.flat(), 'beam with eos');
    // sampling restricted to the best token is greedy, for each of several samples per input
    const sm = generate(model, ids2(exp.input_ids), { ...opts, doSample: true, topK: 1, numReturnSequences: 2, seed: 3 });
    assert.deepEqual(Array.from(sm.ints), exp.greedy.flatMap((r) => [...r, ...r]), 'top-1 samples');
    // without a cache the same ids
    assert.deepEqual(Array.from(generate(model, ids2(exp.input_ids), { ...opts, useCache: false }).ints), exp.greedy.flat(), 'greedy, no cache');
    const pm = PeftModel.fromPretrainedSync(model, adapter);
    assert.deepEqual(Array.from(generate(pm, ids2(exp.input_ids), opts).ints), exp.lora_greedy.flat(), 'LoRA greedy');
    assert.deepEqual(Array.from(generate(pm, ids2(exp.input_ids), { ...opts, numBeams: exp.num_beams }).ints), exp.lora_beam.flat(), 'LoRA beam');
  });

  test(`${name}: a fresh adapter targets peft's defaults and saves peft's layout`, () => {
    const { exp, base, adapter } = load(name);
    const pm = captureWarnings(() => getPeftModel(base(), new LoraConfig({ taskType: 'SEQ_2_SEQ_LM', r: 4, loraAlpha: 8 }))).result;
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-s2s-'));
    try {
      pm.savePretrained(tmp);
      const cfg = JSON.parse(fs.readFileSync(path.join(tmp, 'adapter_config.json'), 'utf8'));
      assert.deepEqual([...cfg.target_modules].sort(), exp.target_modules);
      assert.equal(cfg.task_type, 'SEQ_2_SEQ_LM');
      const shapes = (m: Map<string, { shape: number[] }>) => [...m].map(([k, t]) => `${k}:${t.shape.join('x')}`).sort();
      assert.deepEqual(shapes(readSafetensors(path.join(tmp, 'adapter_model.safetensors'))), shapes(readSafetensors(path.join(adapter, 'adapter_model.safetensors'))));
    } finally { fs.rmSync(tmp, { recursive: true, force: true }); }
  });
}

test('trainable / all parameter counts equal peft\'s (BART\'s final_logits_bias is a buffer, not counted)', () => {
  // peft 0.21: get_peft_model(model, LoraConfig(task_type="SEQ_2_SEQ_LM", r=8)).get_nb_trainable_parameters()
  const py: Record<string, [number, number]> = { t5: [3072, 14304], t5_v1_1: [3584, 20224], bart: [3072, 16128] };
  for (const name of CASES) {
    const pm = captureWarnings(() => getPeftModel(load(name).base(), new LoraConfig({ taskType: 'SEQ_2_SEQ_LM', r: 8 }))).result;
    assert.deepEqual(pm.getNbTrainableParameters(), py[name], name);
  }
});

test('seq2seq: bad input gets clear errors', () => {
  const { exp, base } = load('t5');
  const m = base();
  assert.throws(() => m.forward({ inputIds: ids2(exp.input_ids) }), /needs decoderInputIds or labels/);
  assert.throws(() => m.forward({ inputIds: ids2(exp.input_ids), labels: ids2([[1, 2]]) }), /differ in batch size/);
  assert.throws(() => m.forward({ inputIds: ids2(exp.input_ids), attentionMask: ids2([[1, 1]]), labels: ids2(exp.labels) }), /attentionMask must be \[2, 7\]/);
  const raw = { ...m.config.raw, feed_forward_proj: 'gated-gelu-x' };
  assert.throws(() => AutoModelForSeq2SeqLM.fromConfig(raw), /feed_forward_proj 'gated-gelu-x'/);
  assert.throws(() => generate(m, ids2(exp.input_ids), { decoderStartTokenId: undefined, maxNewTokens: 2, attentionMask: ids2([[1]]) }), /attentionMask/);
  const { base: bartBase } = load('bart');
  assert.throws(() => generate(bartBase(), ids2(exp.input_ids), { maxNewTokens: 40 }), /exceeds the model's 32 positions/);
  assert.throws(() => AutoModelForSeq2SeqLM.fromConfig({ model_type: 'gpt2', n_embd: 8, n_layer: 1, n_head: 2, vocab_size: 10 }), /'gpt2' is not supported for SEQ_2_SEQ_LM/);
});

test('tokenizeSeq2Seq + DataCollatorForSeq2Seq: transformers\' ids (T5-style tokenizer), labels padded with -100', () => {
  const tok = Tokenizer.fromFile(path.join(ROOT, 't5_tok'));
  // transformers: tokenizer("hello world").input_ids, tokenizer(text_target="HELLO WORLD").input_ids
  const ds = new Dataset([{ source: 'hello world', target: 'HELLO WORLD' }, { source: 'cat on mat', target: 'cat' }]);
  const f = tokenizeSeq2Seq(ds, tok);
  assert.deepEqual(f.rows[0].inputIds, [3, 12, 13, 13, 4, 3, 27, 34, 13, 19, 1]);
  assert.deepEqual(f.rows[0].labels, [3, 38, 39, 18, 18, 16, 3, 47, 30, 18, 25, 1]);
  const cut = tokenizeSeq2Seq(ds, tok, { maxLength: 4, maxTargetLength: 3 });
  assert.equal(cut.rows[0].inputIds.length, 4);
  assert.equal(cut.rows[0].inputIds[3], 1, 'truncation keeps </s>');
  assert.equal(cut.rows[0].labels!.length, 3);
  assert.throws(() => tokenizeSeq2Seq(ds, tok, { maxLength: 4, truncation: false }), /row 0: source is 11 tokens/);
  assert.throws(() => tokenizeSeq2Seq(ds, tok, { sourceColumn: 'input' }), /input/);
  assert.equal(tokenizeSeq2Seq(new Dataset([{ source: 'x' }]), tok).rows[0].labels, undefined, 'no target column, no labels');
  const batch = DataCollatorForSeq2Seq({ tokenizer: tok })(f.rows);
  const n0 = f.rows[0].inputIds.length, n1 = f.rows[1].inputIds.length, l1 = f.rows[1].labels!.length;
  assert.deepEqual(batch.inputIds.shape, [2, n0]);
  assert.deepEqual(Array.from(batch.inputIds.ints.subarray(n0 + n1)), new Array(n0 - n1).fill(0), 'inputs padded with <pad>');
  assert.deepEqual(Array.from(batch.attentionMask.ints.subarray(n0 + n1)), new Array(n0 - n1).fill(0));
  assert.deepEqual(batch.labels!.shape, [2, 12]);
  assert.deepEqual(Array.from(batch.labels!.ints.subarray(12 + l1)), new Array(12 - l1).fill(-100), 'labels padded with -100');
  assert.throws(() => DataCollatorForSeq2Seq({ tokenizer: tok })([{ inputIds: [1], labels: [] }]), /empty labels/);
});

test('Trainer + LoRA fine-tunes a T5 (loss falls; greedy output becomes the target)', async () => {
  const tok = Tokenizer.fromFile(path.join(ROOT, 't5_tok'));
  const { base } = load('t5');
  const raw = { ...base().config.raw, vocab_size: tok.vocabSize, dropout_rate: 0 };
  const model = AutoModelForSeq2SeqLM.fromConfig(raw, { rng: new Rng(1) });
  const pm = captureWarnings(() => getPeftModel(model, new LoraConfig({ taskType: 'SEQ_2_SEQ_LM', r: 8, loraAlpha: 16, targetModules: ['q', 'k', 'v', 'o', 'wi', 'wo'] }), 'default', { rng: new Rng(2) })).result;
  const rows = [{ source: 'hello world', target: 'HELLO WORLD' }, { source: 'good morning', target: 'GOOD MORNING' }];
  const feats = tokenizeSeq2Seq(new Dataset(rows), tok);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-s2s-train-'));
  try {
    const trainer = new Trainer({
      model: pm, tokenizer: tok, trainDataset: feats, evalDataset: feats, progressStream: { write: () => true },
      args: { outputDir: tmp, maxSteps: 150, learningRate: 2e-2, perDeviceTrainBatchSize: 2, saveStrategy: 'no', loggingSteps: 10, plotCurves: false, reportTo: 'none' },
    });
    const before = (await trainer.evaluate()).eval_loss;
    await trainer.train();
    const after = (await trainer.evaluate()).eval_loss;
    assert.ok(after < before / 5, `eval loss ${before} -> ${after}`);
    const enc = tok.encodeBatch(rows.map((r) => r.source), { padding: true }).toTensors();
    const out = generate(pm, enc.inputIds, { attentionMask: enc.attentionMask, maxNewTokens: 16 });
    assert.deepEqual(tok.batchDecode(Array.from({ length: 2 }, (_, i) => out.ints.subarray(i * out.shape[1], (i + 1) * out.shape[1])), { skipSpecialTokens: true }),
      rows.map((r) => r.target));
  } finally { fs.rmSync(tmp, { recursive: true, force: true }); }
});

// Our adapters (random B), saved; with PEFT_TS_EXPORT_DIR set they are kept there for
// `scripts/make_seq2seq_fixtures.py --verify-ours DIR` (Python peft loads them).
test('our seq2seq adapters export (checked by scripts/make_seq2seq_fixtures.py --verify-ours)', () => {
  const keep = process.env.PEFT_TS_EXPORT_DIR;
  const root = keep ?? fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-s2s-export-'));
  const rng = new Rng(7);
  try {
    for (const name of CASES) {
      const { exp, base } = load(name);
      const pm = captureWarnings(() => getPeftModel(base(), new LoraConfig({ taskType: 'SEQ_2_SEQ_LM', r: 2, loraAlpha: 4 }), 'default', { rng })).result;
      for (const [, p] of pm.namedParameters()) if (p.requiresGrad) for (let i = 0; i < p.size; i++) p.data[i] += 0.3 * rng.normal();
      pm.eval();
      const out = path.join(root, name);
      pm.savePretrained(path.join(out, 'adapter'));
      const ours = run(pm as unknown as Fwd, exp).logits;
      assert.ok(maxDiff(ours, exp.base_logits) > 1e-2);
      const again = PeftModel.fromPretrainedSync(base(), path.join(out, 'adapter'));
      close(run(again as unknown as Fwd, exp).logits, ours, 1e-6, `${name}: reloaded own adapter`);
      fs.writeFileSync(path.join(out, 'ours.json'), JSON.stringify({
        input_ids: exp.input_ids, attention_mask: exp.attention_mask, labels: exp.labels, logits: Array.from(ours),
      }));
    }
  } finally { if (!keep) fs.rmSync(root, { recursive: true, force: true }); }
});
