// Finite-difference gradient check for any op built from src/tensor: compares the autograd
// gradient of L = sum(w * f(inputs)) (w fixed random weights, so every output element
// counts differently) against central differences (L(x+eps) - L(x-eps)) / 2eps, with L
// accumulated in float64 to keep rounding noise below the truncation error.
import assert from 'node:assert/strict';
import { Tensor, noGrad, tidy, tensor, Rng } from '../../src/tensor/index.js';

export interface GradcheckOpts {
  /** Finite-difference step (default 1e-2; use 1e-3 for ops with sharp curvature). */
  eps?: number;
  /** Relative tolerance (default 1e-2). */
  rtol?: number;
  /** Absolute tolerance, scaled by the largest gradient magnitude (default 1e-2). */
  atol?: number;
  /** Check at most this many elements per input (evenly spread), default all. */
  maxChecks?: number;
  seed?: number;
  name?: string;
}

export interface GradcheckReport { input: number; index: number; analytic: number; numeric: number }

function weightedSum(y: Tensor, w: Float64Array): number {
  const d = y.toFloat32Array();
  let s = 0;
  for (let i = 0; i < d.length; i++) s += d[i] * w[i];
  return s;
}

/**
 * Checks d/d(inputs) of fn. Inputs with requiresGrad are checked (float32 only); fn must be
 * deterministic. Throws an assertion error naming the first bad element. Returns the worst
 * element seen per input.
 */
export function gradcheck(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: GradcheckOpts = {}): GradcheckReport[] {
  const eps = opts.eps ?? 1e-2, rtol = opts.rtol ?? 1e-2, atol = opts.atol ?? 1e-2;
  const name = opts.name ?? 'gradcheck';
  return tidy(() => {
    // Analytic gradients on fresh leaves (same buffers as the caller's inputs).
    const leaves = inputs.map((x) => { const l = x.detach(); if (x.requiresGrad) l.setRequiresGrad(true); return l; });
    const y0 = fn(...leaves);
    const rng = new Rng(opts.seed ?? 1234);
    const w = new Float64Array(y0.size);
    for (let i = 0; i < w.length; i++) w[i] = 0.5 + rng.next();
    if (!y0.requiresGrad) throw new Error(`${name}: output does not require grad`);
    y0.backward(tensor(Float32Array.from(w), y0.shape.slice()));
    const reports: GradcheckReport[] = [];
    inputs.forEach((x, xi) => {
      if (!x.requiresGrad) return;
      const g = leaves[xi].grad;
      assert.ok(g, `${name}: input ${xi} got no gradient`);
      const ga = g.toFloat32Array();
      const data = x.data;
      const n = data.length;
      const step = opts.maxChecks && n > opts.maxChecks ? n / opts.maxChecks : 1;
      const scale = Math.max(1e-3, ...Array.from(ga, Math.abs));
      let worst: GradcheckReport = { input: xi, index: -1, analytic: 0, numeric: 0 };
      let worstR = -1;
      for (let f = 0; f < n; f += step) {
        const i = Math.floor(f);
        const orig = data[i];
        data[i] = orig + eps;
        const lp = noGrad(() => tidy(() => weightedSum(fn(...inputs), w)));
        data[i] = orig - eps;
        const lm = noGrad(() => tidy(() => weightedSum(fn(...inputs), w)));
        data[i] = orig;
        // the actual step taken in float32 arithmetic
        const h = Math.fround(orig + eps) - Math.fround(orig - eps);
        const num = (lp - lm) / h;
        const r = Math.abs(ga[i] - num) / (atol * scale + rtol * Math.abs(num));
        if (r > worstR) { worstR = r; worst = { input: xi, index: i, analytic: ga[i], numeric: num }; }
        if (r > 1) {
          assert.fail(`${name}: d/d input${xi}[${i}] analytic ${ga[i]} vs numeric ${num} (rtol ${rtol}, atol ${atol}*${scale.toPrecision(3)})`);
        }
      }
      reports.push(worst);
    });
    // The leaves' grads (kept by backward) and buffer refs would outlive the scope.
    for (const l of leaves) l.dispose();
    return reports;
  });
}

/** Random float32 tensor that requires grad (values in [-s, s], fixed seed). */
export function randParam(shape: number[], seed: number, s = 1): Tensor {
  const rng = new Rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = (rng.next() * 2 - 1) * s;
  return tensor(d, shape, { requiresGrad: true });
}
