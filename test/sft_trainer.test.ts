// SFTTrainer over the embedded default GPT-2: the loss of a packed, padding-free batch equals
// transformers' on TRL's batch (fixture), peftConfig is applied by the trainer, and training
// moves only the adapter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { LoraConfig, PeftModel, getPeftModel } from '../src/peft/index.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { noGrad } from '../src/tensor/tensor.js';
import { tidy } from '../src/tensor/memory.js';
import { DataCollatorForSFT, prepareSFTDataset } from '../src/data/sft.js';
import { SFTConfig, SFTTrainer } from '../src/train/sft.js';
import { Rng, defaultRng } from '../src/tensor/random.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const MODEL = path.join(ROOT, 'assets/default-model');
const fx = JSON.parse(fs.readFileSync(path.join(ROOT, 'test/fixtures/sft/expected.json'), 'utf8'));
const quiet = { write: () => true, isTTY: false };
const texts = (fx.inputs.texts as string[]).map((text) => ({ text }));
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'sft-'));

test('packed batches: our loss equals transformers on TRL\'s collated batch (bfd padding-free, wrapped)', () => {
  const tok = Tokenizer.fromFile(MODEL);
  const model = AutoModelForCausalLM.fromPretrainedSync(MODEL, { logger: () => {} });
  model.eval();
  for (const [name, strategy] of [['pack_bfd', 'bfd'], ['pack_wrapped', 'wrapped']] as const) {
    const ds = prepareSFTDataset(texts, tok, { packing: true, maxLength: 16, packingStrategy: strategy });
    const batch = DataCollatorForSFT({ tokenizer: tok, paddingFree: strategy === 'bfd' })(ds.rows.slice(0, 2));
    const loss = noGrad(() => tidy(() => model.forward({ ...batch }).loss!.item()));
    assert.ok(Math.abs(loss - fx.cases[name].loss) < 1e-4, `${name}: ${loss} vs transformers ${fx.cases[name].loss}`);
  }
});

test('SFTConfig: TRL names and defaults, maxSeqLength alias, bad values refused', () => {
  const c = new SFTConfig({ outputDir: 'x', maxSeqLength: 64, packing: true });
  assert.equal(c.maxLength, 64);
  assert.equal(c.maxSeqLength, 64);
  assert.equal(c.learningRate, 2e-5);
  assert.equal(c.loggingSteps, 10);
  assert.equal(c.datasetTextField, 'text');
  assert.equal(c.packingStrategy, 'bfd');
  assert.equal(new SFTConfig({ outputDir: 'x', learningRate: 1e-3 }).learningRate, 1e-3);
  assert.throws(() => new SFTConfig({ outputDir: 'x', maxLength: 8, maxSeqLength: 9 }), /disagree/);
  assert.throws(() => new SFTConfig({ outputDir: 'x', packingStrategy: 'zip' as 'bfd' }), /packingStrategy/);
  assert.throws(() => new SFTConfig({ outputDir: 'x', packing: true, maxLength: null }), /packing needs maxLength/);
  assert.throws(() => new SFTConfig({ outputDir: 'x', bogus: 1 } as never), /unknown option/);
});

test('SFTTrainer: model folder + peftConfig -> LoRA applied by the trainer; packing; only the adapter trains', async () => {
  defaultRng().setState(new Rng(3).getState());
  const dir = tmp();
  const trainer = new SFTTrainer({
    model: MODEL,
    args: new SFTConfig({ outputDir: dir, maxLength: 16, packing: true, perDeviceTrainBatchSize: 2, maxSteps: 3, learningRate: 5e-3, saveStrategy: 'no', plotCurves: false, loggingSteps: 1 }),
    trainDataset: texts,
    peftConfig: new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['c_attn'], taskType: 'CAUSAL_LM' }),
    progressStream: quiet,
  });
  assert.ok(trainer.model instanceof PeftModel);
  assert.equal(trainer.paddingFree, true);
  assert.deepEqual(trainer.trainDataset!.rows.map((r) => (r.inputIds as number[]).length), fx.cases.pack_bfd.rows.map((r: { input_ids: number[] }) => r.input_ids.length));
  const params = [...trainer.model.namedParameters()];
  const before = new Map(params.map(([n, p]) => [n, Array.from(p.data)]));
  const out = await trainer.train();
  assert.ok(Number.isFinite(out.trainingLoss) && out.trainingLoss > 0);
  for (const [n, p] of params) {
    const moved = Array.from(p.data).some((v, i) => v !== before.get(n)![i]);
    if (n.includes('lora_B')) assert.ok(moved, `${n} should train`);
    if (!n.includes('lora_')) assert.ok(!moved, `${n} should stay frozen`);
  }
  await trainer.saveModel(dir);
  assert.ok(fs.existsSync(path.join(dir, 'adapter_config.json')));
});

test('SFTTrainer: prompt-completion data masks prompts; errors as TRL raises them', () => {
  const tok = Tokenizer.fromFile(MODEL);
  const model = AutoModelForCausalLM.fromPretrainedSync(MODEL, { logger: () => {} });
  const t = new SFTTrainer({ model, processingClass: tok, args: { outputDir: tmp() }, trainDataset: fx.inputs.prompt_completion, progressStream: quiet });
  assert.equal(t.completionOnlyLoss, true);
  assert.deepEqual(t.trainDataset!.rows.map((r) => r.labels), fx.cases.prompt_completion.rows.map((r: { labels: number[] }) => r.labels));
  const pm = getPeftModel(AutoModelForCausalLM.fromPretrainedSync(MODEL, { logger: () => {} }), new LoraConfig({ r: 2, targetModules: ['c_attn'] }));
  assert.throws(() => new SFTTrainer({ model: pm, processingClass: tok, args: { outputDir: tmp() }, trainDataset: texts, peftConfig: new LoraConfig({ r: 2 }) }), /PeftModel together with a peftConfig/);
  // evalPacking false keeps the eval rows whole while the training rows are packed.
  const ev = new SFTTrainer({ model, processingClass: tok, args: { outputDir: tmp(), packing: true, maxLength: 16, evalPacking: false }, trainDataset: texts, evalDataset: texts, progressStream: quiet });
  assert.deepEqual(ev.trainDataset!.rows.map((r) => r.inputIds), fx.cases.pack_bfd.rows.map((r: { input_ids: number[] }) => r.input_ids));
  assert.equal(ev.evalDataset!.length, texts.length);
  assert.ok(ev.evalDataset!.rows.every((r) => !('seqLengths' in r)));
  assert.throws(() => new SFTTrainer({ model, args: { outputDir: tmp() }, trainDataset: texts }), /processingClass/);
  assert.throws(() => new SFTTrainer({ model, processingClass: tok, args: { outputDir: tmp(), paddingFree: true }, trainDataset: texts }), /paddingFree without packing/);
  assert.throws(() => new SFTTrainer({ model, processingClass: tok, args: { outputDir: tmp(), padToken: '<nope>' }, trainDataset: texts }), /padToken/);
});
