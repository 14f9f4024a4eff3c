// LoRA on Embedding layers (peft's lora.Embedding): init, forward written out by hand, gradients of
// A, B and the DoRA magnitude against finite differences, merge/unmerge, several adapters, saving
// with peft's keys and the save_embedding_layers rule, and a short training run on a tiny GPT-2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Rng, Tensor, tensor, tidy, noGrad } from '../src/tensor/index.js';
import { Module } from '../src/nn/module.js';
import { Embedding, Linear } from '../src/nn/layers.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { AdamW } from '../src/train/optim.js';
import { LoraConfig, LoraEmbedding, PeftModel, captureWarnings, getPeftModel, inspectModules } from '../src/peft/index.js';
import { gradcheck } from './helpers/gradcheck.js';

const V = 7, D = 5;
class Toy extends Module {
  constructor(rng = new Rng(1)) {
    super();
    this.registerModule('embed', new Embedding(V, D, rng));
    this.registerModule('proj', new Linear(D, 3, true, rng));
  }
  forward(ids: Tensor): Tensor {
    return (this.getSubmodule('proj') as Linear).forward((this.getSubmodule('embed') as Embedding).forward(ids));
  }
}
const IDS = () => tensor(Int32Array.from([1, 3, 3, 6, 0, 2]), [2, 3]);

function randomize(layer: LoraEmbedding, rng: Rng): void {
  for (const n of layer.adapterNames()) for (const p of layer.adapterParameters(n)) for (let i = 0; i < p.size; i++) p.data[i] += 0.5 * rng.normal();
}

function embLayer(pm: PeftModel): LoraEmbedding { return pm.getBaseModel().getSubmodule('embed') as LoraEmbedding; }

function out(pm: PeftModel): Float32Array {
  return tidy(() => noGrad(() => (pm.getBaseModel() as unknown as Toy).forward(IDS()).toFloat32Array()));
}

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i] - b[i]));
  assert.ok(w <= tol, `${what}: max diff ${w.toExponential(2)} > ${tol}`);
}

test('embedding LoRA: peft layout, init (A zeros, B normal) and a no-op start', () => {
  const toy = new Toy();
  const before = tidy(() => noGrad(() => toy.forward(IDS()).toFloat32Array()));
  const pm = getPeftModel(toy, new LoraConfig({ r: 2, loraAlpha: 4, targetModules: ['embed', 'proj'] }));
  const names = [...pm.namedParameters()].map(([n]) => n);
  for (const n of ['base_model.model.embed.base_layer.weight', 'base_model.model.embed.lora_embedding_A.default', 'base_model.model.embed.lora_embedding_B.default']) {
    assert.ok(names.includes(n), n);
  }
  const l = embLayer(pm);
  assert.deepEqual(l.loraEmbeddingA.get('default')!.shape, [2, V]);
  assert.deepEqual(l.loraEmbeddingB.get('default')!.shape, [D, 2]);
  assert.ok(l.loraEmbeddingA.get('default')!.toArray().every((v) => v === 0));
  assert.ok(l.loraEmbeddingB.get('default')!.toArray().some((v) => v !== 0));
  close(out(pm), before, 0, 'fresh adapter');
  // peft's in/out features for embeddings, and the CLI's inspect listing
  assert.deepEqual(inspectModules(toy).find((m) => m.name === 'embed'), { name: 'embed', type: 'LoraEmbedding(Embedding)', inFeatures: V, outFeatures: D });
  assert.equal(pm.getNbTrainableParameters()[0], 2 * V + D * 2 + 5 * 2 + 2 * 3);
});

test('embedding LoRA forward: base + A^T[ids] B^T * scaling (rsLoRA), dropout not applied to ids', () => {
  const pm = getPeftModel(new Toy(), new LoraConfig({ r: 3, loraAlpha: 6, targetModules: ['embed'], useRslora: true, loraDropout: 0.5 }));
  const l = embLayer(pm);
  randomize(l, new Rng(2));
  pm.train();
  const ids = IDS();
  const got = tidy(() => noGrad(() => l.forward(ids).toFloat32Array()));
  const A = l.loraEmbeddingA.get('default')!.data, B = l.loraEmbeddingB.get('default')!.data, W = l.baseLayer.weight.data;
  const s = 6 / Math.sqrt(3);
  const want = new Float32Array(ids.size * D);
  ids.ints.forEach((t, p) => {
    for (let j = 0; j < D; j++) {
      let acc = 0;
      for (let k = 0; k < 3; k++) acc += A[k * V + t] * B[j * 3 + k];
      want[p * D + j] = W[t * D + j] + acc * s;
    }
  });
  close(got, want, 1e-5, 'forward');
});

for (const useDora of [false, true]) {
  test(`embedding LoRA gradients of ${useDora ? 'the DoRA magnitude' : 'A and B'} match finite differences`, () => {
    const pm = getPeftModel(new Toy(), new LoraConfig({ r: 2, loraAlpha: 3, targetModules: ['embed'], useDora }));
    const l = embLayer(pm);
    randomize(l, new Rng(3));
    const ids = IDS();
    const params = l.adapterParameters('default');
    assert.equal(params.length, useDora ? 3 : 2);
    // gradcheck hands fresh leaves sharing the buffers; put them in the layer for the call
    gradcheck((...xs) => {
      const names = ['lora_embedding_A', 'lora_embedding_B'];
      const saved = params.map((p) => p);
      names.forEach((n, i) => (l.getChild(n) as unknown as { set(k: string, t: Tensor): void }).set('default', xs[i]));
      if (useDora) l.loraMagnitudeVector.get('default')!.registerParameter('weight', xs[2]);
      try { return l.forward(ids); } finally {
        names.forEach((n, i) => (l.getChild(n) as unknown as { set(k: string, t: Tensor): void }).set('default', saved[i]));
        if (useDora) l.loraMagnitudeVector.get('default')!.registerParameter('weight', saved[2]);
      }
    // DoRA's weight norm is a constant for autograd (peft detaches it) but not for finite
    // differences: there only the magnitude's gradient is checked
    }, useDora ? [params[0].detach(), params[1].detach(), params[2]] : params, { eps: 1e-2, rtol: 2e-2, atol: 2e-2, name: `embedding lora${useDora ? ' dora' : ''}` });
  });
}

for (const useDora of [false, true]) {
  test(`embedding LoRA merge/unmerge/mergeAndUnload, several adapters, disable${useDora ? ' (DoRA)' : ''}`, () => {
    const base = new Toy();
    const ref = tidy(() => noGrad(() => base.forward(IDS()).toFloat32Array()));
    const w0 = Float32Array.from((base.getSubmodule('embed') as Embedding).weight.data);
    const pm = getPeftModel(base, new LoraConfig({ r: 2, loraAlpha: 4, targetModules: ['embed'], useDora }));
    pm.addAdapter('other', new LoraConfig({ r: 3, loraAlpha: 3, targetModules: ['embed'], useDora }));
    const l = embLayer(pm);
    randomize(l, new Rng(4));
    pm.eval();
    const a = out(pm);
    assert.ok(Math.max(...a.map((v, i) => Math.abs(v - ref[i]))) > 1e-2, 'adapter changes outputs');
    close(pm.disableAdapter(() => out(pm)), ref, 1e-6, 'disabled');
    pm.setAdapter('other');
    const b = out(pm);
    assert.ok(Math.max(...b.map((v, i) => Math.abs(v - a[i]))) > 1e-2, 'second adapter differs');
    // both active at once, merged in turn (DoRA norms from the unmerged table), then unmerged exactly
    l.setAdapter(['default', 'other']);
    const both = out(pm);
    l.merge();
    close(out(pm), both, 1e-5, 'two adapters merged');
    l.unmerge();
    close(l.baseLayer.weight.data, w0, 1e-5, 'unmerge restores the table');
    close(out(pm), both, 1e-6, 'after unmerge');
    pm.setAdapter('default');
    pm.mergeAdapter();
    close(out(pm), a, 1e-5, 'merged');
    close(pm.disableAdapter(() => out(pm)), ref, 1e-5, 'disable unmerges');
    pm.deleteAdapter('other');
    const merged = pm.mergeAndUnload() as unknown as Toy;
    assert.ok(merged.getSubmodule('embed') instanceof Embedding);
    close(tidy(() => noGrad(() => merged.forward(IDS()).toFloat32Array())), a, 1e-5, 'mergeAndUnload');
  });
}

test('embedding LoRA saves lora_embedding_A/B without ".weight"; save_embedding_layers for embed_tokens', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-emb-'));
  try {
    const pm = getPeftModel(new Toy(), new LoraConfig({ r: 2, targetModules: ['embed', 'proj'], useDora: true }));
    randomize(embLayer(pm), new Rng(5));
    const { warnings } = captureWarnings(() => pm.savePretrained(tmp));
    assert.deepEqual(warnings, []); // 'embed' is not one of peft's EMBEDDING_LAYER_NAMES
    const keys = [...readSafetensors(path.join(tmp, 'adapter_model.safetensors')).keys()].sort();
    assert.deepEqual(keys, ['base_model.model.embed.lora_embedding_A', 'base_model.model.embed.lora_embedding_B', 'base_model.model.embed.lora_magnitude_vector',
      'base_model.model.proj.lora_A.weight', 'base_model.model.proj.lora_B.weight', 'base_model.model.proj.lora_magnitude_vector']);
    const again = PeftModel.fromPretrainedSync(new Toy(), tmp);
    close(out(again), out(pm.eval()), 1e-6, 'round trip');

    // a tied Llama with embed_tokens targeted: peft warns (tied), and saves the table as base_layer.weight
    const llama = () => captureWarnings(() => AutoModelForCausalLM.fromPretrainedSync(path.join('test', 'fixtures', 'peft', 'llama_emb_dora', 'base'))).result;
    const made = captureWarnings(() => getPeftModel(llama(), new LoraConfig({ r: 2, targetModules: ['embed_tokens'] })));
    assert.ok(made.warnings.some((w) => w.includes('tie_word_embeddings=True') && w.includes('ensure_weight_tying')), made.warnings.join('\n'));
    const saved = captureWarnings(() => made.result.savePretrained(path.join(tmp, 'llama')));
    assert.ok(saved.warnings.some((w) => w.includes('Setting `save_embedding_layers` to `True`')));
    const lk = [...readSafetensors(path.join(tmp, 'llama', 'adapter_model.safetensors')).keys()].sort();
    assert.deepEqual(lk, ['base_model.model.model.embed_tokens.base_layer.weight', 'base_model.model.model.embed_tokens.lora_embedding_A', 'base_model.model.model.embed_tokens.lora_embedding_B']);
    const none = captureWarnings(() => made.result.savePretrained(path.join(tmp, 'llama2'), { saveEmbeddingLayers: false }));
    assert.equal([...readSafetensors(path.join(tmp, 'llama2', 'adapter_model.safetensors')).keys()].length, 2);
    assert.deepEqual(none.warnings, []);
    const merging = captureWarnings(() => made.result.mergeAdapter());
    assert.ok(merging.warnings.some((w) => w.includes("tied_target_modules=['model.embed_tokens']")), merging.warnings.join('\n'));
  } finally { fs.rmSync(tmp, { recursive: true, force: true }); }
});

test('training LoRA on GPT-2 wte + c_attn lowers the loss', () => {
  const base = captureWarnings(() => AutoModelForCausalLM.fromPretrainedSync(path.join('test', 'fixtures', 'peft', 'gpt2_emb', 'base'))).result;
  const pm = getPeftModel(base, new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['wte', 'c_attn'] }), 'default', { rng: new Rng(11) });
  pm.train();
  const params = [...pm.namedParameters()].filter(([, p]) => p.requiresGrad);
  assert.ok(params.some(([n]) => n.endsWith('wte.lora_embedding_A.default')));
  const opt = new AdamW(params, { lr: 2e-2, weightDecay: 0 });
  const ids = tensor(Int32Array.from([1, 5, 9, 3, 7, 2, 1, 5, 9, 3, 7, 2]), [2, 6]);
  const losses: number[] = [];
  for (let step = 0; step < 15; step++) {
    const loss = tidy(() => {
      const l = pm.forward({ inputIds: ids, labels: ids }).loss!;
      l.backward();
      return l.item();
    });
    // the embedding's A gets a gradient (B starts nonzero, unlike Linear's)
    if (step === 0) assert.ok(embGrad(pm) > 0, 'lora_embedding_A gets a gradient on the first step');
    opt.step();
    pm.zeroGrad();
    losses.push(loss);
  }
  assert.ok(losses[14] < losses[0] - 0.1, `loss ${losses[0].toFixed(3)} -> ${losses[14].toFixed(3)}`);
});

function embGrad(pm: PeftModel): number {
  const p = [...pm.namedParameters()].find(([n]) => n.endsWith('wte.lora_embedding_A.default'))![1];
  return p.grad ? Math.max(...p.grad.toArray().map(Math.abs)) : 0;
}
