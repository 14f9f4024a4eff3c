// Buffers with a reference count, recycled through a size-keyed pool so that the steady
// state of a training loop allocates nothing (and V8 never has to guess when to free).
import type { DType } from './tensor.js';

type Buf = Float32Array | Int32Array | Uint16Array;

const pool = new Map<string, Buf[]>();
let pooledBytes = 0;
const MAX_POOLED_BYTES = 1 << 30;
let liveBytes = 0;
let peakLiveBytes = 0;

export class Storage {
  refs = 0;
  constructor(readonly data: Buf, private readonly pooled: boolean) {
    if (pooled) {
      liveBytes += data.byteLength;
      if (liveBytes > peakLiveBytes) peakLiveBytes = liveBytes;
    }
  }
  get length(): number { return this.data.length; }
  release(): void {
    if (--this.refs > 0) return;
    if (!this.pooled) return;
    liveBytes -= this.data.byteLength;
    const key = keyOf(this.data.constructor.name, this.data.length);
    if (pooledBytes + this.data.byteLength > MAX_POOLED_BYTES) return;
    let list = pool.get(key);
    if (!list) { list = []; pool.set(key, list); }
    list.push(this.data);
    pooledBytes += this.data.byteLength;
  }
}

function keyOf(kind: string, n: number): string { return kind + ':' + n; }

function ctorFor(dtype: DType) {
  return dtype === 'float32' ? Float32Array : dtype === 'int32' ? Int32Array : Uint16Array;
}

export function allocStorage(n: number, dtype: DType, zero: boolean): Storage {
  const C = ctorFor(dtype);
  const list = pool.get(keyOf(C.name, n));
  const reused = list && list.pop();
  if (reused) {
    pooledBytes -= reused.byteLength;
    if (zero) reused.fill(0);
    return new Storage(reused, true);
  }
  return new Storage(new C(n), true);
}

/** Wraps a caller's buffer; it is never recycled. */
export function wrapStorage(data: Buf): Storage { return new Storage(data, false); }

/** Bytes held by live pooled tensors now, at their peak (since resetPeakMemory), and idle in the pool. */
export function memoryStats(): { liveBytes: number; peakLiveBytes: number; pooledBytes: number } {
  return { liveBytes, peakLiveBytes, pooledBytes };
}

/** Starts a new peak measurement from the current live bytes. */
export function resetPeakMemory(): void { peakLiveBytes = liveBytes; }

/** Drops every pooled buffer (e.g. between phases with different shapes). */
export function clearPool(): void { pool.clear(); pooledBytes = 0; }
