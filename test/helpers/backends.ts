// Which backends a test can run on: reference always, cpu when the addon is built, cuda
// when its addon is built and a GPU is present (never on the development machines).
import assert from 'node:assert/strict';
import type { AnyBuf, Backend } from '../../src/backends/backend.js';
import { cpuAvailable, cudaStats, cudaStatus, setCudaTf32 } from '../../src/backends/index.js';

export const hasCpu = cpuAvailable();
export const SKIP_CPU = hasCpu ? false : 'native addon not built (npm run build:native)';

const cuda = cudaStatus();
export const hasCuda = cuda.available;
export const SKIP_CUDA = hasCuda ? false : `CUDA backend unavailable: ${cuda.reason}`;
// Comparisons against the reference want full float32 GEMMs; TF32 is checked on its own.
if (hasCuda) setCudaTf32(false);

/** [name, skip] pairs for node:test's { skip } option. */
export const BACKENDS: [string, string | false][] = [['reference', false], ['cpu', SKIP_CPU], ['cuda', SKIP_CUDA]];

const PAD = 3;

/** A copy of a host array in the backend's own memory, as a sub-view PAD elements in. */
type Buf = AnyBuf | Uint8Array;

function toDevice(b: Backend, a: Buf): Buf {
  const d = a instanceof Uint8Array ? b.alloc!(a.length + PAD, 'uint8').subarray(PAD)
    : b.alloc!(a.length + PAD, a instanceof Float32Array ? 'float32' : a instanceof Int32Array ? 'int32' : 'uint16').subarray(PAD);
  b.synchronize!();
  d.set(a);
  return d;
}

const isBuf = (v: unknown): v is Buf =>
  v instanceof Float32Array || v instanceof Int32Array || v instanceof Uint16Array || v instanceof Uint8Array;

/**
 * The cuda backend driven the way the tensor layer drives it: every array argument is
 * copied into a buffer from alloc() (one copy per distinct array, so in-place calls stay in
 * place), the kernel runs asynchronously, then synchronize() and everything is copied back.
 * Asserts that no argument had to be staged, i.e. the zero-copy path was taken.
 */
export function viaDeviceBuffers(b: Backend): Backend {
  return new Proxy(b, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function' || prop === 'alloc' || prop === 'synchronize' || prop === 'fill') return v;
      return (...args: unknown[]) => {
        const copies = new Map<Buf, Buf>();
        const dev = args.map((a) => {
          if (!isBuf(a)) return a;
          let d = copies.get(a);
          if (!d) { d = toDevice(target, a); copies.set(a, d); }
          return d;
        });
        const staged = cudaStats().stagedArrays;
        try {
          return (v as (...xs: unknown[]) => unknown).apply(target, dev);
        } finally {
          target.synchronize!();
          for (const [h, d] of copies) h.set(d as never);
          assert.equal(cudaStats().stagedArrays, staged, `${String(prop)} staged an array allocated by the backend`);
        }
      };
    },
  });
}
