// Buffers with a reference count, recycled through a size-keyed pool so that the steady
// state of a training loop allocates nothing (and V8 never has to guess when to free).
import type { DType } from './tensor.js';
import { getBackend } from './registry.js';

type Buf = Float32Array | Int32Array | Uint16Array;

const pool = new Map<string, Buf[]>();
let pooledBytes = 0;
// The pool keeps up to the most bytes ever live at once (at least 1 GiB): a training step
// that peaks at 3 GiB of activations then reuses them all in the next step, where a fixed
// 1 GiB cap made it allocate (zero-fill and page-fault) the rest afresh every step. Idle
// pooled bytes never exceed what the process already held at its peak.
const MIN_POOL_CAP = 1 << 30;
let liveBytes = 0;
let peakLiveBytes = 0;
let highWaterBytes = 0;

export class Storage {
  refs = 0;
  constructor(readonly data: Buf, private readonly pooled: boolean, private readonly key = '') {
    if (pooled) {
      liveBytes += data.byteLength;
      if (liveBytes > peakLiveBytes) peakLiveBytes = liveBytes;
      if (liveBytes > highWaterBytes) highWaterBytes = liveBytes;
    }
  }
  get length(): number { return this.data.length; }
  release(): void {
    if (--this.refs > 0) return;
    if (!this.pooled) return;
    liveBytes -= this.data.byteLength;
    if (pooledBytes + this.data.byteLength > Math.max(MIN_POOL_CAP, highWaterBytes)) return;
    let list = pool.get(this.key);
    if (!list) { list = []; pool.set(this.key, list); }
    list.push(this.data);
    pooledBytes += this.data.byteLength;
  }
}

function keyOf(kind: string, n: number): string { return kind + ':' + n; }

function ctorFor(dtype: DType) {
  return dtype === 'float32' ? Float32Array : dtype === 'int32' ? Int32Array : Uint16Array;
}

// Pools are per backend: a device backend's buffers and plain host arrays are not interchangeable.
export function allocStorage(n: number, dtype: DType, zero: boolean): Storage {
  const C = ctorFor(dtype);
  const b = getBackend();
  const key = b.alloc ? b.name + ':' + keyOf(C.name, n) : keyOf(C.name, n);
  const list = pool.get(key);
  const reused = list && list.pop();
  let buf: Buf;
  if (reused) {
    pooledBytes -= reused.byteLength;
    buf = reused;
  } else if (b.alloc) {
    buf = b.alloc(n, dtype === 'float32' ? 'float32' : dtype === 'int32' ? 'int32' : 'uint16');
  } else {
    return new Storage(new C(n), true, key); // fresh JS arrays are zeroed already
  }
  // Zero in stream order when the backend can: a host fill could race kernels still queued.
  if (zero) { if (b.fill) b.fill(buf, 0); else buf.fill(0); }
  return new Storage(buf, true, key);
}

/**
 * Wraps a caller's buffer; it is never recycled. On a backend with its own memory the
 * values are copied into a backend buffer, so kernels never have to stage them.
 */
export function wrapStorage(data: Buf): Storage {
  const b = getBackend();
  if (!b.alloc || data.length === 0) return new Storage(data, false);
  const kind = data instanceof Float32Array ? 'float32' : data instanceof Int32Array ? 'int32' : 'uint16';
  const buf = b.alloc(data.length, kind);
  b.synchronize?.();
  buf.set(data as never);
  return new Storage(buf, false);
}

/** Bytes held by live pooled tensors now, at their peak (since resetPeakMemory), and idle in the pool. */
export function memoryStats(): { liveBytes: number; peakLiveBytes: number; pooledBytes: number } {
  return { liveBytes, peakLiveBytes, pooledBytes };
}

/** Starts a new peak measurement from the current live bytes. */
export function resetPeakMemory(): void { peakLiveBytes = liveBytes; }

/** Drops every pooled buffer (e.g. between phases with different shapes). */
export function clearPool(): void { pool.clear(); pooledBytes = 0; }
