// peft's utils/merge_utils.py on flat float32 arrays: task arithmetic, magnitude / random
// pruning, TIES (majority sign + disjoint merge) and DARE, plus the SVD that the *_svd
// combinations of addWeightedAdapter use. Sums run in float64 and round once to float32.
import { Rng, defaultRng } from '../tensor/random.js';
import { peftWarn } from './warn.js';

export type MajoritySignMethod = 'total' | 'frequency';

/** magnitude_based_pruning: keeps the int(density * n) largest |values|, zeroes the rest. */
export function magnitudeBasedPruning(t: Float32Array, density: number): Float32Array {
  const k = Math.floor(density * t.length);
  const order = Array.from(t.keys()).sort((a, b) => Math.abs(t[b]) - Math.abs(t[a]));
  const out = new Float32Array(t.length);
  for (let i = 0; i < k; i++) out[order[i]] = t[order[i]];
  return out;
}

/** random_pruning: each value kept with probability density (Bernoulli), optionally / density. */
export function randomPruning(t: Float32Array, density: number, rescale: boolean, rng: Rng = defaultRng()): Float32Array {
  const out = new Float32Array(t.length);
  for (let i = 0; i < t.length; i++) if (rng.next() < density) out[i] = rescale ? t[i] / density : t[i];
  return out;
}

/** prune: density >= 1 keeps everything (with peft's warning), density < 0 is an error. */
export function prune(t: Float32Array, density: number, method: 'magnitude' | 'random', rescale = false, rng?: Rng): Float32Array {
  if (typeof density !== 'number' || Number.isNaN(density)) throw new Error(`density must be a number in [0, 1], got ${density}`);
  if (density >= 1) { peftWarn(`The density ${density} is greater than or equal to 1, no pruning will be performed.`); return t; }
  if (density < 0) throw new Error(`Density should be >= 0, got ${density}`);
  return method === 'magnitude' ? magnitudeBasedPruning(t, density) : randomPruning(t, density, rescale, rng);
}

function checkSameLength(ts: Float32Array[], weights: number[]): number {
  if (!ts.length) throw new Error('no task tensors to merge');
  if (ts.length !== weights.length) throw new Error(`${ts.length} task tensors but ${weights.length} weights`);
  const n = ts[0].length;
  if (ts.some((t) => t.length !== n)) throw new Error('task tensors differ in size');
  return n;
}

/** task_arithmetic: sum_i w_i t_i. */
export function taskArithmetic(ts: Float32Array[], weights: number[]): Float32Array {
  const n = checkSameLength(ts, weights), out = new Float32Array(n);
  for (let k = 0; k < n; k++) {
    let s = 0;
    for (let i = 0; i < ts.length; i++) s += Math.fround(ts[i][k] * Math.fround(weights[i]));
    out[k] = s;
  }
  return out;
}

/** calculate_majority_sign_mask + disjoint_merge over (already pruned) tensors. */
function tiesMerge(ts: Float32Array[], weights: number[], method: MajoritySignMethod): Float32Array {
  if (method !== 'total' && method !== 'frequency') throw new Error(`Unimplemented mask method "${method}"`);
  const n = checkSameLength(ts, weights), out = new Float32Array(n);
  for (let k = 0; k < n; k++) {
    let mag = 0;
    for (const t of ts) mag += method === 'total' ? t[k] : Math.sign(t[k]);
    const major = mag >= 0 ? 1 : -1;
    let s = 0, kept = 0;
    for (let i = 0; i < ts.length; i++) {
      if (Math.sign(ts[i][k]) !== major) continue;
      s += Math.fround(ts[i][k] * Math.fround(weights[i]));
      kept++;
    }
    out[k] = s / Math.max(kept, 1);
  }
  return out;
}

export function magnitudePrune(ts: Float32Array[], weights: number[], density: number): Float32Array {
  return taskArithmetic(ts.map((t) => prune(t, density, 'magnitude')), weights);
}

export function ties(ts: Float32Array[], weights: number[], density: number, method: MajoritySignMethod = 'total'): Float32Array {
  return tiesMerge(ts.map((t) => prune(t, density, 'magnitude')), weights, method);
}

export function dareLinear(ts: Float32Array[], weights: number[], density: number, rng?: Rng): Float32Array {
  return taskArithmetic(ts.map((t) => prune(t, density, 'random', true, rng)), weights);
}

export function dareTies(ts: Float32Array[], weights: number[], density: number, method: MajoritySignMethod = 'total', rng?: Rng): Float32Array {
  return tiesMerge(ts.map((t) => prune(t, density, 'random', true, rng)), weights, method);
}

// ---------------------------------------------------------------------------------------
// SVD

export interface Svd {
  /** [m, k] column-major-free: u[i * k + j] */
  u: Float64Array;
  s: Float64Array;
  /** [k, n]: vt[j * n + c] */
  vt: Float64Array;
  k: number;
}

/**
 * Thin SVD of a row-major [m, n] matrix by one-sided Jacobi (Hestenes) in float64, singular
 * values descending. Cost O(min(m,n)^2 max(m,n)) per sweep: fine for adapter-sized layers;
 * the low-rank svd combination avoids it (svdOfProduct).
 */
export function svd(a: ArrayLike<number>, m: number, n: number): Svd {
  const tall = m >= n;
  // Work on columns of W (rows R >= C columns): W = a or a^T.
  const R = tall ? m : n, C = tall ? n : m;
  const w = new Float64Array(R * C);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) { if (tall) w[i * C + j] = a[i * n + j]; else w[j * C + i] = a[i * n + j]; }
  const v = new Float64Array(C * C);
  for (let i = 0; i < C; i++) v[i * C + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < C - 1; p++) {
      for (let q = p + 1; q < C; q++) {
        let alpha = 0, beta = 0, gamma = 0;
        for (let r = 0; r < R; r++) { const x = w[r * C + p], y = w[r * C + q]; alpha += x * x; beta += y * y; gamma += x * y; }
        if (Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta) || gamma === 0) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t), s = c * t;
        for (let r = 0; r < R; r++) { const x = w[r * C + p], y = w[r * C + q]; w[r * C + p] = c * x - s * y; w[r * C + q] = s * x + c * y; }
        for (let r = 0; r < C; r++) { const x = v[r * C + p], y = v[r * C + q]; v[r * C + p] = c * x - s * y; v[r * C + q] = s * x + c * y; }
      }
    }
    if (!rotated) break;
  }
  const norms = Array.from({ length: C }, (_, j) => { let s = 0; for (let r = 0; r < R; r++) s += w[r * C + j] ** 2; return Math.sqrt(s); });
  const order = norms.map((_, j) => j).sort((x, y) => norms[y] - norms[x]);
  const k = C;
  const s = new Float64Array(k);
  // left vectors of W are w_j / sigma_j (length R); right vectors are v's columns (length C).
  const left = new Float64Array(R * k), right = new Float64Array(C * k);
  order.forEach((j, idx) => {
    const sig = norms[j];
    s[idx] = sig;
    for (let r = 0; r < R; r++) left[r * k + idx] = sig > 0 ? w[r * C + j] / sig : 0;
    for (let r = 0; r < C; r++) right[r * k + idx] = v[r * C + j];
  });
  // a = U S V^T. Tall: U = left [m, k], V = right [n, k]. Wide (W = a^T = left S right^T): U = right, V = left.
  const U = tall ? left : right, V = tall ? right : left;
  const vt = new Float64Array(k * n);
  for (let j = 0; j < k; j++) for (let c = 0; c < n; c++) vt[j * n + c] = V[c * k + j];
  return { u: U, s, vt, k };
}

/** Modified Gram-Schmidt QR of a row-major [m, r] matrix: Q [m, r], R [r, r]. */
function qr(a: Float64Array, m: number, r: number): { q: Float64Array; rr: Float64Array } {
  const q = Float64Array.from(a), rr = new Float64Array(r * r);
  for (let j = 0; j < r; j++) {
    for (let i = 0; i < j; i++) {
      let d = 0;
      for (let k = 0; k < m; k++) d += q[k * r + i] * q[k * r + j];
      rr[i * r + j] = d;
      for (let k = 0; k < m; k++) q[k * r + j] -= d * q[k * r + i];
    }
    let nrm = 0;
    for (let k = 0; k < m; k++) nrm += q[k * r + j] ** 2;
    nrm = Math.sqrt(nrm);
    rr[j * r + j] = nrm;
    for (let k = 0; k < m; k++) q[k * r + j] = nrm > 1e-300 ? q[k * r + j] / nrm : 0;
  }
  return { q, rr };
}

/**
 * SVD of the product B [m, r] @ A [r, n] without forming it: QR of B and of A^T, then the SVD
 * of the r x r core. Same U, S, V as the SVD of B @ A (up to signs), at O((m + n) r^2).
 */
export function svdOfProduct(b: Float64Array, a: Float64Array, m: number, r: number, n: number): Svd {
  const at = new Float64Array(n * r);
  for (let i = 0; i < r; i++) for (let j = 0; j < n; j++) at[j * r + i] = a[i * n + j];
  const { q: qb, rr: rb } = qr(b, m, r), { q: qa, rr: ra } = qr(at, n, r);
  const core = new Float64Array(r * r); // rb @ ra^T
  for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) { let s = 0; for (let k = 0; k < r; k++) s += rb[i * r + k] * ra[j * r + k]; core[i * r + j] = s; }
  const c = svd(core, r, r);
  const u = new Float64Array(m * r), vt = new Float64Array(r * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < r; j++) { let s = 0; for (let k = 0; k < r; k++) s += qb[i * r + k] * c.u[k * r + j]; u[i * r + j] = s; }
  for (let j = 0; j < r; j++) for (let col = 0; col < n; col++) { let s = 0; for (let k = 0; k < r; k++) s += c.vt[j * r + k] * qa[col * r + k]; vt[j * n + col] = s; }
  return { u, s: c.s, vt, k: r };
}

/** torch.quantile(x, q) with linear interpolation. */
export function quantile(x: ArrayLike<number>, q: number): number {
  if (!(q >= 0 && q <= 1)) throw new Error(`quantile q must be in [0, 1], got ${q}`);
  const s = Float64Array.from(x).sort();
  const pos = q * (s.length - 1), lo = Math.floor(pos), hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}
