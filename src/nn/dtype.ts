// Frozen bfloat16 weights (transformers' torch_dtype=torch.bfloat16, for the layers that
// hold nearly all of a model's bytes): the weight of every Linear, Conv1D and Embedding is
// stored in bf16 and used as stored by linear / embedding (src/tensor/ops/nn.ts), never as a
// float32 copy. Norms, biases, classifier heads and adapter weights stay float32: they are
// small, and whatever trains must be float32 (fp32 master weights).
import { Tensor, empty } from '../tensor/tensor.js';
import { clearPool } from '../tensor/storage.js';
import { toBfloat16, toFloat32 } from '../tensor/ops/basic.js';
import { Module } from './module.js';
import { Conv1D, Embedding, Linear } from './layers.js';

export type WeightDtype = 'float32' | 'bfloat16';

export interface CastWeightsOptions {
  /**
   * Module names or paths kept as they are (a key matches the path or any dotted part of it).
   * Default: classifierModuleNames() of the models in the tree (heads peft trains in full).
   */
  skip?: string[];
  /** Drop the tensor pool afterwards so the replaced buffers can be collected (default true). */
  releasePool?: boolean;
}

/** Path segments that belong to adapters, never cast (LoRA matrices, modules_to_save copies). */
const ADAPTER_PARTS = /(^|\.)(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector|modules_to_save)(\.|$)/;

function skipped(path: string, keys: string[]): boolean {
  return keys.some((k) => path === k || path.endsWith('.' + k) || path.startsWith(k + '.') || path.includes('.' + k + '.'));
}

function isWeightLayer(m: Module): m is Linear | Conv1D | Embedding {
  return m instanceof Linear || m instanceof Conv1D || m instanceof Embedding;
}

/** Which dtype a model's Linear / Conv1D / Embedding weights are stored in ('mixed' when both). */
export function weightsDtype(root: Module): WeightDtype | 'mixed' {
  const seen = new Set<string>();
  for (const [, m] of root.namedModules()) {
    const w = isWeightLayer(m) ? m.getParameter('weight') : null;
    if (w) seen.add(w.dtype);
  }
  if (seen.has('bfloat16')) return seen.size > 1 ? 'mixed' : 'bfloat16';
  return 'float32';
}

/**
 * Stores the weight of every Linear, Conv1D and Embedding under root in `dtype` (bf16 values
 * rounded to nearest even, as torch's .to(torch.bfloat16)); bf16 weights are frozen
 * (requiresGrad false), and casting back to float32 leaves them frozen too. Tied weights stay
 * one tensor; a tensor that a skipped or non-weight module also holds is left alone. Weights
 * still deferred by initEmptyWeights get a zero-filled buffer of that dtype. Call it on a base
 * model before getPeftModel: adapter weights are never cast. Returns the names of the
 * parameters it converted (a tied tensor under each of its names).
 */
export function castWeights(root: Module, dtype: WeightDtype, opts: CastWeightsOptions = {}): string[] {
  if (dtype !== 'float32' && dtype !== 'bfloat16') throw new Error(`castWeights: dtype must be 'float32' or 'bfloat16', got '${String(dtype)}'`);
  // Default skips: the classifier heads of every model in the tree (root may be a PeftModel).
  const heads = new Set<string>();
  for (const [, m] of root.namedModules()) {
    for (const h of (m as unknown as { classifierModuleNames?: () => string[] }).classifierModuleNames?.() ?? []) heads.add(h);
  }
  const skip = opts.skip ?? [...heads];
  // Who holds each tensor: a tensor is cast only when every holder is a castable weight slot.
  const holders = new Map<Tensor, boolean>();
  const slots: [string, Module][] = [];
  for (const [path, m] of root.namedModules()) {
    const castable = isWeightLayer(m) && !ADAPTER_PARTS.test(path) && !skipped(path, skip);
    for (const n of m.ownParameterNames()) {
      const p = m.getParameter(n);
      if (!p) continue;
      const ok = castable && n === 'weight';
      holders.set(p, (holders.get(p) ?? true) && ok);
    }
    if (castable) slots.push([path, m]);
  }
  const done = new Map<Tensor, Tensor>();
  const names: string[] = [];
  for (const [path, m] of slots) {
    const w = m.getParameter('weight');
    let next: Tensor;
    if (!w) {
      const shape = (m as Linear | Conv1D).weightShape;
      if (!shape) continue;
      next = empty(shape, dtype, true);
      (m as Linear | Conv1D).weightShape = null;
    } else {
      if (w.dtype === dtype || !holders.get(w)) continue;
      const prev = done.get(w);
      if (prev) next = prev;
      else {
        next = dtype === 'bfloat16' ? toBfloat16(w) : toFloat32(w);
        next.name = w.name;
        done.set(w, next);
      }
    }
    next.requiresGrad = false;
    m.registerParameter('weight', next);
    names.push(path ? `${path}.weight` : 'weight');
  }
  for (const old of done.keys()) old.dispose();
  if (opts.releasePool ?? true) clearPool();
  return names;
}
