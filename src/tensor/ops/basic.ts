// Creation, elementwise, reduction and shape ops, each forward beside its backward.
import type { BinaryOp, UnaryOp } from '../../backends/backend.js';
import { getBackend } from '../registry.js';
import { DType, Tensor, copyInto, empty, fillTensor, result } from '../tensor.js';
import { wrapStorage } from '../storage.js';
import { axis, broadcastShapes, broadcastStrides, numel, sameShape, shapeStr, stridesOf } from '../shape.js';
import { Rng, defaultRng } from '../random.js';

const B = () => getBackend();

// ---------- creation ----------

export interface TensorOptions { dtype?: DType; requiresGrad?: boolean; name?: string }

/**
 * Makes a tensor from values (copied) or a typed array (shared, never pooled; copied into
 * backend memory on a backend that has its own, such as cuda).
 */
export function tensor(values: ArrayLike<number> | Float32Array | Int32Array | Uint16Array,
  shape?: number[], opts: TensorOptions = {}): Tensor {
  const dtype = opts.dtype ?? (values instanceof Int32Array ? 'int32' : values instanceof Uint16Array ? 'bfloat16' : 'float32');
  const shp = shape ?? [values.length];
  let buf: Float32Array | Int32Array | Uint16Array;
  if (dtype === 'float32') buf = values instanceof Float32Array ? values : Float32Array.from(values as ArrayLike<number>);
  else if (dtype === 'int32') buf = values instanceof Int32Array ? values : Int32Array.from(values as ArrayLike<number>);
  else buf = values instanceof Uint16Array ? values : Uint16Array.from(values as ArrayLike<number>);
  if (numel(shp) !== buf.length) throw new Error(`tensor(): ${buf.length} values do not fill shape ${shapeStr(shp)}`);
  const t = new Tensor(wrapStorage(buf), shp, dtype);
  if (opts.requiresGrad) t.setRequiresGrad(true);
  if (opts.name) t.name = opts.name;
  return t;
}

export function zeros(shape: number[], dtype: DType = 'float32'): Tensor { return empty(shape, dtype, true); }

export function full(shape: number[], v: number): Tensor {
  const t = empty(shape, 'float32', false);
  fillTensor(t, v);
  return t;
}

export function ones(shape: number[]): Tensor { return full(shape, 1); }

export function randn(shape: number[], std = 1, rng: Rng = defaultRng()): Tensor {
  const t = empty(shape, 'float32', false);
  const d = t.data;
  for (let i = 0; i < d.length; i++) d[i] = rng.normal() * std;
  return t;
}

export function rand(shape: number[], lo = 0, hi = 1, rng: Rng = defaultRng()): Tensor {
  const t = empty(shape, 'float32', false);
  const d = t.data;
  for (let i = 0; i < d.length; i++) d[i] = lo + (hi - lo) * rng.next();
  return t;
}

export function arange(n: number): Tensor {
  const t = empty([n], 'int32', false);
  for (let i = 0; i < n; i++) t.ints[i] = i;
  return t;
}

/** A float32 copy of any tensor (bf16/f16/int32 converted). No grad link. */
export function toFloat32(x: Tensor): Tensor {
  if (x.dtype === 'float32') return x;
  const out = empty(x.shape, 'float32', false);
  if (x.dtype === 'bfloat16') B().bf16ToF32(x.halfBuf, out.buf);
  else out.data.set(x.toFloat32Array());
  return out;
}

export function toBfloat16(x: Tensor): Tensor {
  const out = empty(x.shape, 'bfloat16', false);
  B().f32ToBf16(x.buf, out.halfBuf);
  return out;
}

export function clone(x: Tensor): Tensor {
  const out = empty(x.shape, 'float32', false);
  copyInto(x, out);
  return result(out, 'clone', [x], (g) => [g]);
}

// ---------- elementwise ----------

/** Sums a broadcast gradient back down to `shape`. */
export function sumToShape(g: Tensor, shape: number[]): Tensor {
  if (sameShape(g.shape, shape)) return g;
  const off = g.ndim - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.ndim; i++) if (i < off || (shape[i - off] === 1 && g.shape[i] !== 1)) axes.push(i);
  const r = sum(g, axes, false);
  return reshape(r, shape); // keeps the graph when used in a forward pass
}

function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const outShape = broadcastShapes(a.shape, b.shape);
  const out = empty(outShape, 'float32', false);
  B().binary(op, a.buf, broadcastStrides(a.shape, outShape), b.buf, broadcastStrides(b.shape, outShape), out.buf, outShape);
  return out;
}

export function add(a: Tensor, b: Tensor): Tensor {
  return result(binary('add', a, b), 'add', [a, b], (g) => [
    a.requiresGrad ? sumToShape(g, a.shape) : null,
    b.requiresGrad ? sumToShape(g, b.shape) : null,
  ]);
}

export function sub(a: Tensor, b: Tensor): Tensor {
  return result(binary('sub', a, b), 'sub', [a, b], (g) => [
    a.requiresGrad ? sumToShape(g, a.shape) : null,
    b.requiresGrad ? sumToShape(neg(g), b.shape) : null,
  ]);
}

export function mul(a: Tensor, b: Tensor): Tensor {
  return result(binary('mul', a, b), 'mul', [a, b], (g) => [
    a.requiresGrad ? sumToShape(binary('mul', g, b), a.shape) : null,
    b.requiresGrad ? sumToShape(binary('mul', g, a), b.shape) : null,
  ]);
}

export function div(a: Tensor, b: Tensor): Tensor {
  const out = binary('div', a, b);
  return result(out, 'div', [a, b], (g) => [
    a.requiresGrad ? sumToShape(binary('div', g, b), a.shape) : null,
    // d(a/b)/db = -out / b
    b.requiresGrad ? sumToShape(neg(binary('div', binary('mul', g, out), b)), b.shape) : null,
  ]);
}

/** Elementwise max (gradient to the larger; ties to a). */
export function maximum(a: Tensor, b: Tensor): Tensor {
  const out = binary('max', a, b);
  return result(out, 'maximum', [a, b], (g) => {
    const diff = binary('sub', a, b);
    const ma = empty(diff.shape, 'float32', false);
    const d = diff.data, m = ma.data;
    for (let i = 0; i < d.length; i++) m[i] = d[i] >= 0 ? 1 : 0;
    return [a.requiresGrad ? sumToShape(binary('mul', g, ma), a.shape) : null,
      b.requiresGrad ? sumToShape(binary('mul', g, affine(ma, -1, 1)), b.shape) : null];
  });
}

export function unary(op: UnaryOp, x: Tensor): Tensor {
  const out = empty(x.shape, 'float32', false);
  B().unary(op, x.buf, out.buf);
  return result(out, op, [x], (g) => {
    const gx = empty(x.shape, 'float32', false);
    B().unaryBackward(op, x.buf, g.buf, gx.buf);
    return [gx];
  });
}

export const neg = (x: Tensor) => unary('neg', x);
export const exp = (x: Tensor) => unary('exp', x);
export const log = (x: Tensor) => unary('log', x);
export const sqrt = (x: Tensor) => unary('sqrt', x);
export const rsqrt = (x: Tensor) => unary('rsqrt', x);
export const tanh = (x: Tensor) => unary('tanh', x);
export const relu = (x: Tensor) => unary('relu', x);
export const sigmoid = (x: Tensor) => unary('sigmoid', x);
export const silu = (x: Tensor) => unary('silu', x);
export const square = (x: Tensor) => unary('square', x);
export const abs = (x: Tensor) => unary('abs', x);
/** GELU: exact (erf) form by default, tanh approximation with approximate='tanh'. */
export const gelu = (x: Tensor, approximate: 'none' | 'tanh' = 'none') => unary(approximate === 'tanh' ? 'gelu_tanh' : 'gelu', x);

/** x * s + t */
export function affine(x: Tensor, s: number, t = 0): Tensor {
  const out = empty(x.shape, 'float32', false);
  B().affine(x.buf, s, t, out.buf);
  return result(out, 'affine', [x], (g) => [affine(g, s, 0)]);
}

export const mulScalar = (x: Tensor, s: number) => affine(x, s, 0);
export const addScalar = (x: Tensor, t: number) => affine(x, 1, t);

export function powScalar(x: Tensor, p: number): Tensor {
  const out = binary('pow', x, full([1], p));
  return result(out, 'pow', [x], (g) => [binary('mul', g, affine(binary('pow', x, full([1], p - 1)), p, 0))]);
}

// ---------- reductions ----------

/** Sum over axes (all axes when omitted). */
export function sum(x: Tensor, axes?: number | number[], keepDim = false): Tensor {
  const nd = x.ndim;
  const ax = axes === undefined ? [...Array(nd).keys()] : (Array.isArray(axes) ? axes : [axes]).map((a) => axis(a, nd));
  const red = new Set(ax);
  const keptShape = x.shape.map((s, i) => (red.has(i) ? 1 : s));
  const outShape = keepDim ? keptShape : x.shape.filter((_, i) => !red.has(i));
  // Reduce one axis at a time as [outer, mid, inner]; consecutive reductions stay cheap.
  let cur: Tensor | null = null;
  let curShape = x.shape.slice();
  for (const a of [...red].sort((p, q) => q - p)) {
    const outer = numel(curShape.slice(0, a)), mid = curShape[a], inner = numel(curShape.slice(a + 1));
    const next = empty([outer * inner], 'float32', false);
    B().sumMid((cur ?? x).buf, outer, mid, inner, next.buf);
    cur?.dispose();
    cur = next;
    curShape[a] = 1;
  }
  const out = cur ? cur.shareAs(outShape) : empty(outShape, 'float32', false);
  if (cur) cur.dispose(); else copyInto(x, out);
  return result(out, 'sum', [x], (g) => [expandTo(g.shareAs(keptShape), x.shape)]);
}

export function mean(x: Tensor, axes?: number | number[], keepDim = false): Tensor {
  const s = sum(x, axes, keepDim);
  return affine(s, s.size / x.size, 0);
}

/** Max over one axis (no gradient: used for masking and argmax-like work). */
export function maxAxis(x: Tensor, a: number, keepDim = false): Tensor {
  const ax = axis(a, x.ndim);
  const outer = numel(x.shape.slice(0, ax)), mid = x.shape[ax], inner = numel(x.shape.slice(ax + 1));
  const outShape = keepDim ? x.shape.map((s, i) => (i === ax ? 1 : s)) : x.shape.filter((_, i) => i !== ax);
  const out = empty(outShape, 'float32', false);
  B().maxMid(x.buf, outer, mid, inner, out.buf);
  return out;
}

// ---------- shape ----------

export function reshape(x: Tensor, shape: number[]): Tensor {
  const n = x.size;
  const neg1 = shape.indexOf(-1);
  const s = shape.slice();
  if (neg1 >= 0) s[neg1] = n / numel(shape.filter((v) => v !== -1));
  if (numel(s) !== n || !Number.isInteger(s[neg1] ?? 0)) throw new Error(`cannot reshape ${shapeStr(x.shape)} to ${shapeStr(shape)}`);
  const out = x.shareAs(s);
  return result(out, 'reshape', [x], (g) => [g.shareAs(x.shape)]);
}

export function permute(x: Tensor, perm: number[]): Tensor {
  if (perm.length !== x.ndim) throw new Error(`permute needs ${x.ndim} axes, got ${perm.length}`);
  const p = perm.map((a) => axis(a, x.ndim));
  if (p.every((v, i) => v === i)) return x;
  // Moving only size-1 axes ([B, 1, H, D] -> [B, H, 1, D] when decoding one token) keeps the
  // memory order: a view, no copy.
  const moved = p.filter((a) => x.shape[a] !== 1);
  if (moved.every((v, i) => i === 0 || v > moved[i - 1])) return reshape(x, p.map((a) => x.shape[a]));
  if (x.dtype === 'int32') return permuteInts(x, p);
  const out = empty(p.map((a) => x.shape[a]), 'float32', false);
  B().permute(x.buf, x.shape, p, out.buf);
  const inv = new Array<number>(p.length);
  p.forEach((v, i) => { inv[v] = i; });
  return result(out, 'permute', [x], (g) => [permute(g, inv)]);
}

export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  const p = [...Array(x.ndim).keys()];
  const i = axis(a, x.ndim), j = axis(b, x.ndim);
  [p[i], p[j]] = [p[j], p[i]];
  return permute(x, p);
}

export function unsqueeze(x: Tensor, a: number): Tensor {
  const ax = a < 0 ? a + x.ndim + 1 : a;
  const s = x.shape.slice();
  s.splice(ax, 0, 1);
  return reshape(x, s);
}

export function squeeze(x: Tensor, a: number): Tensor {
  const ax = axis(a, x.ndim);
  if (x.shape[ax] !== 1) throw new Error(`squeeze: axis ${a} of ${shapeStr(x.shape)} is not 1`);
  return reshape(x, x.shape.filter((_, i) => i !== ax));
}

/** Materialises x broadcast to shape. */
export function expandTo(x: Tensor, shape: number[]): Tensor {
  if (sameShape(x.shape, shape)) return x;
  const out = empty(shape, 'float32', false);
  B().stridedCopy(x.buf, 0, broadcastStrides(x.shape, shape), shape, out.buf);
  return result(out, 'expand', [x], (g) => [sumToShape(g, x.shape)]);
}

/** x[..., start:end, ...] along one axis (copy). */
export function slice(x: Tensor, a: number, start: number, end: number): Tensor {
  const ax = axis(a, x.ndim);
  const n = x.shape[ax];
  const s = Math.max(0, start < 0 ? start + n : start), e = Math.min(n, end < 0 ? end + n : end);
  if (e < s) throw new Error(`slice [${start}:${end}] empty or reversed on axis ${a} of ${shapeStr(x.shape)}`);
  const outShape = x.shape.slice();
  outShape[ax] = e - s;
  const st = stridesOf(x.shape);
  const offset = s * st[ax];
  if (x.dtype === 'int32') return copyIntsStrided(x.ints, offset, st, outShape);
  const out = empty(outShape, 'float32', false);
  B().stridedCopy(x.buf, offset, st, outShape, out.buf);
  return result(out, 'slice', [x], (g) => {
    const gx = zeros(x.shape);
    B().stridedAdd(g.buf, outShape, gx.buf, offset, st);
    return [gx];
  });
}

/** Concatenate along an axis. */
export function concat(xs: Tensor[], a = 0): Tensor {
  if (xs.length === 0) throw new Error('concat of nothing');
  const ax = axis(a, xs[0].ndim);
  const outShape = xs[0].shape.slice();
  outShape[ax] = xs.reduce((s, t) => s + t.shape[ax], 0);
  for (const t of xs) {
    if (t.ndim !== outShape.length || t.shape.some((v, i) => i !== ax && v !== outShape[i])) {
      throw new Error(`concat: ${shapeStr(t.shape)} does not match ${shapeStr(xs[0].shape)} off axis ${a}`);
    }
  }
  const out = zeros(outShape);
  const st = stridesOf(outShape);
  const offsets: number[] = [];
  let pos = 0;
  for (const t of xs) {
    offsets.push(pos * st[ax]);
    B().stridedAdd(t.buf, t.shape, out.buf, pos * st[ax], st);
    pos += t.shape[ax];
  }
  return result(out, 'concat', xs, (g) => xs.map((t, i) => {
    if (!t.requiresGrad) return null;
    const gt = empty(t.shape, 'float32', false);
    B().stridedCopy(g.buf, offsets[i], st, t.shape, gt.buf);
    return gt;
  }));
}

export function stack(xs: Tensor[], a = 0): Tensor {
  return concat(xs.map((t) => unsqueeze(t, a)), a);
}

/** Splits along an axis into pieces of the given sizes. */
export function split(x: Tensor, sizes: number[], a = -1): Tensor[] {
  let start = 0;
  return sizes.map((s) => { const t = slice(x, a, start, start + s); start += s; return t; });
}

// Integer tensors (ids, masks, labels) are sliced and permuted in plain loops: they are
// small, carry no gradient, and must not pass through float kernels (bit patterns of
// negative ints are NaNs in float32).
function copyIntsStrided(src: Int32Array, offset: number, strides: number[], outShape: number[]): Tensor {
  const out = empty(outShape, 'int32', false);
  const o = out.ints, nd = outShape.length;
  const idx = new Array<number>(nd).fill(0);
  let off = offset;
  for (let i = 0; i < o.length; i++) {
    o[i] = src[off];
    for (let d = nd - 1; d >= 0; d--) {
      idx[d]++; off += strides[d];
      if (idx[d] < outShape[d]) break;
      off -= strides[d] * outShape[d]; idx[d] = 0;
    }
  }
  return out;
}

function permuteInts(x: Tensor, p: number[]): Tensor {
  const st = stridesOf(x.shape);
  return copyIntsStrided(x.ints, 0, p.map((a) => st[a]), p.map((a) => x.shape[a]));
}
