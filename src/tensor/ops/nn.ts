// Neural-network ops: matmul, linear, normalisation, softmax, losses, embedding, rotary
// embedding, dropout and attention. Forward and backward side by side.
import { getBackend } from '../registry.js';
import { Tensor, empty, fillTensor, result } from '../tensor.js';
import { broadcastShapes, broadcastStrides, numel, sameShape, shapeStr } from '../shape.js';
import { Rng, defaultRng } from '../random.js';
import { add, affine, expandTo, full, mul, reshape, sub, sum, sumToShape, zeros } from './basic.js';
import { autocastDtype, matmulAutocast, roundedCopy } from '../autocast.js';

const B = () => getBackend();

// ---------- matmul ----------

/** mixed: autocast's bf16 operands (the flag the op saw in its forward). */
function gemm(a: Float32Array, b: Float32Array, c: Float32Array, batch: number, m: number, n: number, k: number,
  tA: boolean, tB: boolean, sA: number, sB: number, beta = 0, mixed = false, alpha = 1): void {
  if (mixed) matmulAutocast(B(), a, b, c, batch, m, n, k, tA, tB, sA, sB, alpha, beta);
  else B().matmul(a, b, c, batch, m, n, k, tA, tB, sA, sB, alpha, beta);
}

/**
 * Batched matmul of [..., m, k] @ [..., k, n] (transA/transB read the last two dims of
 * a or b transposed). Batch dims broadcast; a 2-D b is shared by every batch. alpha scales
 * the product inside the GEMM (and its gradients), e.g. LoRA's scaling without a pass of its own.
 */
export function matmul(a: Tensor, b: Tensor, transA = false, transB = false, alpha = 1): Tensor {
  if (b.dtype === 'bfloat16' && !transA && a.dtype === 'float32') {
    if (alpha !== 1) throw new Error('matmul: alpha is not supported with a bfloat16 operand');
    return matmulBf16(a, b, transB);
  }
  for (const t of [a, b]) if (t.dtype !== 'float32') throw new TypeError(`matmul: ${t.label()} is ${t.dtype}; only a frozen bfloat16 right operand is supported (else use toFloat32)`);
  if (a.ndim < 2 || b.ndim < 2) throw new Error(`matmul needs 2+ dims, got ${shapeStr(a.shape)} and ${shapeStr(b.shape)}`);
  const [am, ak] = transA ? [a.shape[a.ndim - 1], a.shape[a.ndim - 2]] : [a.shape[a.ndim - 2], a.shape[a.ndim - 1]];
  const [bk, bn] = transB ? [b.shape[b.ndim - 1], b.shape[b.ndim - 2]] : [b.shape[b.ndim - 2], b.shape[b.ndim - 1]];
  if (ak !== bk) throw new Error(`matmul: inner dims differ, ${shapeStr(a.shape)}${transA ? 'ᵀ' : ''} @ ${shapeStr(b.shape)}${transB ? 'ᵀ' : ''}`);
  // Shared 2-D right operand: fold the batch into m for one large GEMM.
  if (b.ndim === 2 && !transA && a.ndim > 2) {
    const lead = a.shape.slice(0, -1);
    const a2 = reshape(a, [numel(lead), ak]);
    const y = matmul(a2, b, false, transB, alpha);
    return reshape(y, [...lead, bn]);
  }
  const ba = a.shape.slice(0, -2), bb = b.shape.slice(0, -2);
  const nb = Math.max(ba.length, bb.length);
  const batchShape: number[] = [];
  for (let i = 0; i < nb; i++) {
    const x = ba[ba.length - nb + i] ?? 1, y = bb[bb.length - nb + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`matmul: batch dims ${shapeStr(ba)} and ${shapeStr(bb)} do not broadcast`);
    batchShape.push(Math.max(x, y));
  }
  const batch = numel(batchShape);
  // Operands whose batch differs from the full one are broadcast: stride 0 when they have
  // no batch at all, else materialised.
  const prep = (t: Tensor, own: number[]): [Tensor, number] => {
    const n = numel(own);
    if (n === batch && own.length === batchShape.length) return [t, t.shape[t.ndim - 1] * t.shape[t.ndim - 2]];
    if (n === 1) return [t, 0];
    return [expandTo(t, [...batchShape, ...t.shape.slice(-2)]), t.shape[t.ndim - 1] * t.shape[t.ndim - 2]];
  };
  const [ae, sA] = prep(a, ba);
  const [be, sB] = prep(b, bb);
  const out = empty([...batchShape, am, bn], 'float32', false);
  const mx = autocastDtype() === 'bfloat16';
  gemm(ae.buf, be.buf, out.buf, batch, am, bn, ak, transA, transB, sA, sB, 0, mx, alpha);
  return result(out, 'matmul', [ae, be], (g) => {
    let ga: Tensor | null = null, gb: Tensor | null = null;
    if (ae.requiresGrad) {
      // d op(A) = g @ op(B)^T ; when transA, A = (d op(A))^T = op(B) @ g^T
      ga = empty(sA === 0 ? ae.shape : [...batchShape, ...ae.shape.slice(-2)], 'float32', false);
      if (sA === 0) {
        // shared A: sum over batch of per-batch grads
        fillTensor(ga, 0);
        for (let i = 0; i < batch; i++) {
          const gi = g.buf.subarray(i * am * bn, (i + 1) * am * bn), bi = be.buf.subarray(i * sB, i * sB + bk * bn);
          if (!transA) gemm(gi, bi, ga.buf, 1, am, ak, bn, false, !transB, 0, 0, 1, mx, alpha);
          else gemm(bi, gi, ga.buf, 1, ak, am, bn, transB, true, 0, 0, 1, mx, alpha);
        }
      } else if (!transA) gemm(g.buf, be.buf, ga.buf, batch, am, ak, bn, false, !transB, am * bn, sB, 0, mx, alpha);
      else gemm(be.buf, g.buf, ga.buf, batch, ak, am, bn, transB, true, sB, am * bn, 0, mx, alpha);
    }
    if (be.requiresGrad) {
      // d op(B) = op(A)^T @ g ; when transB, B = g^T @ op(A)
      gb = empty(sB === 0 ? be.shape : [...batchShape, ...be.shape.slice(-2)], 'float32', false);
      if (sB === 0) {
        fillTensor(gb, 0);
        for (let i = 0; i < batch; i++) {
          const gi = g.buf.subarray(i * am * bn, (i + 1) * am * bn), ai = ae.buf.subarray(i * sA, i * sA + am * ak);
          if (!transB) gemm(ai, gi, gb.buf, 1, ak, bn, am, !transA, false, 0, 0, 1, mx, alpha);
          else gemm(gi, ai, gb.buf, 1, bn, ak, am, true, transA, 0, 0, 1, mx, alpha);
        }
      } else if (!transB) gemm(ae.buf, g.buf, gb.buf, batch, ak, bn, am, !transA, false, sA, am * bn, 0, mx, alpha);
      else gemm(g.buf, ae.buf, gb.buf, batch, bn, ak, am, true, transA, am * bn, sA, 0, mx, alpha);
    }
    return [ga, gb];
  });
}

/**
 * y = alpha * x @ W^T + b, W stored [out, in] as in torch.nn.Linear (float32, or a frozen
 * bfloat16 W with alpha 1).
 */
export function linear(x: Tensor, w: Tensor, b: Tensor | null = null, alpha = 1): Tensor {
  if (w.dtype === 'bfloat16' && alpha !== 1) throw new Error('linear: alpha is not supported with a bfloat16 weight');
  const y = w.dtype === 'bfloat16' ? matmulBf16(x, w, true) : matmul(x, w, false, true, alpha);
  return b ? add(y, b) : y;
}

// ---------- frozen bfloat16 weights ----------

function frozenBf16(w: Tensor, op: string): void {
  if (w.dtype !== 'bfloat16') throw new TypeError(`${op}: ${w.label()} is ${w.dtype}, expected bfloat16`);
  if (w.requiresGrad) {
    throw new Error(`${op}: bfloat16 weight ${w.label()} requires grad, but bf16 weights are frozen storage: ` +
      'train float32 parameters (LoRA adapters), or convert the weight with toFloat32 first');
  }
}

/**
 * x [..., k] times a frozen bfloat16 matrix w, used as stored (never copied to float32 as a
 * whole): transW ? x @ w^T (w [n, k], Linear) : x @ w (w [k, n], Conv1D). Float32 output and
 * accumulation. The backward gives x its gradient only; w cannot require grad.
 */
export function matmulBf16(x: Tensor, w: Tensor, transW: boolean): Tensor {
  frozenBf16(w, 'matmulBf16');
  if (w.ndim !== 2) throw new Error(`matmulBf16: the bfloat16 operand must be 2-D, got ${w.label()}`);
  const [n, k] = transW ? w.shape : [w.shape[1], w.shape[0]];
  if (x.shape[x.ndim - 1] !== k) throw new Error(`matmulBf16: ${x.label()} does not match ${w.label()}${transW ? 'ᵀ' : ''}`);
  const m = x.size / k;
  const out = empty([...x.shape.slice(0, -1), n], 'float32', false);
  // Under autocast the activation is rounded to bf16 too (W already is).
  const mx = autocastDtype() === 'bfloat16';
  gemmBf16(x, w, out, m, n, k, transW, mx);
  return result(out, 'matmulBf16', [x], (g) => {
    // gx = g @ op(W)^T: the same kernel with the other layout flag, n and k swapped.
    const gx = empty(x.shape, 'float32', false);
    gemmBf16(g, w, gx, m, k, n, !transW, mx);
    return [gx];
  });
}

/** Elements of W widened per tile when the backend has no matmulBf16 (4 MiB of float32). */
let bf16TileElems = 1 << 20;
/** Sets the fallback's tile size (tests force several tiles); returns the previous one. */
export function setBf16FallbackTileElements(n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new Error(`tile size must be a positive integer, got ${n}`);
  const prev = bf16TileElems; bf16TileElems = n; return prev;
}

/** c[m,n] = a[m,k] @ op(W) (overwritten), W bf16: the backend kernel, else widened tiles. */
function gemmBf16(a: Tensor, w: Tensor, c: Tensor, m: number, n: number, k: number, transB: boolean, roundA = false): void {
  const be = B();
  if (be.matmulBf16) { be.matmulBf16(a.buf, w.halfBuf, c.buf, m, n, k, transB, 1, 0, roundA); return; }
  if (roundA) {
    const ra = roundedCopy(be, a.buf, m * k);
    gemmBf16(ra, w, c, m, n, k, transB);
    ra.dispose();
    return;
  }
  // Fallback with contract kernels only: W's rows are widened a tile at a time into a pooled
  // buffer (stream order keeps this right on device backends). transB: a tile of rows of W
  // [n,k] gives columns of c, added into their place; else a tile of rows of W [k,n] is a
  // slice of the inner dim: c += a[:, p0:p1] @ W[p0:p1, :].
  const rowLen = transB ? k : n, rowsW = transB ? n : k;
  const R = Math.max(1, Math.min(rowsW, Math.floor(bf16TileElems / Math.max(rowLen, 1))));
  const wf = empty([R, rowLen], 'float32', false);
  const part = empty([m, R], 'float32', false);
  if (transB || rowsW === 0) fillTensor(c, 0);
  for (let r0 = 0; r0 < rowsW; r0 += R) {
    const rows = Math.min(R, rowsW - r0);
    const wt = wf.buf.subarray(0, rows * rowLen);
    be.bf16ToF32(w.halfBuf.subarray(r0 * rowLen, (r0 + rows) * rowLen), wt);
    const pt = part.buf.subarray(0, m * rows);
    if (transB) {
      be.matmul(a.buf, wt, pt, 1, m, rows, k, false, true, 0, 0, 1, 0);
      be.stridedAdd(pt, [m, rows], c.buf, r0, [n, 1]);
    } else {
      be.stridedCopy(a.buf, r0, [k, 1], [m, rows], pt);
      be.matmul(pt, wt, c.buf, 1, m, n, rows, false, false, 0, 0, 1, r0 === 0 ? 0 : 1);
    }
  }
  wf.dispose(); part.dispose();
}

// ---------- softmax family ----------

function rowsCols(x: Tensor): [number, number] {
  const cols = x.shape[x.ndim - 1];
  return [x.size / cols, cols];
}

/** Softmax over the last axis. */
export function softmax(x: Tensor): Tensor {
  const [rows, cols] = rowsCols(x);
  const out = empty(x.shape, 'float32', false);
  B().softmax(x.buf, rows, cols, out.buf);
  return result(out, 'softmax', [x], (g) => {
    const gx = empty(x.shape, 'float32', false);
    B().softmaxBackward(out.buf, g.buf, rows, cols, gx.buf);
    return [gx];
  });
}

export function logSoftmax(x: Tensor): Tensor {
  const [rows, cols] = rowsCols(x);
  const out = empty(x.shape, 'float32', false);
  B().logSoftmax(x.buf, rows, cols, out.buf);
  return result(out, 'logSoftmax', [x], (g) => {
    const gx = empty(x.shape, 'float32', false);
    B().logSoftmaxBackward(out.buf, g.buf, rows, cols, gx.buf);
    return [gx];
  });
}

/**
 * Cross-entropy of logits [..., V] against int32 targets [...]; rows whose target equals
 * ignoreIndex (-100, as in torch) are skipped. 'mean' divides by the non-ignored count.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, opts: { ignoreIndex?: number; reduction?: 'mean' | 'sum' | 'none' } = {}): Tensor {
  const ignoreIndex = opts.ignoreIndex ?? -100, reduction = opts.reduction ?? 'mean';
  const [rows, cols] = rowsCols(logits);
  if (targets.size !== rows) throw new Error(`crossEntropy: ${rows} rows of logits but ${targets.size} targets`);
  const loss = empty([rows], 'float32', false);
  const lse = empty([rows], 'float32', false);
  const count = B().crossEntropy(logits.buf, targets.intBuf, rows, cols, ignoreIndex, loss.buf, lse.buf);
  const back = (gRow: Float32Array): Tensor[] => {
    const gx = empty(logits.shape, 'float32', false);
    B().crossEntropyBackward(logits.buf, targets.intBuf, lse.buf, gRow, rows, cols, ignoreIndex, gx.buf);
    return [gx];
  };
  if (reduction === 'none') return result(loss.shareAs(targets.shape), 'crossEntropy', [logits], (g) => back(g.buf));
  // Reduce with kernels (no host read of the per-row losses on an asynchronous backend).
  const denom = reduction === 'mean' ? count : 1;
  const out = empty([], 'float32', false);
  B().sumMid(loss.buf, 1, rows, 1, out.buf);
  // All rows ignored: torch gives nan for 'mean'; we do the same so it cannot pass silently.
  if (reduction === 'mean') B().affine(out.buf, count === 0 ? NaN : 1 / denom, 0, out.buf);
  loss.dispose();
  return result(out, 'crossEntropy', [logits], (g) => {
    const gRow = empty([rows], 'float32', false);
    if (count === 0) fillTensor(gRow, 0);
    else { // gRow[r] = g / denom: broadcast the scalar with a stride-0 copy, then scale
      B().stridedCopy(g.buf, 0, [0], [rows], gRow.buf);
      if (denom !== 1) B().affine(gRow.buf, 1 / denom, 0, gRow.buf);
    }
    const r = back(gRow.buf);
    gRow.dispose();
    return r;
  });
}

// ---------- normalisation ----------

export function layerNorm(x: Tensor, w: Tensor | null, b: Tensor | null, eps = 1e-5): Tensor {
  const [rows, cols] = rowsCols(x);
  const out = empty(x.shape, 'float32', false);
  const meanT = empty([rows], 'float32', false), rstdT = empty([rows], 'float32', false);
  B().layerNorm(x.buf, w ? w.buf : null, b ? b.buf : null, rows, cols, eps, out.buf, meanT.buf, rstdT.buf);
  return result(out, 'layerNorm', [x, w, b], (g) => {
    const gx = empty(x.shape, 'float32', false);
    const gw = w && w.requiresGrad ? zeros(w.shape) : null;
    const gb = b && b.requiresGrad ? zeros(b.shape) : null;
    B().layerNormBackward(x.buf, w ? w.buf : null, meanT.buf, rstdT.buf, g.buf, rows, cols, gx.buf, gw ? gw.buf : null, gb ? gb.buf : null);
    return [gx, gw, gb];
  });
}

export function rmsNorm(x: Tensor, w: Tensor | null, eps = 1e-6): Tensor {
  const [rows, cols] = rowsCols(x);
  const out = empty(x.shape, 'float32', false);
  const rstdT = empty([rows], 'float32', false);
  B().rmsNorm(x.buf, w ? w.buf : null, rows, cols, eps, out.buf, rstdT.buf);
  return result(out, 'rmsNorm', [x, w], (g) => {
    const gx = empty(x.shape, 'float32', false);
    const gw = w && w.requiresGrad ? zeros(w.shape) : null;
    B().rmsNormBackward(x.buf, w ? w.buf : null, rstdT.buf, g.buf, rows, cols, gx.buf, gw ? gw.buf : null);
    return [gx, gw];
  });
}

// ---------- embedding ----------

/** Rows of table [V, D] picked by int32 ids of any shape -> [...ids.shape, D]. */
export function embedding(table: Tensor, ids: Tensor): Tensor {
  const dim = table.shape[1];
  const out = empty([...ids.shape, dim], 'float32', false);
  if (table.dtype === 'bfloat16') {
    // A frozen bf16 table: rows widened as they are gathered, no gradient.
    frozenBf16(table, 'embedding');
    const be = B();
    if (be.embeddingBf16) be.embeddingBf16(table.halfBuf, ids.intBuf, dim, out.buf);
    else {
      const idv = ids.ints, rows = table.shape[0];
      for (let i = 0; i < idv.length; i++) {
        const id = idv[i];
        if (id < 0 || id >= rows) throw new RangeError(`embedding id ${id} out of range [0, ${rows}) at position ${i}`);
        be.bf16ToF32(table.halfBuf.subarray(id * dim, (id + 1) * dim), out.buf.subarray(i * dim, (i + 1) * dim));
      }
    }
    return out;
  }
  B().embedding(table.buf, ids.intBuf, dim, out.buf);
  return result(out, 'embedding', [table], (g) => {
    const gt = zeros(table.shape);
    B().embeddingBackward(g.buf, ids.intBuf, dim, gt.buf);
    return [gt];
  });
}

/** x[ids] along axis 0 (ids int32 1-D): index_select. */
export function indexSelect(x: Tensor, ids: Tensor): Tensor {
  const inner = x.size / x.shape[0];
  const t2 = reshape(x, [x.shape[0], inner]);
  const y = embedding(t2, ids);
  return reshape(y, [ids.size, ...x.shape.slice(1)]);
}

// ---------- dropout ----------

/** Inverted dropout: zero with probability p, scale the rest by 1/(1-p). */
export function dropout(x: Tensor, p: number, training: boolean, rng: Rng = defaultRng()): Tensor {
  if (!training || p === 0) return x;
  if (p < 0 || p >= 1) throw new RangeError(`dropout p must be in [0, 1), got ${p}`);
  // One draw from the Rng seeds a counter-based mask, so a device backend makes it in place.
  const seed = rng.nextU32(), be = B();
  if (be.dropoutApply) {
    // x * mask in one pass; the backward makes the same mask again from the seed, so no
    // mask is kept for it (336 MB a step for Llama-1B's LoRA inputs at B1 x T256).
    const out = empty(x.shape, 'float32', false);
    be.dropoutApply(x.buf, out.buf, p, seed);
    return result(out, 'dropout', [x], (g) => {
      const gx = empty(x.shape, 'float32', false);
      B().dropoutApply!(g.buf, gx.buf, p, seed);
      return [gx];
    });
  }
  const mask = empty(x.shape, 'float32', false);
  be.dropoutMask(mask.buf, p, seed);
  return mul(x, mask);
}

// ---------- rotary embedding ----------

/** cos/sin tables [maxPos, dim/2] for RoPE with the given inverse frequencies. */
export function ropeTables(invFreq: Float64Array | number[], maxPos: number, attentionScaling = 1): { cos: Tensor; sin: Tensor } {
  const half = invFreq.length;
  const cos = empty([maxPos, half], 'float32', false), sin = empty([maxPos, half], 'float32', false);
  for (let p = 0; p < maxPos; p++) {
    for (let i = 0; i < half; i++) {
      // HF computes the angle in float32: (inv_freq.float() @ position.float())
      const ang = Math.fround(Math.fround(invFreq[i]) * p);
      cos.data[p * half + i] = Math.cos(ang) * attentionScaling;
      sin.data[p * half + i] = Math.sin(ang) * attentionScaling;
    }
  }
  return { cos, sin };
}

/** Applies RoPE to x [B, H, T, D] at positions pos (int32, [T] or [B*T]). */
export function rope(x: Tensor, cos: Tensor, sin: Tensor, pos: Tensor): Tensor {
  const [b, h, t, d] = x.shape;
  if (x.ndim !== 4 || d !== cos.shape[1] * 2) throw new Error(`rope: x ${shapeStr(x.shape)} does not match tables ${shapeStr(cos.shape)}`);
  const out = empty(x.shape, 'float32', false);
  B().rope(x.buf, cos.buf, sin.buf, pos.intBuf, b, h, t, d, false, out.buf);
  return result(out, 'rope', [x], (g) => {
    const gx = empty(x.shape, 'float32', false);
    B().rope(g.buf, cos.buf, sin.buf, pos.intBuf, b, h, t, d, true, gx.buf);
    return [gx];
  });
}

// ---------- masks and attention ----------

export const NEG_INF = -Infinity;

/** Additive causal mask [1, 1, T, S]: query i (at position offset+i) sees keys <= offset+i. */
export function causalMask(t: number, s: number, offset = s - t): Tensor {
  const m = empty([1, 1, t, s], 'float32', false);
  for (let i = 0; i < t; i++) for (let j = 0; j < s; j++) m.data[i * s + j] = j <= offset + i ? 0 : NEG_INF;
  return m;
}

/** Additive padding mask [B, 1, 1, S] from an attention mask [B, S] of 1 (keep) / 0 (pad). */
export function paddingMask(attentionMask: Tensor): Tensor {
  const [b, s] = attentionMask.shape;
  const m = empty([b, 1, 1, s], 'float32', false);
  const src = attentionMask.dtype === 'int32' ? attentionMask.ints : attentionMask.data;
  for (let i = 0; i < b * s; i++) m.data[i] = src[i] ? 0 : NEG_INF;
  return m;
}

/** where(cond, a, b) with cond a 0/1 float tensor; all three broadcast. */
export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  return add(mul(cond, a), mul(affine(cond, -1, 1), b));
}

/** x with `value` where mask is 1 (mask 0/1 float, broadcast to x). */
export function maskedFill(x: Tensor, mask: Tensor, value: number): Tensor {
  const keepM = affine(mask, -1, 1);
  return add(mul(x, keepM), affine(mask, value, 0));
}

/**
 * softmax(q k^T * scale + mask) v for q [B, H, T, D], k/v [B, H, S, D]; mask is additive
 * and broadcasts to [B, H, T, S]. Heads of k/v are repeated when fewer (grouped-query).
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor,
  opts: { mask?: Tensor | null; causal?: boolean; scale?: number; dropout?: number; training?: boolean; rng?: Rng; fused?: boolean } = {}): Tensor {
  const [, h, t, d] = q.shape;
  const hk = k.shape[1], s = k.shape[2];
  if (h % hk !== 0) throw new Error(`attention: ${h} query heads not a multiple of ${hk} key heads`);
  const scale = opts.scale ?? 1 / Math.sqrt(d);
  let mask = opts.mask ?? null;
  if (opts.causal) mask = mask ? add(mask, causalMask(t, s)) : causalMask(t, s);
  const p = opts.dropout && opts.training ? opts.dropout : 0;
  if (opts.fused !== false && B().attention && fusable(q, mask, s)) {
    // Same Rng use as the composite path (one draw for the dropout mask), same mask bits.
    const seed = p > 0 ? (opts.rng ?? defaultRng()).nextU32() : 0;
    return fusedAttention(q, k, v, mask, scale, p, seed);
  }
  if (hk !== h) { k = repeatKv(k, h / hk); v = repeatKv(v, h / hk); }
  let scores = affine(matmul(q, k, false, true), scale, 0);
  if (mask) scores = add(scores, mask);
  let probs = softmax(scores);
  if (p > 0) probs = dropout(probs, p, true, opts.rng);
  return matmul(probs, v);
}

/** The fused kernel takes an additive mask without gradient that broadcasts to [B, H, T, S]. */
function fusable(q: Tensor, mask: Tensor | null, s: number): boolean {
  if (q.ndim !== 4) return false;
  if (!mask) return true;
  if (mask.requiresGrad || mask.ndim > 4) return false;
  const full4 = [q.shape[0], q.shape[1], q.shape[2], s];
  try { return sameShape(broadcastShapes(mask.shape, full4), full4); } catch { return false; }
}

/** softmax(q k^T * scale + mask) v in one backend call each way (see Backend.attention). */
function fusedAttention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | null, scale: number, dropoutP: number, seed: number): Tensor {
  const [b, h, t, d] = q.shape;
  const hk = k.shape[1], s = k.shape[2];
  if (k.shape[0] !== b || v.shape[0] !== b || k.shape[3] !== d || !sameShape(k.shape, v.shape)) {
    throw new Error(`attention: q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)}, v ${shapeStr(v.shape)} do not fit together`);
  }
  const bst = mask ? broadcastStrides(mask.shape, [b, h, t, s]) : [0, 0, 0, 0];
  const shape = { B: b, H: h, Hk: hk, T: t, S: s, D: d, scale, biasStrides: bst as [number, number, number, number], dropoutP, seed };
  const out = empty(q.shape, 'float32', false);
  const lse = empty([b, h, t], 'float32', false);
  B().attention!(q.buf, k.buf, v.buf, mask ? mask.buf : null, shape, out.buf, lse.buf);
  return result(out, 'attention', [q, k, v], (g) => {
    const gq = empty(q.shape, 'float32', false), gk = empty(k.shape, 'float32', false), gv = empty(v.shape, 'float32', false);
    B().attentionBackward!(q.buf, k.buf, v.buf, mask ? mask.buf : null, shape, out.buf, lse.buf, g.buf, gq.buf, gk.buf, gv.buf);
    const pick = (x: Tensor, gx: Tensor): Tensor | null => { if (x.requiresGrad) return gx; gx.dispose(); return null; };
    return [pick(q, gq), pick(k, gk), pick(v, gv)];
  });
}

/** [B, Hk, S, D] -> [B, Hk*n, S, D], each kv head repeated n times (as HF repeat_kv). */
export function repeatKv(x: Tensor, n: number): Tensor {
  if (n === 1) return x;
  const [b, hk, s, d] = x.shape;
  const x5 = reshape(x, [b, hk, 1, s, d]);
  return reshape(expandTo(x5, [b, hk, n, s, d]), [b, hk * n, s, d]);
}

export { sub, sum, sumToShape };
