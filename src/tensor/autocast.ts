// Mixed precision as torch.autocast('cpu', dtype=torch.bfloat16): inside autocast('bfloat16',
// fn) the GEMMs of matmul, linear, attention products and the fused lm-head loss take
// bf16-rounded operands and accumulate in float32; everything else (norms, softmax, loss,
// optimizer, master weights) stays float32. Ops read the flag when they run forward and
// keep it for their backward, so a backward outside the scope still runs its GEMMs in bf16
// (as torch's backward follows the forward's casts).
import type { Backend } from '../backends/backend.js';
import { empty } from './tensor.js';

export type AutocastDtype = 'bfloat16';

let current: AutocastDtype | null = null;

function check(dtype: AutocastDtype | null): void {
  if (dtype !== null && dtype !== 'bfloat16') {
    throw new Error(`autocast: dtype must be 'bfloat16' (or null to turn it off), got ${JSON.stringify(dtype)}`);
  }
}

/** Runs fn with autocast set to dtype (null: off), restoring the previous setting after. */
export function autocast<T>(dtype: AutocastDtype | null, fn: () => T): T {
  check(dtype);
  const prev = current;
  current = dtype;
  try { return fn(); } finally { current = prev; }
}

/** As autocast, for an async fn (the setting holds until the promise settles). */
export async function autocastAsync<T>(dtype: AutocastDtype | null, fn: () => Promise<T>): Promise<T> {
  check(dtype);
  const prev = current;
  current = dtype;
  try { return await fn(); } finally { current = prev; }
}

/** The active autocast dtype, null when off. */
export function autocastDtype(): AutocastDtype | null { return current; }

/**
 * c = alpha * bf16(op(A)) @ bf16(op(B)) + beta * c (Backend.matmul's arguments): the backend's
 * matmulAutocast, else copies of the operands rounded with f32ToBf16/bf16ToF32 and matmul.
 */
export function matmulAutocast(be: Backend, a: Float32Array, b: Float32Array, c: Float32Array, batch: number, m: number,
  n: number, k: number, tA: boolean, tB: boolean, sA: number, sB: number, alpha: number, beta: number): void {
  if (be.matmulAutocast) { be.matmulAutocast(a, b, c, batch, m, n, k, tA, tB, sA, sB, alpha, beta); return; }
  if (batch === 0) return;
  const ra = roundedCopy(be, a, (batch - 1) * sA + m * k);
  const rb = roundedCopy(be, b, (batch - 1) * sB + k * n);
  be.matmul(ra.buf, rb.buf, c, batch, m, n, k, tA, tB, sA, sB, alpha, beta);
  ra.dispose(); rb.dispose();
}

/** A pooled float32 copy of x[0, n) rounded to bf16 values (kernels only: stream order on device backends). */
export function roundedCopy(be: Backend, x: Float32Array, n: number) {
  const h = empty([n], 'bfloat16', false), f = empty([n], 'float32', false);
  be.f32ToBf16(x.subarray(0, n), h.halfBuf);
  be.bf16ToF32(h.halfBuf, f.buf);
  h.dispose();
  return f;
}
