// Basic layers with torch's parameter names and initialisations.
import { Tensor } from '../tensor/tensor.js';
import { Rng, defaultRng } from '../tensor/random.js';
import { add, affine, rand, zeros, ones, gelu, relu, silu, tanh } from '../tensor/ops/basic.js';
import { dropout, embedding, layerNorm, linear, matmul, rmsNorm } from '../tensor/ops/nn.js';
import { Module } from './module.js';

function param(t: Tensor): Tensor { return t.setRequiresGrad(true); }

// Deferred initialisation (torch's meta device, accelerate's init_empty_weights): inside
// initEmptyWeights(fn), Linear and Conv1D register their weight as null and only remember
// its shape, and no layer draws random numbers (biases and embeddings are zeros). A loader
// then replaces those layers (e.g. by 4-bit ones) or gives them a buffer with
// materializeEmptyWeights() before copying checkpoint values in.
let emptyInitDepth = 0;

/** Runs fn with deferred weight initialisation (see above); returns its result. */
export function initEmptyWeights<T>(fn: () => T): T {
  emptyInitDepth++;
  try { return fn(); } finally { emptyInitDepth--; }
}

/** True inside initEmptyWeights. */
export function emptyInitActive(): boolean { return emptyInitDepth > 0; }

/** A weight-carrying layer whose weight may still be deferred. */
interface Deferrable { weightShape: number[] | null; getParameter(n: string): Tensor | null }

function weightOf(m: Deferrable & Module): Tensor {
  const w = m.getParameter('weight');
  if (!w && m.weightShape) {
    throw new Error(`${m.constructor.name} weight [${m.weightShape}] was never allocated (built inside initEmptyWeights): ` +
      'call materializeEmptyWeights(model) or load the layer first');
  }
  return w as Tensor;
}

/**
 * Gives every deferred Linear / Conv1D weight under root a zero-filled float32 buffer (the
 * pages stay untouched until written). Returns the parameter names it allocated.
 */
export function materializeEmptyWeights(root: Module): string[] {
  const out: string[] = [];
  for (const [path, m] of root.namedModules()) {
    if ((m instanceof Linear || m instanceof Conv1D) && m.weightShape) {
      if (!m.getParameter('weight')) {
        m.registerParameter('weight', param(zeros(m.weightShape)));
        out.push(path ? `${path}.weight` : 'weight');
      }
      m.weightShape = null;
    }
  }
  return out;
}

/** Any module that maps x -> y with a [out, in] weight: what LoRA can wrap. */
export interface LinearLike extends Module {
  inFeatures: number;
  outFeatures: number;
  forward(x: Tensor): Tensor;
}

/** torch.nn.Linear: y = x W^T + b, W [out, in], kaiming-uniform(a=sqrt(5)) init. */
export class Linear extends Module implements LinearLike {
  /** [out, in] while the weight is deferred (built inside initEmptyWeights), else null. */
  weightShape: number[] | null = null;
  constructor(readonly inFeatures: number, readonly outFeatures: number, bias = true, rng: Rng = defaultRng()) {
    super();
    if (emptyInitActive()) {
      this.weightShape = [outFeatures, inFeatures];
      this.registerParameter('weight', null);
      this.registerParameter('bias', bias ? param(zeros([outFeatures])) : null);
      return;
    }
    const bound = 1 / Math.sqrt(inFeatures);
    this.registerParameter('weight', param(rand([outFeatures, inFeatures], -bound, bound, rng)));
    this.registerParameter('bias', bias ? param(rand([outFeatures], -bound, bound, rng)) : null);
  }
  get weight(): Tensor { return weightOf(this); }
  get bias(): Tensor | null { return this.getParameter('bias'); }
  forward(x: Tensor): Tensor { return linear(x, this.weight, this.bias); }
}

/** GPT-2's Conv1D: y = x W + b with W stored [in, out] (peft's fan_in_fan_out case). */
export class Conv1D extends Module implements LinearLike {
  /** [in, out] while the weight is deferred (built inside initEmptyWeights), else null. */
  weightShape: number[] | null = null;
  constructor(readonly inFeatures: number, readonly outFeatures: number, rng: Rng = defaultRng(), std = 0.02) {
    super();
    if (emptyInitActive()) {
      this.weightShape = [inFeatures, outFeatures];
      this.registerParameter('weight', null);
      this.registerParameter('bias', param(zeros([outFeatures])));
      return;
    }
    const w = rand([inFeatures, outFeatures], 0, 1, rng);
    { const d = w.data; for (let i = 0; i < d.length; i++) d[i] = rng.normal() * std; }
    this.registerParameter('weight', param(w));
    this.registerParameter('bias', param(zeros([outFeatures])));
  }
  get weight(): Tensor { return weightOf(this); }
  get bias(): Tensor | null { return this.getParameter('bias'); }
  forward(x: Tensor): Tensor {
    const y = matmul(x, this.weight);
    return this.bias ? add(y, this.bias) : y;
  }
}

export class Embedding extends Module {
  constructor(readonly numEmbeddings: number, readonly embeddingDim: number, rng: Rng = defaultRng(), std = 1) {
    super();
    const w = zeros([numEmbeddings, embeddingDim]);
    // Deferred init: zeros, no random draws (a loader overwrites the table).
    if (!emptyInitActive()) { const d = w.data; for (let i = 0; i < d.length; i++) d[i] = rng.normal() * std; }
    this.registerParameter('weight', param(w));
  }
  get weight(): Tensor { return this.getParameter('weight')!; }
  forward(ids: Tensor): Tensor { return embedding(this.weight, ids); }
}

export class LayerNorm extends Module {
  constructor(readonly dim: number, readonly eps = 1e-5, affine = true) {
    super();
    this.registerParameter('weight', affine ? param(ones([dim])) : null);
    this.registerParameter('bias', affine ? param(zeros([dim])) : null);
  }
  forward(x: Tensor): Tensor { return layerNorm(x, this.getParameter('weight'), this.getParameter('bias'), this.eps); }
}

export class RMSNorm extends Module {
  /**
   * unitOffset: Gemma's norm, which scales by (1 + weight) with weight zeros at init
   * (transformers' GemmaRMSNorm); the stored weight is then the offset from 1.
   */
  constructor(readonly dim: number, readonly eps = 1e-6, readonly unitOffset = false) {
    super();
    this.registerParameter('weight', param(unitOffset ? zeros([dim]) : ones([dim])));
  }
  forward(x: Tensor): Tensor {
    const w = this.getParameter('weight')!;
    return rmsNorm(x, this.unitOffset ? affine(w, 1, 1) : w, this.eps);
  }
}

export class Dropout extends Module {
  constructor(readonly p: number, private readonly rng: Rng = defaultRng()) { super(); }
  forward(x: Tensor): Tensor { return dropout(x, this.p, this.training, this.rng); }
}

export type Activation = 'gelu' | 'gelu_new' | 'gelu_pytorch_tanh' | 'relu' | 'silu' | 'swish' | 'tanh';

/** Hugging Face ACT2FN names. */
export function activation(name: string): (x: Tensor) => Tensor {
  switch (name) {
    case 'gelu': return (x) => gelu(x);
    case 'gelu_new': case 'gelu_pytorch_tanh': case 'gelu_fast': return (x) => gelu(x, 'tanh');
    case 'relu': return relu;
    case 'silu': case 'swish': return silu;
    case 'tanh': return tanh;
    default: throw new Error(`unsupported activation '${name}'`);
  }
}
