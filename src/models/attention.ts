// Attention pieces the decoder families share beyond Llama's: RoPE on part of the head
// (Phi, GPT-NeoX, GPT-J, Phi-3 partial_rotary_factor), GPT-J's interleaved pairs, logit
// soft-capping (Gemma 2) and ALiBi (Falcon).
import type { Tensor } from '../tensor/tensor.js';
import { empty } from '../tensor/tensor.js';
import { affine, add, concat, mul, permute, reshape, slice, tanh } from '../tensor/ops/basic.js';
import { dropout, matmul, repeatKv, rope, scaledDotProductAttention, softmax } from '../tensor/ops/nn.js';
import type { Rng } from '../tensor/random.js';
import { f32ToBf16, bf16ToF32 } from '../io/half.js';
import { MASK_MIN } from './common.js';

/**
 * RoPE on the first rotDim dims of x [B, H, T, D] (cos/sin tables of rotDim / 2 columns);
 * the rest passes through, as transformers' apply_rotary_pos_emb with cos of the rotary dim.
 */
export function partialRope(x: Tensor, cos: Tensor, sin: Tensor, pos: Tensor): Tensor {
  const d = x.shape[3], rot = cos.shape[1] * 2;
  if (rot === d) return rope(x, cos, sin, pos);
  return concat([rope(slice(x, 3, 0, rot), cos, sin, pos), slice(x, 3, rot, d)], 3);
}

/**
 * GPT-J rotates (x0, x1), (x2, x3), ... pairs of the first rotDim dims. Reordering those dims
 * to (x0, x2, ..) (x1, x3, ..) turns that into the half-split RoPE every other model uses;
 * scores only need q and k reordered alike, so the reordered layout stays (in the KV cache too).
 */
export function deinterleave(x: Tensor, rotDim: number): Tensor {
  const [b, h, t, d] = x.shape;
  const r = rotDim === d ? x : slice(x, 3, 0, rotDim);
  const halves = reshape(permute(reshape(r, [b, h, t, rotDim / 2, 2]), [0, 1, 2, 4, 3]), [b, h, t, rotDim]);
  return rotDim === d ? halves : concat([halves, slice(x, 3, rotDim, d)], 3);
}

export interface AttendOptions {
  mask: Tensor | null;
  scale: number;
  /** Gemma 2: scores -> tanh(scores / cap) * cap before the mask. */
  softcap?: number | null;
  dropout?: number;
  training?: boolean;
  rng?: Rng;
}

/** softmax(q k^T * scale [soft-capped] + mask) v; the fused kernel when there is no soft cap. */
export function attend(q: Tensor, k: Tensor, v: Tensor, o: AttendOptions): Tensor {
  if (!o.softcap) return scaledDotProductAttention(q, k, v, { mask: o.mask, scale: o.scale, dropout: o.dropout, training: o.training, rng: o.rng });
  const n = q.shape[1] / k.shape[1];
  const kk = repeatKv(k, n), vv = repeatKv(v, n);
  let s = affine(matmul(q, kk, false, true), o.scale / o.softcap, 0);
  s = affine(tanh(s), o.softcap, 0);
  if (o.mask) s = add(s, o.mask);
  let p = softmax(s);
  if (o.dropout && o.training) p = dropout(p, o.dropout, true, o.rng);
  return matmul(p, vv);
}

/** tanh(x / cap) * cap: Gemma 2's final logit soft-capping. */
export function softcap(x: Tensor, cap: number | null): Tensor {
  return cap ? affine(tanh(affine(x, 1 / cap, 0)), cap, 0) : x;
}

/** Falcon's build_alibi_tensor slopes (float32), one per head. */
export function alibiSlopes(heads: number): Float32Array {
  const p2 = 2 ** Math.floor(Math.log2(heads));
  const base = Math.fround(2 ** -(2 ** -(Math.log2(p2) - 3)));
  const out: number[] = [];
  for (let i = 1; i <= p2; i++) out.push(Math.fround(base ** i));
  if (p2 !== heads) {
    const extra = Math.fround(2 ** -(2 ** -(Math.log2(2 * p2) - 3)));
    for (let i = 1, n = 0; n < Math.min(p2, heads - p2); i += 2, n++) out.push(Math.fround(extra ** i));
  }
  return Float32Array.from(out);
}

const bf16 = (x: number): number => {
  const h = new Uint16Array(1), f = new Float32Array(1);
  f32ToBf16(Float32Array.of(x), h);
  bf16ToF32(h, f);
  return f[0];
};

/**
 * The attention bias with ALiBi [B, H, T, C]: the padding/causal bias (attentionBias) plus,
 * where it is 0, slope_h * position_j * scale, position_j = cumsum(mask)_j - 1 over the
 * attention mask (0 at pads). As transformers' Falcon: the product is rounded to bfloat16,
 * then divided by sqrt(head_dim), the bias transformers' (sdpa) path adds to the scaled logits.
 */
export function alibiBias(base: Tensor | null, attentionMask: Tensor | null | undefined, b: number, heads: number, t: number,
  s: number, cap: number, sqrtHeadDim: number): Tensor {
  const slopes = alibiSlopes(heads).map(bf16);
  const am = attentionMask ? (attentionMask.dtype === 'int32' ? attentionMask.ints : attentionMask.data) : null;
  const out = empty([b, heads, t, cap], 'float32', false);
  const d = out.data;
  const bd = base?.data ?? null;
  const [bb, , bt] = base ? base.shape : [1, 1, 1];
  const posOf = new Float32Array(s);
  for (let bi = 0; bi < b; bi++) {
    let c = 0;
    for (let j = 0; j < s; j++) {
      const m = am ? (am[bi * s + j] ? 1 : 0) : 1;
      c += m;
      posOf[j] = (c - 1) * m;
    }
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < t; i++) {
        const row = ((bi * heads + h) * t + i) * cap;
        const brow = bd ? ((bb === 1 ? 0 : bi) * bt + (bt === 1 ? 0 : i)) * cap : -1;
        for (let j = 0; j < cap; j++) {
          const m = bd ? bd[brow + j] : j < s ? 0 : -Infinity;
          d[row + j] = m === 0 ? Math.fround(bf16(slopes[h] * posOf[j]) / sqrtHeadDim) : m;
        }
      }
    }
  }
  return out;
}

export { MASK_MIN };
