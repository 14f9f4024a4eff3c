// LoRA around an embedding table, with peft 0.21's layout (peft.tuners.lora.layer.Embedding):
//   base_layer.weight [V, d], lora_embedding_A.<adapter> [r, V], lora_embedding_B.<adapter> [d, r],
//   lora_magnitude_vector.<adapter>.weight [d] (DoRA)
// The adapter looks A's transposed columns up by token id: out = base(ids) + (A^T[ids] @ B^T) * scaling.
import { Tensor, noGrad } from '../tensor/tensor.js';
import { keep } from '../tensor/memory.js';
import { Rng, defaultRng } from '../tensor/random.js';
import { add, div, mul, mulScalar, tensor, transpose } from '../tensor/ops/basic.js';
import { embedding, linear, matmul } from '../tensor/ops/nn.js';
import { Module } from '../nn/module.js';
import { Dropout, Embedding } from '../nn/layers.js';
import { LoraConfig } from './config.js';
import { DoraMagnitude, LoraLayerBase, LoraLinear, ModuleDict } from './layer.js';
import { peftWarn } from './warn.js';

/** torch.nn.ParameterDict: parameters addressed by key (peft keeps embedding LoRA weights in one). */
export class ParameterDict extends Module {
  get(key: string): Tensor | undefined { return this.getParameter(key) ?? undefined; }
  set(key: string, t: Tensor): void { this.registerParameter(key, t); }
  has(key: string): boolean { return this.hasParameter(key); }
  delete(key: string): void { this.deleteParameter(key); }
  keys(): string[] { return this.ownParameterNames(); }
}

export class LoraEmbedding extends LoraLayerBase {
  readonly numEmbeddings: number;
  readonly embeddingDim: number;

  constructor(base: Embedding, adapterName: string, config: LoraConfig, r: number, alpha: number, rng: Rng = defaultRng()) {
    super();
    this.numEmbeddings = base.numEmbeddings;
    this.embeddingDim = base.embeddingDim;
    this.registerModule('base_layer', base);
    // peft creates dropout modules for embeddings too but never applies them to token ids
    this.registerModule('lora_dropout', new ModuleDict<Dropout>());
    this.registerModule('lora_embedding_A', new ParameterDict());
    this.registerModule('lora_embedding_B', new ParameterDict());
    this.registerModule('lora_magnitude_vector', new ModuleDict<DoraMagnitude>());
    this.activeAdapters = [adapterName];
    this.updateLayer(adapterName, r, alpha, config, rng);
  }

  get baseLayer(): Embedding { return this.getChild('base_layer') as Embedding; }
  get loraEmbeddingA(): ParameterDict { return this.getChild('lora_embedding_A') as ParameterDict; }
  get loraEmbeddingB(): ParameterDict { return this.getChild('lora_embedding_B') as ParameterDict; }
  get loraDropout(): ModuleDict<Dropout> { return this.getChild('lora_dropout') as ModuleDict<Dropout>; }
  get loraMagnitudeVector(): ModuleDict<DoraMagnitude> { return this.getChild('lora_magnitude_vector') as ModuleDict<DoraMagnitude>; }
  get merged(): boolean { return this.mergedAdapters.length > 0; }
  /** The base table (models that read wte.weight, e.g. a tied lm head, see the base). */
  get weight(): Tensor { return this.baseLayer.weight; }
  /** Embeddings have no bias (bias="lora_only" has nothing to train here). */
  get bias(): Tensor | null { return null; }
  adapterNames(): string[] { return this.loraEmbeddingA.keys(); }

  /** Trainable tensors of one adapter (A, B and the DoRA magnitude). */
  adapterParameters(name: string): Tensor[] {
    const out: Tensor[] = [];
    const a = this.loraEmbeddingA.get(name), b = this.loraEmbeddingB.get(name), m = this.loraMagnitudeVector.get(name);
    if (a) out.push(a);
    if (b) out.push(b);
    if (m) out.push(m.weight);
    return out;
  }

  /** peft's Embedding.update_layer. */
  updateLayer(name: string, r: number, alpha: number, config: LoraConfig, rng: Rng = defaultRng()): void {
    this.recordAdapter(name, r, alpha, config, [this.numEmbeddings, this.embeddingDim]);
    this.loraDropout.set(name, new Dropout(config.loraDropout, rng));
    const V = this.numEmbeddings, d = this.embeddingDim;
    // peft starts both from randn; init_lora_weights=false keeps that
    const A = new Float32Array(r * V), B = new Float32Array(d * r);
    if (config.initLoraWeights === false) {
      for (let i = 0; i < A.length; i++) A[i] = rng.normal();
      for (let i = 0; i < B.length; i++) B[i] = rng.normal();
    } else if (config.initLoraWeights === true || config.initLoraWeights === 'gaussian') {
      // reset_lora_parameters for embeddings (True and 'gaussian' alike): A zeros, B normal(0, 1).
      // The other way round from Linear, and still a no-op at start.
      for (let i = 0; i < B.length; i++) B[i] = rng.normal();
    } else {
      throw new Error(`Unknown initialization init_lora_weights=${JSON.stringify(config.initLoraWeights)}`);
    }
    for (const [dict, data, shape] of [[this.loraEmbeddingA, A, [r, V]], [this.loraEmbeddingB, B, [d, r]]] as const) {
      dict.get(name)?.dispose();
      dict.set(name, keep(tensor(data, [...shape])).setRequiresGrad(true));
    }
    if (config.useDora) this.loraMagnitudeVector.set(name, new DoraMagnitude(this.columnNorms(name)));
    else this.loraMagnitudeVector.delete(name);
    this.setAdapter(this.activeAdapters, config.inferenceMode);
  }

  /** peft's set_adapter on a layer: the named adapters trainable (unless inferenceMode), the rest frozen. */
  setAdapter(names: string | string[], inferenceMode = false): void {
    const list = typeof names === 'string' ? [names] : [...names];
    for (const name of this.adapterNames()) {
      for (const p of this.adapterParameters(name)) p.requiresGrad = list.includes(name) && !inferenceMode;
    }
    this.activeAdapters = list;
  }

  deleteAdapter(name: string): void {
    if (!this.loraEmbeddingA.has(name)) return;
    if (this.mergedAdapters.includes(name)) throw new Error(`adapter '${name}' is merged into the base weight; unmerge before deleting it`);
    for (const p of this.adapterParameters(name)) p.dispose();
    this.loraEmbeddingA.delete(name);
    this.loraEmbeddingB.delete(name);
    this.loraMagnitudeVector.delete(name);
    this.loraDropout.delete(name);
    this.forgetAdapter(name);
  }

  /** A^T[ids] @ B^T: the rank-r lookup then the up-projection (gradient to A through the embedding scatter-add). */
  private loraLookup(name: string, ids: Tensor): Tensor {
    const A = this.loraEmbeddingA.get(name)!, B = this.loraEmbeddingB.get(name)!;
    return linear(embedding(transpose(A, 0, 1), ids), B);
  }

  forward(ids: Tensor): Tensor {
    if (this.disableAdapters) {
      if (this.merged) this.unmerge();
      return this.baseLayer.forward(ids);
    }
    if (this.merged) return this.baseLayer.forward(ids);
    let result = this.baseLayer.forward(ids);
    for (const name of this.activeAdapters) {
      if (!this.loraEmbeddingA.has(name)) continue;
      const s = this.scaling[name];
      const out = this.loraLookup(name, ids);
      if (!this.useDora[name]) {
        result = add(result, mulScalar(out, s));
      } else {
        // DoraEmbeddingVariant: scale = m / ||W^T + s B A||_row (a constant for autograd);
        // result = scale * result + scale * lora * s
        const norm = tensor(this.columnNorms(name), [this.embeddingDim]);
        const scale = div(this.loraMagnitudeVector.get(name)!.weight, norm);
        result = add(mul(result, scale), mulScalar(mul(out, scale), s));
      }
    }
    return result;
  }

  /** (B @ A)^T * scaling, [V, d] like the base table. */
  getDeltaWeight(name: string): Tensor {
    return noGrad(() => {
      const A = this.loraEmbeddingA.get(name)!, B = this.loraEmbeddingB.get(name)!;
      return mulScalar(matmul(transpose(A, 0, 1), transpose(B, 0, 1)), this.scaling[name]);
    });
  }

  /**
   * DoRA's weight norm: for each embedding dimension j, the norm over the vocabulary of
   * W[:, j] + delta[:, j] (peft's get_weight_norm on W^T, fan_in_fan_out=True), delta the
   * scaled [V, d] update (default: this adapter's).
   */
  private columnNorms(name: string, delta?: Float32Array): Float32Array {
    const V = this.numEmbeddings, d = this.embeddingDim, w = this.baseLayer.weight.data;
    let dd = delta;
    if (!dd) { const t = this.getDeltaWeight(name); dd = t.data.slice(); t.dispose(); }
    const acc = new Float64Array(d);
    for (let v = 0; v < V; v++) {
      for (let j = 0; j < d; j++) {
        const x = Math.fround(w[v * d + j] + dd[v * d + j]);
        acc[j] += x * x;
      }
    }
    const out = new Float32Array(d);
    for (let j = 0; j < d; j++) out[j] = Math.sqrt(acc[j]);
    return out;
  }

  private baseWeight(): Tensor {
    const w = this.baseLayer.getParameter('weight');
    if (!w || w.dtype !== 'float32') throw new Error('merging needs a float32 embedding table');
    return w;
  }

  /** Adds the active (or the named) adapters into the table (peft's Embedding.merge). */
  merge(adapterNames?: string[], safeMerge = false): void {
    const names = (adapterNames ?? this.activeAdapters).filter((n) => this.loraEmbeddingA.has(n) && !this.mergedAdapters.includes(n));
    for (const name of names) {
      const delta = this.getDeltaWeight(name);
      const dd = delta.data.slice();
      delta.dispose();
      const W = this.baseWeight(), wd = W.data, next = new Float32Array(wd.length);
      if (!this.useDora[name]) {
        for (let i = 0; i < wd.length; i++) next[i] = wd[i] + dd[i];
      } else {
        // the norm comes from the table without other merged adapters, as forward sees it
        const reMerge = [...this.mergedAdapters];
        if (reMerge.length) this.unmerge();
        const norm = this.columnNorms(name, dd);
        if (reMerge.length) this.merge(reMerge);
        this.mergedNorms.set(name, norm);
        const f = this.doraFactor(name, norm), d = this.embeddingDim;
        for (let i = 0; i < wd.length; i++) next[i] = f[i % d] * (wd[i] + dd[i]);
      }
      if (safeMerge && !next.every(Number.isFinite)) throw new Error(`NaNs detected in the merged weights. The adapter ${name} seems to be broken`);
      wd.set(next);
      this.mergedAdapters.push(name);
    }
  }

  unmerge(): void {
    if (!this.merged) { peftWarn('Already unmerged. Nothing to do.'); return; }
    while (this.mergedAdapters.length) {
      const name = this.mergedAdapters.pop()!;
      const delta = this.getDeltaWeight(name);
      const dd = delta.data, wd = this.baseWeight().data;
      if (!this.useDora[name]) {
        for (let i = 0; i < wd.length; i++) wd[i] -= dd[i];
      } else {
        const f = this.doraFactor(name, this.mergedNorms.get(name)!), d = this.embeddingDim;
        this.mergedNorms.delete(name);
        for (let i = 0; i < wd.length; i++) wd[i] = wd[i] / f[i % d] - dd[i];
      }
      delta.dispose();
    }
  }

  private doraFactor(name: string, norm: Float32Array): Float32Array {
    const m = this.loraMagnitudeVector.get(name)!.weight.data;
    const f = new Float32Array(norm.length);
    for (let j = 0; j < f.length; j++) f[j] = m[j] / norm[j];
    return f;
  }
}

/** Any LoRA-adapted layer (peft's LoraLayer). */
export type LoraLayer = LoraLinear | LoraEmbedding;

export function isLoraLayer(m: Module): m is LoraLayer {
  return m instanceof LoraLinear || m instanceof LoraEmbedding;
}
