// The trainer over the real pieces: a tiny GPT-2 from the model fixtures, LoRA from src/peft,
// a real tokenizer from src/io.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AutoModelForSequenceClassification, AutoModelForCausalLM } from '../src/models/index.js';
import { LoraConfig, getPeftModel } from '../src/peft/index.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { Trainer } from '../src/train/trainer.js';
import type { TrainerCallback } from '../src/train/callbacks.js';
import { DataCollatorWithPadding, DataCollatorForLanguageModeling } from '../src/data/collators.js';
import { Dataset, Row } from '../src/data/dataset.js';
import { tokenizeCausalLM, tokenizeClassification } from '../src/data/tokenize.js';
import { applyChatTemplate } from '../src/data/templates.js';
import { Rng, defaultRng } from '../src/tensor/random.js';

const FIX = path.join(process.cwd(), 'test', 'fixtures');
const tmp = (n: string) => fs.mkdtempSync(path.join(os.tmpdir(), `h5-${n}-`));
const quiet = { write: () => true, isTTY: false };

function seqClsRows(n: number, seed: number): Row[] {
  const r = new Rng(seed);
  return [...Array(n)].map(() => {
    const ids = [...Array(3 + r.int(6))].map(() => 1 + r.int(99));
    return { inputIds: ids, labels: ids.filter((t) => t > 50).length % 3 };
  });
}

function loraClassifier() {
  defaultRng().setState(new Rng(7).getState()); // LoRA init draws from the shared generator
  const base = AutoModelForSequenceClassification.fromPretrainedSync(path.join(FIX, 'models', 'gpt2_seqcls'), { logger: () => {} });
  return getPeftModel(base, new LoraConfig({ taskType: 'SEQ_CLS', r: 4, loraAlpha: 8, loraDropout: 0.1 }));
}

const trainable = (m: { namedParameters(): Iterable<[string, { requiresGrad: boolean; data: Float32Array }]> }) =>
  new Map([...m.namedParameters()].filter(([, p]) => p.requiresGrad).map(([n, p]) => [n, Array.from(p.data)]));

test('GPT-2 + LoRA: checkpoints hold the peft adapter, and resume is bitwise exact (dropout on)', async () => {
  const data = seqClsRows(20, 1);
  const args = (dir: string) => ({ outputDir: dir, perDeviceTrainBatchSize: 4, gradientAccumulationSteps: 2, numTrainEpochs: 2,
    learningRate: 1e-2, warmupRatio: 0.2, saveSteps: 2, loggingSteps: 1, plotCurves: false });
  const collator = DataCollatorWithPadding({ padTokenId: 0 });
  const full = loraClassifier();
  await new Trainer({ model: full, trainDataset: data, dataCollator: collator, progressStream: quiet, args: args(tmp('pfull')) }).train();
  const names = [...trainable(full).keys()];
  assert.ok(names.some((n) => n.includes('lora_A')) && names.some((n) => n.includes('score')), names.join(', '));

  const dir = tmp('presume');
  const stop: TrainerCallback = { onStepEnd: ({ state, control }) => { if (state.globalStep === 2) control.shouldTrainingStop = true; } };
  await new Trainer({ model: loraClassifier(), trainDataset: data, dataCollator: collator, progressStream: quiet, args: args(dir), callbacks: [stop] }).train();
  const ck = path.join(dir, 'checkpoint-2');
  for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'trainable_params.safetensors', 'optimizer.safetensors', 'trainer_state.json']) {
    assert.ok(fs.existsSync(path.join(ck, f)), f);
  }
  const resumed = loraClassifier();
  await new Trainer({ model: resumed, trainDataset: data, dataCollator: collator, progressStream: quiet, args: args(dir) }).train({ resumeFromCheckpoint: true });
  const a = trainable(full), b = trainable(resumed);
  for (const [n, v] of a) assert.deepEqual(b.get(n), v, n);
});

test('GPT-2 tokenizer + causal LM + LoRA: chat-formatted data trains and the loss falls', async () => {
  const tok = Tokenizer.fromFile(path.join(FIX, 'io', 'tok_gpt2'));
  const base = AutoModelForCausalLM.fromPretrainedSync(path.join(FIX, 'models', 'gpt2_lm'), { logger: () => {} });
  const vocab = base.config.vocabSize;
  const model = getPeftModel(base, new LoraConfig({ taskType: 'CAUSAL_LM', r: 8, loraAlpha: 16 }));
  // The tiny model has a small vocabulary: map the real tokenizer's ids into it.
  const small = { ...tok, eosTokenId: 2, padTokenId: 0, modelMaxLength: 32,
    encode: (t: string, o?: { addSpecialTokens?: boolean }) => tok.encode(t, o).map((i) => 3 + (i % (vocab - 3))) };
  const rows = [...Array(8)].map((_, i) => ({
    prompt: applyChatTemplate([{ role: 'user', content: `hi ${i % 2}` }], { chatTemplate: '{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}', addGenerationPrompt: true }),
    response: i % 2 ? 'one one' : 'zero zero',
  }));
  const feats = tokenizeCausalLM(new Dataset(rows), small, { promptColumn: 'prompt', responseColumn: 'response', maxLength: 32 });
  assert.ok(feats.rows[0].labels.includes(-100));
  const t = new Trainer({ model, trainDataset: feats, evalDataset: feats, dataCollator: DataCollatorForLanguageModeling({ padTokenId: 0 }), progressStream: quiet,
    args: { outputDir: tmp('clm'), perDeviceTrainBatchSize: 4, numTrainEpochs: 10, learningRate: 5e-2, saveStrategy: 'no', loggingSteps: 5, plotCurves: false } });
  const before = (await t.evaluate()).eval_loss;
  await t.train();
  const after = (await t.evaluate()).eval_loss;
  // The fixture's frozen tied embeddings have std 0.02, which caps how far LoRA on attention
  // can move the logits (full fine-tuning of the same data reaches ~0.02); a clear drop is the check.
  assert.ok(after < before - 0.2, `${after} vs ${before}`);
});

test('real tokenizers: classification features with pair truncation keep special tokens', () => {
  const dir = path.join(FIX, 'io', 'tok_bert');
  if (!fs.existsSync(path.join(dir, 'tokenizer.json'))) return;
  const tok = Tokenizer.fromFile(dir);
  const ds = new Dataset([{ a: 'the quick brown fox jumps over the lazy dog', b: 'a second sentence here', label: 1 }]);
  const f = tokenizeClassification(ds, tok, { textColumn: 'a', textPairColumn: 'b', maxLength: 10 });
  const ids = f.rows[0].inputIds;
  assert.equal(ids.length, 10);
  const full = tok.encode('the quick brown fox jumps over the lazy dog', { textPair: 'a second sentence here' });
  assert.equal(ids[0], full[0]);
  assert.equal(ids[ids.length - 1], full[full.length - 1]); // [SEP] survives truncation
});
