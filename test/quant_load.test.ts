// Loading a model folder in 4 bit: the deferred-init model, streamed quantization, bnb-format
// folders, what is missing, and that quantized layers never get a float32 weight.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import '../src/backends/index.js';
import { Rng, clearPool, memoryStats, noGrad, resetPeakMemory, tensor } from '../src/tensor/index.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { Conv1D, Embedding, Linear, initEmptyWeights, materializeEmptyWeights } from '../src/nn/layers.js';
import { AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification, type HFModel } from '../src/models/index.js';
import { Linear4bit } from '../src/quant/linear4bit.js';
import { bnbConfigToDict, quantizeModel } from '../src/quant/model.js';
import '../src/quant/load.js';
import { isUint8Key } from '../src/quant/serialize.js';
import { writeSafetensors } from '../src/io/safetensors.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIX = [path.join(here, 'fixtures', 'models'), path.join(here, '..', '..', 'test', 'fixtures', 'models'), path.resolve('test/fixtures/models')]
  .find((p) => fs.existsSync(p))!;

function autoFor(name: string) {
  if (name.endsWith('_lm')) return AutoModelForCausalLM;
  if (name.endsWith('_tokcls')) return AutoModelForTokenClassification;
  return AutoModelForSequenceClassification;
}

function inputsFor(m: HFModel) {
  const ids = [3, 7, 1, 9, 4, 2].map((v) => v % m.config.vocabSize);
  return { inputIds: tensor(Int32Array.from(ids), [1, 6]), attentionMask: tensor(new Int32Array(6).fill(1), [1, 6]) };
}

function logits(m: HFModel): Float32Array {
  return noGrad(() => m.forward(inputsFor(m)).logits.data.slice());
}

const quiet = { logger: () => {} };

function tmpDir(): string { return fs.mkdtempSync(path.join(os.tmpdir(), 'quant-load-')); }

test('initEmptyWeights: no weight buffer, no random draws; materializeEmptyWeights gives zeros; ties survive', () => {
  const rng = new Rng(5);
  const [lin, conv, emb] = initEmptyWeights(() => [new Linear(8, 4, true, rng), new Conv1D(8, 4, rng), new Embedding(10, 4, rng)]);
  assert.equal(rng.next(), new Rng(5).next(), 'no random numbers drawn');
  assert.equal(lin.getParameter('weight'), null);
  assert.deepEqual(lin.weightShape, [4, 8]);
  assert.deepEqual(conv.weightShape, [8, 4]);
  assert.throws(() => lin.weight, /initEmptyWeights.*materializeEmptyWeights/);
  assert.ok(emb.weight.data.every((v) => v === 0));
  assert.ok(lin.bias!.data.every((v) => v === 0));
  assert.deepEqual(materializeEmptyWeights(lin), ['weight']);
  assert.deepEqual(lin.weight.shape, [4, 8]);
  assert.ok(lin.weight.data.every((v) => v === 0) && lin.weight.requiresGrad);
  assert.equal(lin.weightShape, null);
  // outside the scope layers are drawn as before
  assert.ok(new Linear(8, 4).weight.data.some((v) => v !== 0));
  // a tied head built inside the scope shares the embedding table
  const gpt2 = initEmptyWeights(() => AutoModelForCausalLM.fromConfig(
    { model_type: 'gpt2', vocab_size: 20, n_embd: 8, n_layer: 1, n_head: 2, n_positions: 16 }, { initWeights: false }));
  assert.deepEqual(materializeEmptyWeights(gpt2), ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'].map((n) => `transformer.h.0.${n}.weight`));
  assert.equal(gpt2.getSubmodule('lm_head').getParameter('weight'), gpt2.getSubmodule('transformer.wte').getParameter('weight'));
});

for (const name of ['llama_lm', 'gpt2_lm', 'gpt2_seqcls', 'bert_seqcls', 'distilbert_tokcls']) {
  test(`${name}: fromPretrained in 4 bit gives the same bits as loading in float32 then quantizeModel`, () => {
    const dir = path.join(FIX, name);
    const ref = autoFor(name).fromPretrainedSync(dir, quiet);
    const replaced = quantizeModel(ref);
    const want = logits(ref);
    const m = autoFor(name).fromPretrainedSync(dir, { ...quiet, quantizationConfig: { loadIn4bit: true, bnb4bitUseDoubleQuant: true } });
    assert.deepEqual(m.loadingInfo!.missingKeys, []);
    assert.deepEqual(m.loadingInfo!.unexpectedKeys, []);
    assert.equal(m.training, false);
    const q = [...m.namedModules()].filter(([, x]) => x instanceof Linear4bit).map(([p]) => p);
    assert.deepEqual(q, replaced);
    for (const [p, x] of m.namedModules()) {
      if (x instanceof Linear || x instanceof Conv1D) assert.ok(x.getParameter('weight'), `${p} has its float weight`);
    }
    assert.deepEqual(logits(m), want);
  });
}

/** A Llama-shaped random model saved to a folder (float32 or bfloat16 on disk). */
function saveSynthetic(dir: string, cfg: Record<string, unknown>, dtype?: 'bfloat16'): HFModel {
  const m = AutoModelForCausalLM.fromConfig(cfg, { rng: new Rng(3) });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...m.configForSave(), ...(dtype ? { dtype } : {}) }));
  writeSafetensors(path.join(dir, 'model.safetensors'), m.checkpointStateDict(), { format: 'pt' }, { dtype });
  return m;
}

const LLAMA = {
  model_type: 'llama', vocab_size: 64, hidden_size: 128, intermediate_size: 512, num_hidden_layers: 2,
  num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 32, tie_word_embeddings: false,
};

test('loading in 4 bit never allocates the float32 weights of quantized layers (peak tracked memory)', () => {
  const dir = tmpDir();
  try {
    const src = saveSynthetic(dir, LLAMA, 'bfloat16');
    let quantParams = 0, floatParams = 0;
    const qpaths = new Set(quantizeModel(AutoModelForCausalLM.fromConfig(LLAMA, { rng: new Rng(1) })));
    for (const [p, t] of src.stateDict()) {
      if (qpaths.has(p.replace(/\.weight$/, '')) && p.endsWith('.weight')) quantParams += t.size; else floatParams += t.size;
    }
    assert.ok(quantParams > 4 * floatParams, 'the linear layers dominate');
    clearPool();
    const live0 = memoryStats().liveBytes;
    resetPeakMemory();
    const m = AutoModelForCausalLM.fromPretrainedSync(dir, { ...quiet, quantizationConfig: { loadIn4bit: true } });
    const peak = memoryStats().peakLiveBytes - live0;
    // Only the float parameters (embeddings, norms, head) are tensors; a quantized weight's
    // float32 copy would add quantParams * 4 bytes.
    assert.ok(peak <= floatParams * 4 + 4096, `peak ${peak} B vs float params ${floatParams * 4} B`);
    let held = 0;
    for (const [, x] of m.namedModules()) if (x instanceof Linear4bit) held += x.quantizedBytes();
    assert.ok(held < quantParams * 0.5 * 1.1, `4-bit layers hold ${held} B for ${quantParams} params`);
    // and the float32 path really would: load + quantize peaks above the float32 linear weights
    clearPool();
    const live1 = memoryStats().liveBytes;
    resetPeakMemory();
    const f = AutoModelForCausalLM.fromPretrainedSync(dir, quiet);
    quantizeModel(f);
    assert.ok(memoryStats().peakLiveBytes - live1 >= quantParams * 4);
    assert.deepEqual(logits(m), logits(f));
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
});

test('a folder saved in bitsandbytes format (quantization_config + uint8 keys) loads as is', () => {
  const dir = tmpDir(), out = tmpDir();
  try {
    saveSynthetic(dir, LLAMA);
    const q = AutoModelForCausalLM.fromPretrainedSync(dir, { ...quiet, quantizationConfig: { loadIn4bit: true, bnb4bitUseDoubleQuant: true } });
    const want = logits(q);
    const state = new Map<string, Tensor>();
    for (const [p, mod] of q.namedModules()) if (mod instanceof Linear4bit) for (const [k, v] of mod.stateTensors(p)) state.set(k, v);
    for (const [k, v] of q.checkpointStateDict()) if (!state.has(k)) state.set(k, v);
    writeSafetensors(path.join(out, 'model.safetensors'), state, { format: 'pt' }, { uint8Keys: isUint8Key });
    const cfg = { ...q.configForSave(), quantization_config: bnbConfigToDict({ bnb4bitUseDoubleQuant: true }) };
    fs.writeFileSync(path.join(out, 'config.json'), JSON.stringify(cfg));
    const m = AutoModelForCausalLM.fromPretrainedSync(out, quiet);
    assert.deepEqual(m.loadingInfo!.missingKeys, []);
    assert.deepEqual(m.loadingInfo!.unexpectedKeys, []);
    const a = m.getSubmodule('model.layers.1.mlp.down_proj') as Linear4bit;
    const b = q.getSubmodule('model.layers.1.mlp.down_proj') as Linear4bit;
    assert.deepEqual(a.packedWeight, b.packedWeight);
    assert.deepEqual(logits(m), want);
    // a state entry missing is an error naming what is there
    const partial = new Map([...state].filter(([k]) => k !== 'model.layers.0.self_attn.q_proj.weight.quant_map'));
    writeSafetensors(path.join(out, 'model.safetensors'), partial, { format: 'pt' }, { uint8Keys: isUint8Key });
    assert.throws(() => AutoModelForCausalLM.fromPretrainedSync(out, quiet), /incomplete.*q_proj\.weight \(incomplete 4-bit state: have/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('a 4-bit layer missing from the checkpoint is drawn, quantized and reported; strict refuses', () => {
  const dir = tmpDir();
  try {
    const src = saveSynthetic(dir, LLAMA);
    const sd = src.checkpointStateDict();
    sd.delete('model.layers.0.mlp.up_proj.weight');
    writeSafetensors(path.join(dir, 'model.safetensors'), sd, { format: 'pt' });
    const warnings: string[] = [];
    const m = AutoModelForCausalLM.fromPretrainedSync(dir, { logger: (w) => warnings.push(w), quantizationConfig: { loadIn4bit: true } });
    assert.deepEqual(m.loadingInfo!.missingKeys, ['model.layers.0.mlp.up_proj.weight']);
    assert.match(warnings.join('\n'), /newly initialized: model\.layers\.0\.mlp\.up_proj\.weight/);
    const up = m.getSubmodule('model.layers.0.mlp.up_proj') as Linear4bit;
    assert.ok(up.isLoaded);
    const w = up.dequantizeWeight().data;
    let ss = 0;
    for (const v of w) ss += v * v;
    const std = Math.sqrt(ss / w.length);
    assert.ok(std > 0.015 && std < 0.025, `drawn with initializer_range 0.02: std ${std}`);
    assert.ok(logits(m).every(Number.isFinite));
    assert.throws(() => AutoModelForCausalLM.fromPretrainedSync(dir, { ...quiet, strict: true, quantizationConfig: { loadIn4bit: true } }),
      /weights missing.*up_proj/);
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
});
