// Fused scaled-dot-product attention, forward and backward, written as plain loops: the
// oracle for device kernels (flash-style) that never hold the [T, S] probability matrix.
// One query row at a time: scores for that row only, softmax, optional dropout from the
// counter-based hash (the same mask dropoutMask gives over a [B, H, T, S] tensor), then
// the weighted sum of values. Backward recomputes each row's probabilities from the saved
// log-sum-exp, as FlashAttention does.
import type { AttentionShape, F32 } from '../backend.js';
import { dropoutHash, dropoutThreshold } from './math.js';

/** Scores of query row (b, h, t) into sc[0..S): scale * q.k + bias. Returns the row max. */
function rowScores(q: F32, k: F32, bias: F32 | null, a: AttentionShape, b: number, h: number, t: number, sc: Float64Array): number {
  const { H, Hk, T, S, D, scale } = a;
  const kvh = Math.floor(h / (H / Hk));
  const qo = ((b * H + h) * T + t) * D;
  const bs = a.biasStrides;
  let mx = -Infinity;
  for (let j = 0; j < S; j++) {
    const ko = ((b * Hk + kvh) * S + j) * D;
    let dot = 0;
    for (let c = 0; c < D; c++) dot += q[qo + c] * k[ko + c];
    let v = dot * scale;
    if (bias) v += bias[b * bs[0] + h * bs[1] + t * bs[2] + j * bs[3]];
    sc[j] = v;
    if (v > mx) mx = v;
  }
  return mx;
}

/** Dropout multiplier of element (b, h, t, j): 0 or 1/(1-p) (1 without dropout). */
function keepScale(a: AttentionShape, b: number, h: number, t: number, j: number, thr: number, inv: number): number {
  if (a.dropoutP <= 0) return 1;
  const idx = ((b * a.H + h) * a.T + t) * a.S + j;
  return dropoutHash(a.seed >>> 0, idx) >= thr ? inv : 0;
}

export function attentionForward(q: F32, k: F32, v: F32, bias: F32 | null, a: AttentionShape, out: F32, lse: F32): void {
  const { B, H, Hk, T, S, D } = a;
  const sc = new Float64Array(S);
  const thr = dropoutThreshold(a.dropoutP), inv = 1 / (1 - a.dropoutP);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
    const kvh = Math.floor(h / (H / Hk));
    for (let t = 0; t < T; t++) {
      const mx = rowScores(q, k, bias, a, b, h, t, sc);
      const oo = ((b * H + h) * T + t) * D;
      const row = (b * H + h) * T + t;
      if (mx === -Infinity) { // every key masked: zeros, as the composite softmax gives
        for (let c = 0; c < D; c++) out[oo + c] = 0;
        lse[row] = -Infinity;
        continue;
      }
      let sum = 0;
      for (let j = 0; j < S; j++) { sc[j] = Math.exp(sc[j] - mx); sum += sc[j]; }
      lse[row] = mx + Math.log(sum);
      for (let c = 0; c < D; c++) {
        let acc = 0;
        for (let j = 0; j < S; j++) {
          const p = sc[j] / sum * keepScale(a, b, h, t, j, thr, inv);
          if (p !== 0) acc += p * v[((b * Hk + kvh) * S + j) * D + c];
        }
        out[oo + c] = acc;
      }
    }
  }
}

/**
 * With P = softmax(scores), P' = P * dropout, out = P' V:
 *   dV += P'^T dO;  dP'_j = dO . v_j;  dS_j = P_j (keep_j dP'_j - rowsum(dO * out));
 *   dQ = scale * dS K;  dK += scale * dS^T Q. gq, gk, gv are overwritten.
 */
export function attentionBackward(q: F32, k: F32, v: F32, bias: F32 | null, a: AttentionShape, out: F32, lse: F32,
  gOut: F32, gq: F32, gk: F32, gv: F32): void {
  const { B, H, Hk, T, S, D, scale } = a;
  gq.fill(0); gk.fill(0); gv.fill(0);
  const sc = new Float64Array(S);
  const thr = dropoutThreshold(a.dropoutP), inv = 1 / (1 - a.dropoutP);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
    const kvh = Math.floor(h / (H / Hk));
    for (let t = 0; t < T; t++) {
      const row = (b * H + h) * T + t;
      if (lse[row] === -Infinity) continue; // fully masked row: no gradient anywhere
      rowScores(q, k, bias, a, b, h, t, sc);
      const oo = row * D;
      let di = 0;
      for (let c = 0; c < D; c++) di += gOut[oo + c] * out[oo + c];
      for (let j = 0; j < S; j++) {
        const p = Math.exp(sc[j] - lse[row]);
        if (p === 0) continue;
        const ko = ((b * Hk + kvh) * S + j) * D;
        const keep = keepScale(a, b, h, t, j, thr, inv);
        let dpj = 0;
        for (let c = 0; c < D; c++) dpj += gOut[oo + c] * v[ko + c];
        if (keep !== 0) for (let c = 0; c < D; c++) gv[ko + c] += p * keep * gOut[oo + c];
        const ds = p * (keep * dpj - di) * scale;
        for (let c = 0; c < D; c++) {
          gq[oo + c] += ds * k[ko + c];
          gk[ko + c] += ds * q[oo + c];
        }
      }
    }
  }
}
