// Array comparison for backend-vs-backend and analytic-vs-numeric checks.
import assert from 'node:assert/strict';

export interface CloseOpts { rtol?: number; atol?: number; msg?: string }

/** Largest |a-b| / (atol + rtol*|b|) over the arrays (<= 1 means close). NaNs must match. */
export function closeness(a: ArrayLike<number>, b: ArrayLike<number>, rtol: number, atol: number): { ratio: number; at: number } {
  let ratio = 0, at = -1;
  for (let i = 0; i < b.length; i++) {
    const x = a[i], y = b[i];
    if (Number.isNaN(y) || Number.isNaN(x)) {
      if (Number.isNaN(x) !== Number.isNaN(y)) return { ratio: Infinity, at: i };
      continue;
    }
    if (x === y) continue; // also equal infinities
    const r = Math.abs(x - y) / (atol + rtol * Math.abs(y));
    if (!(r <= ratio)) { ratio = r; at = i; }
  }
  return { ratio, at };
}

/** Asserts a ≈ b elementwise: |a-b| <= atol + rtol*|b|. */
export function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, opts: CloseOpts = {}): void {
  const rtol = opts.rtol ?? 1e-5, atol = opts.atol ?? 1e-6;
  assert.equal(a.length, b.length, `${opts.msg ?? ''}: length ${a.length} vs ${b.length}`);
  const { ratio, at } = closeness(a, b, rtol, atol);
  if (ratio > 1) {
    assert.fail(`${opts.msg ?? 'arrays differ'}: at [${at}] got ${a[at]}, expected ${b[at]} (rtol ${rtol}, atol ${atol}, ${ratio.toFixed(1)}x over)`);
  }
}

/** a and b hold the same float32 bit patterns (NaN payloads and signed zeros included). */
export function assertSameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < a.length; i++) if (ua[i] !== ub[i]) assert.fail(`${what}[${i}]: ${a[i]} != ${b[i]}`);
}

/** Max |x| of an array (to scale an absolute tolerance). */
export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) if (Math.abs(a[i]) > m) m = Math.abs(a[i]);
  return m;
}
