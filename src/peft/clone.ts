// Deep copy of a Module (torch's copy.deepcopy, which peft's ModulesToSaveWrapper uses):
// parameters get fresh buffers, children are copied, and references shared inside the
// original (tied weights, typed child fields) stay shared inside the copy.
import { Tensor } from '../tensor/tensor.js';
import { empty, noGrad } from '../tensor/tensor.js';
import { keep } from '../tensor/memory.js';
import { Module } from '../nn/module.js';

export function cloneModule<M extends Module>(m: M): M {
  return noGrad(() => copyValue(m, new Map()) as M);
}

function copyTensor(t: Tensor): Tensor {
  const c = keep(empty(t.shape, t.dtype, false));
  if (t.dtype === 'float32') c.data.set(t.data);
  else if (t.dtype === 'int32') c.ints.set(t.ints);
  else c.halfBits.set(t.halfBits);
  c.requiresGrad = t.requiresGrad;
  c.name = t.name;
  return c;
}

function copyValue(v: unknown, memo: Map<unknown, unknown>): unknown {
  if (v === null || typeof v !== 'object') return v;
  if (memo.has(v)) return memo.get(v);
  if (v instanceof Tensor) { const c = copyTensor(v); memo.set(v, c); return c; }
  if (v instanceof Map) {
    const c = new Map();
    memo.set(v, c);
    for (const [k, x] of v) c.set(k, copyValue(x, memo));
    return c;
  }
  if (Array.isArray(v)) {
    const c: unknown[] = [];
    memo.set(v, c);
    for (const x of v) c.push(copyValue(x, memo));
    return c;
  }
  if (v instanceof Module) {
    const c = Object.create(Object.getPrototypeOf(v));
    memo.set(v, c);
    for (const key of Reflect.ownKeys(v)) {
      const d = Object.getOwnPropertyDescriptor(v, key)!;
      if ('value' in d) d.value = copyValue(d.value, memo);
      Object.defineProperty(c, key, d);
    }
    return c;
  }
  // Anything else (Rng, config objects, typed arrays of constants): shared, as they are not state we train.
  return v;
}
