// LoRA around a linear layer, with peft 0.21's parameter names, initialisation, forward,
// DoRA and merge semantics. Parameter paths inside the layer:
//   base_layer.weight, lora_A.<adapter>.weight, lora_B.<adapter>.weight,
//   lora_magnitude_vector.<adapter>.weight (DoRA)
import { Tensor, noGrad } from '../tensor/tensor.js';
import { keep } from '../tensor/memory.js';
import { Rng, defaultRng } from '../tensor/random.js';
import { add, affine, div, mul, mulScalar, sub, tensor, transpose } from '../tensor/ops/basic.js';
import { linear, matmul } from '../tensor/ops/nn.js';
import { Module } from '../nn/module.js';
import { Conv1D, Dropout, Linear, LinearLike } from '../nn/layers.js';
import { LoraConfig } from './config.js';
import { peftWarn } from './warn.js';
import { f32ToBf16 } from '../io/half.js';

/** torch.nn.ModuleDict: children addressed by key. */
export class ModuleDict<M extends Module = Module> extends Module {
  get(key: string): M | undefined { return this.getChild(key) as M | undefined; }
  set(key: string, m: M): void { this.registerModule(key, m); }
  has(key: string): boolean { return this.getChild(key) !== undefined; }
  delete(key: string): void { this.deleteChild(key); }
  keys(): string[] { return this.children().map(([k]) => k); }
}

/** DoRA's per-output-feature magnitude (peft's DoraLinearLayer; its parameter is "weight"). */
export class DoraMagnitude extends Module {
  constructor(values: Float32Array) {
    super();
    this.registerParameter('weight', tensor(values, [values.length]).setRequiresGrad(true));
  }
  get weight(): Tensor { return this.getParameter('weight')!; }
}

/**
 * A base layer whose weight is stored quantized (src/quant's Linear4bit): it exposes its
 * float32 [out, in] weight, and merging adds a [out, in] delta then re-quantizes.
 */
export interface DequantizableLinear extends LinearLike {
  dequantizeWeight(): Tensor;
  mergeDelta?(delta: Float32Array, scale?: number): void;
}

export function isDequantizable(m: Module): m is DequantizableLinear {
  return typeof (m as unknown as Partial<DequantizableLinear>).dequantizeWeight === 'function';
}

/** Anything LoRA can wrap: a module with inFeatures/outFeatures/forward. */
export function isLinearLike(m: Module): m is LinearLike {
  const l = m as unknown as Partial<LinearLike>;
  return typeof l.inFeatures === 'number' && typeof l.outFeatures === 'number' && typeof l.forward === 'function';
}

/**
 * What every LoRA layer keeps per adapter (peft's LoraLayer): rank, alpha, scaling, the
 * rsLoRA / DoRA switches, and which adapters are active or merged. Subclasses hold the weights.
 */
export abstract class LoraLayerBase extends Module {
  readonly r: Record<string, number> = {};
  readonly loraAlpha: Record<string, number> = {};
  readonly scaling: Record<string, number> = {};
  readonly useDora: Record<string, boolean> = {};
  readonly useRslora: Record<string, boolean> = {};
  activeAdapters: string[] = [];
  disableAdapters = false;
  mergedAdapters: string[] = [];
  // DoRA: the weight norms at merge time, needed to unmerge exactly (peft caches them too).
  protected readonly mergedNorms = new Map<string, Float32Array>();

  abstract adapterNames(): string[];
  abstract setAdapter(names: string | string[], inferenceMode?: boolean): void;

  /** Checks the rank and records an adapter's r, alpha and scaling (rsLoRA: alpha / sqrt(r)). */
  protected recordAdapter(name: string, r: number, alpha: number, config: LoraConfig, dims?: [number, number]): void {
    if (!Number.isInteger(r) || r <= 0) throw new Error(`\`r\` should be a positive integer value but the value passed is ${r}`);
    // A and B hold r * (in + out) floats: refuse a rank that cannot be allocated with a clear
    // message (a typed array stops at 2^31 elements; far before that memory runs out).
    if (dims && r * (dims[0] + dims[1]) > MAX_LORA_ELEMENTS) {
      throw new Error(`LoRA rank r=${r} is too large for a ${dims[0]} x ${dims[1]} layer: A and B would hold ${r * (dims[0] + dims[1])} values (limit ${MAX_LORA_ELEMENTS}); `
        + `useful ranks are at most min(in, out) = ${Math.min(dims[0], dims[1])}`);
    }
    this.r[name] = r;
    this.loraAlpha[name] = alpha;
    this.scaling[name] = config.useRslora ? alpha / Math.sqrt(r) : alpha / r;
    this.useRslora[name] = config.useRslora;
    this.useDora[name] = config.useDora;
  }

  /** Drops an adapter's records (its weights are gone already); peft then falls back to the first remaining adapter. */
  protected forgetAdapter(name: string): void {
    for (const rec of [this.r, this.loraAlpha, this.scaling, this.useDora, this.useRslora] as Record<string, unknown>[]) delete rec[name];
    if (this.activeAdapters.includes(name)) {
      const rest = this.activeAdapters.filter((a) => a !== name);
      this.setAdapter(rest.length ? rest : this.adapterNames().slice(0, 1));
    }
  }
}

/** Largest A + B size of one adapter on one layer (2^30 floats = 4 GiB). */
export const MAX_LORA_ELEMENTS = 2 ** 30;

export class LoraLinear extends LoraLayerBase implements LinearLike {
  readonly inFeatures: number;
  readonly outFeatures: number;
  fanInFanOut: boolean;

  constructor(base: LinearLike, adapterName: string, config: LoraConfig, r: number, alpha: number, rng: Rng = defaultRng()) {
    super();
    if (!isLinearLike(base)) throw new TypeError('LoraLinear wraps a module with inFeatures, outFeatures and forward()');
    this.inFeatures = base.inFeatures;
    this.outFeatures = base.outFeatures;
    // peft's dispatch_default: Conv1D stores [in, out] so needs fan_in_fan_out, nn.Linear must not have it.
    if (base instanceof Conv1D && !config.fanInFanOut) {
      peftWarn('fan_in_fan_out is set to False but the target module is `Conv1D`. Setting fan_in_fan_out to True.');
      config.fanInFanOut = true;
    } else if (!(base instanceof Conv1D) && config.fanInFanOut) {
      peftWarn('fan_in_fan_out is set to True but the target module is `torch.nn.Linear`. Setting fan_in_fan_out to False.');
      config.fanInFanOut = false;
    }
    this.fanInFanOut = config.fanInFanOut;
    this.registerModule('base_layer', base);
    this.registerModule('lora_dropout', new ModuleDict<Dropout>());
    this.registerModule('lora_A', new ModuleDict<Linear>());
    this.registerModule('lora_B', new ModuleDict<Linear>());
    this.registerModule('lora_magnitude_vector', new ModuleDict<DoraMagnitude>());
    this.activeAdapters = [adapterName];
    this.updateLayer(adapterName, r, alpha, config, rng);
  }

  get baseLayer(): LinearLike { return this.getChild('base_layer') as LinearLike; }
  get loraA(): ModuleDict<Linear> { return this.getChild('lora_A') as ModuleDict<Linear>; }
  get loraB(): ModuleDict<Linear> { return this.getChild('lora_B') as ModuleDict<Linear>; }
  get loraDropout(): ModuleDict<Dropout> { return this.getChild('lora_dropout') as ModuleDict<Dropout>; }
  get loraMagnitudeVector(): ModuleDict<DoraMagnitude> { return this.getChild('lora_magnitude_vector') as ModuleDict<DoraMagnitude>; }
  get merged(): boolean { return this.mergedAdapters.length > 0; }
  /** The base layer's bias (what the wrapped layer adds), if any. */
  get bias(): Tensor | null { return this.baseLayer.getParameter('bias'); }
  /** Adapter names this layer holds. */
  adapterNames(): string[] { return this.loraA.keys(); }

  /** Trainable tensors of one adapter (A, B and the DoRA magnitude). */
  adapterParameters(name: string): Tensor[] {
    return [this.loraA, this.loraB, this.loraMagnitudeVector].flatMap((d) => (d as ModuleDict).get(name)?.parameters() ?? []);
  }

  /** Adds (or re-creates) an adapter: peft's LoraLayer.update_layer. */
  updateLayer(name: string, r: number, alpha: number, config: LoraConfig, rng: Rng = defaultRng()): void {
    this.recordAdapter(name, r, alpha, config, [this.inFeatures, this.outFeatures]);
    this.loraDropout.set(name, new Dropout(config.loraDropout, rng));
    // init=false keeps nn.Linear's own init for both (as peft); otherwise reset below.
    const ctorRng = config.initLoraWeights === false ? rng : new Rng(0);
    this.loraA.set(name, new Linear(this.inFeatures, r, false, ctorRng));
    this.loraB.set(name, new Linear(r, this.outFeatures, false, ctorRng));
    this.resetLoraParameters(name, config.initLoraWeights, rng);
    if (config.useDora) this.initDora(name);
    else this.loraMagnitudeVector.delete(name);
    this.setAdapter(this.activeAdapters, config.inferenceMode);
  }

  /** A: kaiming-uniform(a=sqrt(5)) (or N(0, 1/r) for 'gaussian'), B: zeros, so the adapter starts as a no-op. */
  resetLoraParameters(name: string, init: boolean | 'gaussian', rng: Rng = defaultRng()): void {
    if (init === false) return;
    const A = this.loraA.get(name)!.weight, B = this.loraB.get(name)!.weight;
    if (init === true) {
      const bound = 1 / Math.sqrt(this.inFeatures); // kaiming_uniform_(a=sqrt(5)) on [r, in]
      const a = A.data;
      for (let i = 0; i < a.length; i++) a[i] = -bound + 2 * bound * rng.next();
    } else if (init === 'gaussian') {
      const std = 1 / this.r[name];
      const a = A.data;
      for (let i = 0; i < a.length; i++) a[i] = rng.normal() * std;
    } else {
      throw new Error(`Unknown initialization init_lora_weights=${JSON.stringify(init)}`);
    }
    B.data.fill(0);
  }

  private initDora(name: string): void {
    const lw = noGrad(() => keep(matmul(this.loraB.get(name)!.weight, this.loraA.get(name)!.weight)));
    const norm = this.weightNorm(this.baseWeightOutIn(), lw.data, this.scaling[name]);
    lw.dispose();
    this.loraMagnitudeVector.set(name, new DoraMagnitude(norm));
  }

  /** The base weight as float32 [out, in] (a copy when it had to be transposed or dequantized). */
  baseWeightOutIn(): { data: Float32Array; temp: boolean } {
    const base = this.baseLayer;
    if (isDequantizable(base)) {
      const t = base.dequantizeWeight();
      const data = t.data.slice(); // a plain copy, so the pooled buffer can go back now
      t.dispose();
      return { data, temp: true };
    }
    const w = base.getParameter('weight');
    if (!w) throw new Error(`the base layer ${base.constructor.name} has no 'weight' parameter`);
    if (w.dtype !== 'float32' && w.dtype !== 'bfloat16') throw new Error(`LoRA needs a float32 or bfloat16 base weight, got ${w.dtype}`);
    // A bf16 weight is widened exactly (a temporary float32 copy, as DoRA's norm needs values).
    const src = w.dtype === 'float32' ? w.data : w.toFloat32Array();
    if (!this.fanInFanOut) return { data: src, temp: w.dtype !== 'float32' };
    const out = new Float32Array(w.size), I = this.inFeatures, O = this.outFeatures;
    for (let i = 0; i < I; i++) for (let o = 0; o < O; o++) out[o * I + i] = src[i * O + o];
    return { data: out, temp: true };
  }

  /** Row norms of W + scaling * L, both [out, in] (peft's get_weight_norm). */
  private weightNorm(w: { data: Float32Array }, lw: Float32Array | null, scaling: number): Float32Array {
    const I = this.inFeatures, O = this.outFeatures, out = new Float32Array(O);
    for (let o = 0; o < O; o++) {
      let s = 0;
      for (let i = 0; i < I; i++) {
        const v = Math.fround(w.data[o * I + i] + (lw ? Math.fround(scaling * lw[o * I + i]) : 0));
        s += v * v;
      }
      out[o] = Math.sqrt(s);
    }
    return out;
  }

  /**
   * peft's set_adapter on a layer: the named adapters become active, their parameters
   * trainable unless inferenceMode; all others frozen.
   */
  setAdapter(names: string | string[], inferenceMode = false): void {
    const list = typeof names === 'string' ? [names] : [...names];
    for (const dict of [this.loraA, this.loraB, this.loraMagnitudeVector] as ModuleDict[]) {
      for (const key of dict.keys()) dict.get(key)!.requiresGrad_(list.includes(key) && !inferenceMode);
    }
    this.activeAdapters = list;
  }

  deleteAdapter(name: string): void {
    if (!this.loraA.has(name)) return;
    if (this.mergedAdapters.includes(name)) throw new Error(`adapter '${name}' is merged into the base weight; unmerge before deleting it`);
    for (const dict of [this.loraA, this.loraB, this.loraDropout, this.loraMagnitudeVector] as ModuleDict[]) {
      const m = dict.get(name);
      if (m) for (const p of m.parameters()) p.dispose();
      dict.delete(name);
    }
    this.forgetAdapter(name);
  }

  forward(x: Tensor): Tensor {
    if (this.disableAdapters) {
      if (this.merged) this.unmerge();
      return this.baseLayer.forward(x);
    }
    if (this.merged) return this.baseLayer.forward(x);
    let result = this.baseLayer.forward(x);
    for (const name of this.activeAdapters) {
      const A = this.loraA.get(name), B = this.loraB.get(name);
      if (!A || !B) continue;
      const drop = this.loraDropout.get(name)!;
      const s = this.scaling[name];
      if (!this.useDora[name]) {
        const h = A.forward(drop.forward(x));
        // The scaling rides in the GEMM's alpha (and its gradients'): no pass of its own.
        // lora_B is a bias-free Linear; a bf16 copy (inference casts) takes the plain path.
        const delta = B.weight.dtype === 'float32' ? linear(h, B.weight, null, s) : mulScalar(B.forward(h), s);
        result = add(result, delta);
      } else {
        result = add(result, this.doraDelta(name, x, result, A, B, drop, s));
      }
    }
    return result;
  }

  // peft's DoraLinearVariant.forward + DoraLinearLayer.forward. The weight norm is treated as
  // a constant (section 4.3 of the DoRA paper), so gradients reach A, B and the magnitude only
  // through the two terms below.
  private doraDelta(name: string, x: Tensor, result: Tensor, A: Linear, B: Linear, drop: Dropout, s: number): Tensor {
    const w = this.baseWeightOutIn();
    const norm = noGrad(() => {
      const lw = matmul(B.weight, A.weight);
      const n = this.weightNorm(w, lw.data, s);
      lw.dispose();
      return tensor(n, [n.length]);
    });
    const magnitude = this.loraMagnitudeVector.get(name)!.weight;
    const scale = div(magnitude, norm); // [out]
    let baseResult: Tensor;
    let xin = x;
    if (drop.p === 0 || !this.training) {
      // The result so far (base output plus earlier adapters), without the bias.
      const bias = this.bias;
      baseResult = bias ? sub(result, bias) : result;
    } else {
      xin = drop.forward(x);
      const wt = tensor(w.temp ? w.data : w.data.slice(), [this.outFeatures, this.inFeatures]);
      baseResult = linear(xin, wt);
    }
    const loraResult = B.forward(A.forward(xin));
    // (scale - 1) * base + scale * lora * s
    return add(mul(affine(scale, 1, -1), baseResult), mulScalar(mul(scale, loraResult), s));
  }

  /** B @ A * scaling, laid out like the base weight ([in, out] when fanInFanOut). */
  getDeltaWeight(name: string): Tensor {
    return noGrad(() => {
      const ba = matmul(this.loraB.get(name)!.weight, this.loraA.get(name)!.weight);
      const t = this.fanInFanOut ? transpose(ba, 0, 1) : ba;
      const out = mulScalar(t, this.scaling[name]);
      return out;
    });
  }

  private baseWeightParam(): Tensor {
    const base = this.baseLayer;
    if (isDequantizable(base)) throw new Error(`merging into a quantized base layer (${base.constructor.name}) is not supported; load the base model in float32 to merge`);
    const w = base.getParameter('weight');
    if (!w || (w.dtype !== 'float32' && w.dtype !== 'bfloat16')) throw new Error('merging needs a float32 or bfloat16 base weight');
    return w;
  }

  /**
   * The base weight's values as float32 to edit in place, and a commit that stores them back.
   * A bf16 weight is widened, edited in float32 and rounded back to bf16 once (to nearest
   * even): the merged weight carries bf16 rounding, so unmerging does not restore the original
   * bits exactly. (peft rounds the delta to bf16 before adding; one rounding here.)
   */
  private editBase(): { wd: Float32Array; commit(): void } {
    const W = this.baseWeightParam();
    if (W.dtype === 'float32') return { wd: W.data, commit: () => {} };
    const wd = W.toFloat32Array();
    return { wd, commit: () => f32ToBf16(wd, W.halfBits) };
  }

  /** Adds the active (or the named) adapters into the base weight (peft's merge, unsafe variant). */
  merge(adapterNames?: string[], safeMerge = false): void {
    const names = (adapterNames ?? this.activeAdapters).filter((n) => this.loraA.has(n) && !this.mergedAdapters.includes(n));
    if (isDequantizable(this.baseLayer)) { for (const name of names) this.mergeQuantized(name, safeMerge); return; }
    for (const name of names) {
      const base = this.editBase();
      const delta = this.getDeltaWeight(name);
      const d = delta.data, wd = base.wd;
      const next = new Float32Array(wd.length);
      if (!this.useDora[name]) {
        for (let i = 0; i < wd.length; i++) next[i] = wd[i] + d[i];
      } else {
        const norm = this.unmergedNorm(name, delta);
        this.mergedNorms.set(name, norm);
        const f = this.doraFactor(name, norm);
        this.forEachOutIn((o, k) => { next[k] = f[o] * (wd[k] + d[k]); });
      }
      delta.dispose();
      if (safeMerge && !next.every(Number.isFinite)) throw new Error(`NaNs detected in the merged weights. The adapter ${name} seems to be broken`);
      wd.set(next);
      base.commit();
      this.mergedAdapters.push(name);
    }
  }

  unmerge(): void {
    if (!this.merged) { peftWarn('Already unmerged. Nothing to do.'); return; }
    while (this.mergedAdapters.length) {
      const name = this.mergedAdapters.pop()!;
      if (isDequantizable(this.baseLayer)) { this.unmergeQuantized(name); continue; }
      const base = this.editBase();
      const delta = this.getDeltaWeight(name);
      const d = delta.data, wd = base.wd;
      if (!this.useDora[name]) {
        for (let i = 0; i < wd.length; i++) wd[i] -= d[i];
      } else {
        const f = this.doraFactor(name, this.mergedNorms.get(name)!);
        this.mergedNorms.delete(name);
        this.forEachOutIn((o, k) => { wd[k] = wd[k] / f[o] - d[k]; });
      }
      base.commit();
      delta.dispose();
    }
  }

  // 4-bit base (peft's bnb.Linear4bit merge): dequantize, apply, re-quantize. Only additive
  // deltas reach the layer, so DoRA's rescaling is expressed as new - old.
  private quantBase(): DequantizableLinear & { mergeDelta(delta: Float32Array, scale?: number): void } {
    const b = this.baseLayer as DequantizableLinear;
    if (typeof b.mergeDelta !== 'function') throw new Error(`merging into ${b.constructor.name} is not supported (it has no mergeDelta)`);
    return b as DequantizableLinear & { mergeDelta(delta: Float32Array, scale?: number): void };
  }

  private mergeQuantized(name: string, safeMerge: boolean): void {
    const base = this.quantBase();
    const delta = this.getDeltaWeight(name); // [out, in]: quantized layers never use fan_in_fan_out
    const d = delta.data.slice();
    delta.dispose();
    if (this.useDora[name]) {
      const w = base.dequantizeWeight();
      const norm = this.weightNorm(w, d, 1);
      this.mergedNorms.set(name, norm);
      const f = this.doraFactor(name, norm), I = this.inFeatures;
      for (let k = 0; k < d.length; k++) { const o = Math.floor(k / I); d[k] = f[o] * (w.data[k] + d[k]) - w.data[k]; }
      w.dispose();
    }
    if (safeMerge && !d.every(Number.isFinite)) throw new Error(`NaNs detected in the merged weights. The adapter ${name} seems to be broken`);
    base.mergeDelta(d, 1);
    this.mergedAdapters.push(name);
  }

  private unmergeQuantized(name: string): void {
    const base = this.quantBase();
    const delta = this.getDeltaWeight(name);
    const d = delta.data.slice();
    delta.dispose();
    if (this.useDora[name]) {
      const w = base.dequantizeWeight();
      const f = this.doraFactor(name, this.mergedNorms.get(name)!), I = this.inFeatures;
      this.mergedNorms.delete(name);
      for (let k = 0; k < d.length; k++) { const o = Math.floor(k / I); d[k] = w.data[k] / f[o] - d[k] - w.data[k]; }
      w.dispose();
      base.mergeDelta(d, 1);
    } else {
      base.mergeDelta(d, -1);
    }
  }

  // DoRA's norm must come from the weight without other merged adapters (as forward sees it).
  private unmergedNorm(name: string, delta: Tensor): Float32Array {
    const reMerge = [...this.mergedAdapters];
    if (reMerge.length) this.unmerge();
    const w = this.baseWeightOutIn();
    const dOutIn = this.fanInFanOut ? noGrad(() => transpose(delta, 0, 1)) : delta;
    const norm = this.weightNorm(w, dOutIn.data, 1);
    if (dOutIn !== delta) dOutIn.dispose();
    if (reMerge.length) this.merge(reMerge);
    return norm;
  }

  private doraFactor(name: string, norm: Float32Array): Float32Array {
    const m = this.loraMagnitudeVector.get(name)!.weight.data;
    const f = new Float32Array(norm.length);
    for (let o = 0; o < f.length; o++) f[o] = m[o] / norm[o];
    return f;
  }

  /** Calls fn(outIndex, storageIndex) for every weight element in the base weight's layout. */
  private forEachOutIn(fn: (o: number, k: number) => void): void {
    const I = this.inFeatures, O = this.outFeatures;
    if (this.fanInFanOut) { for (let i = 0; i < I; i++) for (let o = 0; o < O; o++) fn(o, i * O + o); }
    else for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) fn(o, o * I + i);
  }
}
