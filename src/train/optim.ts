// AdamW as torch.optim.AdamW (bias-corrected, decoupled weight decay), with the Trainer's
// parameter grouping: biases and norm weights get no weight decay. Global-norm gradient
// clipping as torch.nn.utils.clip_grad_norm_.
import type { Tensor } from '../tensor/tensor.js';
import { getBackend, hostSync } from '../tensor/registry.js';
import type { Module } from '../nn/module.js';
import { LayerNorm } from '../nn/layers.js';

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

export interface ParamGroup {
  params: [string, Tensor][];
  weightDecay: number;
}

interface Slot { m: Float32Array; v: Float32Array }

/** State of AdamW, flat and serialisable: moments per parameter name, plus the step count. */
export interface AdamWState {
  step: number;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

export class AdamW {
  lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly groups: ParamGroup[];
  /** Optimizer steps taken (torch keeps one per parameter; they are always equal here). */
  stepCount = 0;
  private slots = new Map<string, Slot>();

  constructor(groups: ParamGroup[] | [string, Tensor][], opts: AdamWOptions = {}) {
    this.lr = opts.lr ?? 1e-3;
    [this.beta1, this.beta2] = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    const wd = opts.weightDecay ?? 0.01;
    this.groups = isGroupList(groups) ? groups : [{ params: groups, weightDecay: wd }];
    if (!(this.lr >= 0)) throw new Error(`AdamW: invalid learning rate ${this.lr}`);
    if (!(this.beta1 >= 0 && this.beta1 < 1 && this.beta2 >= 0 && this.beta2 < 1)) throw new Error(`AdamW: betas must be in [0, 1), got ${this.beta1}, ${this.beta2}`);
    const names = new Set<string>();
    for (const g of this.groups) for (const [n, p] of g.params) {
      if (names.has(n)) throw new Error(`AdamW: parameter '${n}' appears twice`);
      names.add(n);
      if (p.dtype !== 'float32') throw new Error(`AdamW: parameter '${n}' is ${p.dtype}; only float32 parameters can be trained`);
    }
  }

  /** One update with the current gradients; parameters without a gradient are skipped (as torch). */
  step(): void {
    this.stepCount++;
    const be = getBackend();
    for (const g of this.groups) {
      for (const [name, p] of g.params) {
        if (!p.grad) continue;
        let s = this.slots.get(name);
        if (!s) { s = { m: zeroBuffer(p.size), v: zeroBuffer(p.size) }; this.slots.set(name, s); }
        be.adamw(p.buf, p.grad.buf, s.m, s.v, this.lr, this.beta1, this.beta2, this.eps, g.weightDecay, this.stepCount);
      }
    }
  }

  zeroGrad(): void {
    for (const g of this.groups) for (const [, p] of g.params) if (p.grad) { p.grad.dispose(); p.grad = null; }
  }

  /** All trained parameters, in group order. */
  namedParams(): [string, Tensor][] { return this.groups.flatMap((g) => g.params); }

  stateDict(): AdamWState {
    const m = new Map<string, Float32Array>(), v = new Map<string, Float32Array>();
    hostSync();
    for (const [n, s] of this.slots) { m.set(n, s.m.slice()); v.set(n, s.v.slice()); }
    return { step: this.stepCount, m, v };
  }

  loadStateDict(st: AdamWState): void {
    const params = new Map(this.namedParams());
    this.slots.clear();
    for (const [n, m] of st.m) {
      const p = params.get(n);
      if (!p) throw new Error(`optimizer state has moments for '${n}', which is not a trained parameter of this model`);
      const v = st.v.get(n);
      if (!v) throw new Error(`optimizer state for '${n}' has exp_avg but no exp_avg_sq`);
      if (m.length !== p.size || v.length !== p.size) throw new Error(`optimizer state for '${n}' has ${m.length} values, the parameter has ${p.size}`);
      this.slots.set(n, { m: bufferFrom(m), v: bufferFrom(v) });
    }
    this.stepCount = st.step;
  }
}

/** Moment buffers live where the backend's kernels can use them (device memory on cuda). */
function zeroBuffer(n: number): Float32Array {
  const be = getBackend();
  if (!be.alloc) return new Float32Array(n);
  const b = be.alloc(n, 'float32') as Float32Array;
  if (be.fill) be.fill(b, 0); else { hostSync(); b.fill(0); }
  return b;
}

function bufferFrom(src: Float32Array): Float32Array {
  const be = getBackend();
  if (!be.alloc) return src.slice();
  const b = be.alloc(src.length, 'float32') as Float32Array;
  hostSync();
  b.set(src);
  return b;
}

function isGroupList(g: ParamGroup[] | [string, Tensor][]): g is ParamGroup[] {
  return g.length > 0 && !Array.isArray(g[0]);
}

// transformers' Trainer.get_decay_parameter_names: no decay inside nn.LayerNorm modules or
// where the lower-cased name matches one of these.
const NO_DECAY = [/bias/, /layernorm/, /rmsnorm/, /(?:^|\.)norm(?:$|\.)/, /_norm(?:$|\.)/];

/** Names of trainable parameters that get weight decay, as transformers decides. */
export function decayParameterNames(model: Module): Set<string> {
  const out = new Set<string>();
  const inLayerNorm = new Set<Tensor>();
  for (const [, m] of model.namedModules()) if (m instanceof LayerNorm) for (const p of m.parameters()) inLayerNorm.add(p);
  for (const [n, p] of model.namedParameters()) {
    if (inLayerNorm.has(p)) continue;
    const low = n.toLowerCase();
    if (NO_DECAY.some((r) => r.test(low))) continue;
    out.add(n);
  }
  return out;
}

/** Two groups over the trainable parameters: with weight decay and without. */
export function paramGroups(model: Module, weightDecay: number): ParamGroup[] {
  const decay = decayParameterNames(model);
  const withWd: [string, Tensor][] = [], without: [string, Tensor][] = [];
  for (const [n, p] of model.namedParameters()) {
    if (!p.requiresGrad) continue;
    (decay.has(n) ? withWd : without).push([n, p]);
  }
  if (withWd.length + without.length === 0) throw new Error('the model has no trainable parameters (did you forget getPeftModel or requiresGrad_(true)?)');
  return [{ params: withWd, weightDecay }, { params: without, weightDecay: 0 }];
}

/**
 * torch.nn.utils.clip_grad_norm_: scales all gradients by min(1, maxNorm / (norm + 1e-6)).
 * Returns the total L2 norm before clipping. The norm is accumulated in float64.
 */
export function clipGradNorm(params: Tensor[], maxNorm: number): number {
  const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
  let sq = 0;
  for (const g of grads) { const d = g.data; for (let i = 0; i < d.length; i++) sq += d[i] * d[i]; }
  const norm = Math.sqrt(sq);
  if (maxNorm > 0) {
    const coef = Math.fround(maxNorm / (norm + 1e-6));
    if (coef < 1) for (const g of grads) { const d = g.data; for (let i = 0; i < d.length; i++) d[i] *= coef; }
  }
  return norm;
}
