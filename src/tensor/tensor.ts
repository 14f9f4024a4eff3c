// Tensor: a shape, a dtype and a contiguous buffer, plus the autograd links (a node that
// knows its inputs and how to push a gradient back to them). Buffers are always contiguous
// row-major; ops that would make a strided view (transpose, slice) copy instead, which keeps
// every kernel simple. Memory is released explicitly by dispose() or a tidy() scope and
// recycled through a pool, so a long training run stays flat.
import { getBackend, hostSync } from './registry.js';
import { keep, trackTensor } from './memory.js';
import { Storage, allocStorage } from './storage.js';
import { numel, shapeStr } from './shape.js';

export type DType = 'float32' | 'int32' | 'bfloat16' | 'float16';
export type Device = 'cpu' | 'cuda';

export interface GradNode {
  name: string;
  inputs: (Tensor | null)[];
  /** Given the output gradient, returns one gradient per input (null where none). */
  backward: (gy: Tensor) => (Tensor | null)[];
}

let gradEnabled = true;
let nextId = 1;

export function isGradEnabled(): boolean { return gradEnabled; }

/** Runs fn with graph recording off (like torch.no_grad()). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try { return fn(); } finally { gradEnabled = prev; }
}

export function enableGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = true;
  try { return fn(); } finally { gradEnabled = prev; }
}

export class Tensor {
  readonly id = nextId++;
  readonly shape: number[];
  readonly dtype: DType;
  readonly device: Device = 'cpu';
  requiresGrad = false;
  grad: Tensor | null = null;
  node: GradNode | null = null;
  /** Optional name (parameter path), used in messages. */
  name = '';
  /** True once backward() freed this op output's graph node: a leaf now, but no parameter. */
  graphFreed = false;
  private storage: Storage | null;

  constructor(storage: Storage, shape: number[], dtype: DType) {
    if (numel(shape) !== storage.length) {
      throw new Error(`tensor of shape ${shapeStr(shape)} needs ${numel(shape)} elements, buffer has ${storage.length}`);
    }
    this.storage = storage;
    this.shape = shape.slice();
    this.dtype = dtype;
    storage.refs++;
    trackTensor(this);
  }

  get size(): number { return this.storage ? this.storage.length : 0; }
  get ndim(): number { return this.shape.length; }
  get disposed(): boolean { return this.storage === null; }
  get isLeaf(): boolean { return this.node === null; }

  /**
   * The float32 buffer for host code to read or write (throws for other dtypes or after
   * dispose). On an asynchronous backend this first waits for queued kernels.
   */
  get data(): Float32Array { hostSync(); return this.buf; }
  get ints(): Int32Array { hostSync(); return this.intBuf; }
  /** Raw 16-bit storage for bfloat16/float16 tensors (host access). */
  get halfBits(): Uint16Array { hostSync(); return this.halfBuf; }

  /**
   * The same buffers as kernel arguments: no wait, because kernels run in call order. Only
   * ops that hand the buffer to a backend kernel use these; host code uses data/ints/halfBits.
   */
  get buf(): Float32Array {
    const s = this.live();
    if (this.dtype !== 'float32') throw new TypeError(`tensor ${this.label()} is ${this.dtype}, expected float32`);
    return s.data as Float32Array;
  }

  get intBuf(): Int32Array {
    const s = this.live();
    if (this.dtype !== 'int32') throw new TypeError(`tensor ${this.label()} is ${this.dtype}, expected int32`);
    return s.data as Int32Array;
  }

  get halfBuf(): Uint16Array {
    const s = this.live();
    if (this.dtype !== 'bfloat16' && this.dtype !== 'float16') throw new TypeError(`tensor ${this.label()} is ${this.dtype}, expected a 16-bit dtype`);
    return s.data as Uint16Array;
  }

  /** Shares this tensor's buffer under a new shape (no copy, no grad link). */
  shareAs(shape: number[]): Tensor {
    return new Tensor(this.live(), shape, this.dtype);
  }

  private live(): Storage {
    if (!this.storage) throw new Error(`tensor ${this.label()} was disposed and cannot be used`);
    return this.storage;
  }

  label(): string { return `${this.name || '#' + this.id}${shapeStr(this.shape)}`; }

  item(): number {
    if (this.size !== 1) throw new Error(`item() needs a single element, tensor ${this.label()} has ${this.size}`);
    hostSync();
    const d = this.live().data;
    return this.dtype === 'float32' || this.dtype === 'int32' ? Number(d[0]) : this.toFloat32Array()[0];
  }

  /** A fresh JS copy of the values as float32. */
  toFloat32Array(): Float32Array {
    hostSync();
    const d = this.live().data;
    if (this.dtype === 'float32' || this.dtype === 'int32') return Float32Array.from(d as ArrayLike<number>);
    const out = new Float32Array(d.length);
    if (this.dtype === 'bfloat16') getBackend().bf16ToF32(d as Uint16Array, out);
    else halfToF32(d as Uint16Array, out);
    return out;
  }

  toArray(): number[] { return Array.from(this.toFloat32Array()); }

  /** A leaf that shares no graph with this tensor (same buffer). */
  detach(): Tensor { return this.shareAs(this.shape); }

  setRequiresGrad(v = true): this {
    if (v && this.dtype !== 'float32') throw new TypeError(`only float32 tensors can require grad (${this.label()} is ${this.dtype})`);
    this.requiresGrad = v;
    return this;
  }

  /** Releases the buffer now. Safe to call twice. */
  dispose(): void {
    if (!this.storage) return;
    this.storage.release();
    this.storage = null;
    this.node = null;
    if (this.grad) { this.grad.dispose(); this.grad = null; }
  }

  /** Reverse-mode autodiff from this tensor (a scalar unless a gradient is given). */
  backward(grad?: Tensor): void { backward(this, grad); }
}

export function halfToF32(x: Uint16Array, out: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    const h = x[i];
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    out[i] = e === 0 ? s * f * 2 ** -24 : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * 2 ** (e - 15);
  }
}

/** Makes a new tensor of the given shape (zero-filled unless fill=false). */
export function empty(shape: number[], dtype: DType = 'float32', zero = true): Tensor {
  return new Tensor(allocStorage(numel(shape), dtype, zero), shape, dtype);
}

/** Wraps an output buffer as an op result, linking it into the graph when needed. */
export function result(out: Tensor, name: string, inputs: (Tensor | null)[],
  backwardFn: (gy: Tensor) => (Tensor | null)[]): Tensor {
  if (gradEnabled && inputs.some((t) => t !== null && t.requiresGrad)) {
    out.requiresGrad = true;
    out.node = { name, inputs, backward: backwardFn };
  }
  return out;
}

function backward(root: Tensor, grad?: Tensor): void {
  if (!root.requiresGrad) throw new Error(`backward() on ${root.label()}, which does not require grad`);
  if (!grad && root.size !== 1) throw new Error(`backward() without a gradient needs a scalar, got ${root.label()}`);
  // Topological order by DFS over nodes (iterative: deep graphs must not blow the stack).
  const order: Tensor[] = [];
  const seen = new Set<number>();
  const stack: [Tensor, number][] = [[root, 0]];
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    if (i === 0) { if (seen.has(t.id)) { stack.pop(); continue; } seen.add(t.id); }
    const inputs = t.node ? t.node.inputs : [];
    if (i < inputs.length) {
      top[1]++;
      const inp = inputs[i];
      if (inp && inp.requiresGrad && !seen.has(inp.id)) stack.push([inp, 0]);
    } else {
      stack.pop();
      order.push(t);
    }
  }
  const grads = new Map<number, Tensor>();
  noGrad(() => {
    const g0 = grad ?? fillLike(root, 1);
    grads.set(root.id, g0);
    for (let k = order.length - 1; k >= 0; k--) {
      const t = order[k];
      const g = grads.get(t.id);
      if (!g) continue;
      grads.delete(t.id);
      if (!t.node) {
        // A leaf: accumulate into .grad, which outlives any scope.
        if (t.grad) { getBackend().axpy(1, g.buf, t.grad.buf); g.dispose(); }
        else { t.grad = g; keep(g); }
        continue;
      }
      const gin = t.node.backward(g);
      const node = t.node;
      t.node = null; // free the graph as we go (no retain_graph)
      t.graphFreed = true;
      if (g !== grad && !gin.includes(g)) g.dispose();
      const used = new Set<Tensor>();
      for (let j = 0; j < node.inputs.length; j++) {
        const inp = node.inputs[j];
        let gi = gin[j];
        // The same buffer handed to two inputs (x + x) must not be freed under the other.
        if (gi && used.has(gi)) gi = cloneTensor(gi);
        if (gi) used.add(gi);
        if (!inp || !gi || !inp.requiresGrad) { if (gi && gi !== g) gi.dispose(); continue; }
        if (gi.size !== inp.size) throw new Error(`internal: ${node.name} gave grad ${gi.label()} for input ${inp.label()}`);
        const prev = grads.get(inp.id);
        if (prev) { getBackend().axpy(1, gi.buf, prev.buf); gi.dispose(); }
        else grads.set(inp.id, gi.shape.length === inp.shape.length ? gi : gi.shareAs(inp.shape));
      }
    }
  });
}

function cloneTensor(t: Tensor): Tensor {
  const out = empty(t.shape, 'float32', false);
  copyInto(t, out);
  return out;
}

function fillLike(t: Tensor, v: number): Tensor {
  const out = empty(t.shape, 'float32', false);
  fillTensor(out, v);
  return out;
}

/** Sets every element of a float32 tensor to v, in stream order on asynchronous backends. */
export function fillTensor(t: Tensor, v: number): void {
  const b = getBackend();
  if (b.fill) b.fill(t.buf, v);
  else t.buf.fill(v);
}

/** Copies src's float32 values into dst (same size) with a backend kernel. */
export function copyInto(src: Tensor, dst: Tensor): void {
  if (src.size !== dst.size) throw new Error(`copyInto: ${src.label()} and ${dst.label()} differ in size`);
  getBackend().stridedCopy(src.buf, 0, [1], [src.size], dst.buf);
}

