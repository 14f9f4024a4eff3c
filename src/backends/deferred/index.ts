// `deferred`: a CPU stand-in for an asynchronous device backend, used by the tests. Every
// kernel call is queued and runs only at synchronize() (or before a kernel that returns a
// host value), and alloc() hands out buffers filled with NaN. Any code path that reads or
// writes a buffer on the host without waiting, or that relies on fresh memory being zero,
// then gives wrong numbers on this backend, exactly where it would race a GPU stream.
import type { AnyBuf, Backend } from '../backend.js';

type Call = () => void;

/** Kernels whose return value the caller uses: they flush the queue and run at once. */
const IMMEDIATE = new Set(['crossEntropy']);

export function makeDeferredBackend(inner: Backend): Backend & { queued(): number; flushes(): number } {
  const queue: Call[] = [];
  let flushes = 0;
  const flush = (): void => {
    if (queue.length === 0) return;
    flushes++;
    // Take the batch first: a kernel never queues another, but be safe against re-entry.
    const batch = queue.splice(0, queue.length);
    for (const c of batch) c();
  };
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(inner)) {
    if (typeof v !== 'function' || k === 'alloc' || k === 'synchronize' || k === 'fill') continue;
    const fn = v as (...a: unknown[]) => unknown;
    out[k] = IMMEDIATE.has(k)
      ? (...a: unknown[]) => { flush(); return fn.apply(inner, a); }
      : (...a: unknown[]) => { queue.push(() => { fn.apply(inner, a); }); };
  }
  const alloc = ((n: number, kind: 'float32' | 'int32' | 'uint16' | 'uint8'): AnyBuf | Uint8Array => {
    if (kind === 'float32') return new Float32Array(n).fill(NaN);
    if (kind === 'int32') return new Int32Array(n).fill(0x7fffffff);
    if (kind === 'uint8') return new Uint8Array(n).fill(0xa5); // codes 10 and 5: wrong, not zero
    return new Uint16Array(n).fill(0x7fc0); // a bf16 NaN
  }) as Backend['alloc'];
  return {
    ...(out as unknown as Backend),
    name: 'deferred',
    alloc,
    synchronize: flush,
    fill: (buf: AnyBuf, value: number) => { queue.push(() => { buf.fill(value); }); },
    queued: () => queue.length,
    flushes: () => flushes,
  };
}
