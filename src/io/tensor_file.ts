// What every weight-file reader shares: the dtype names (safetensors' spelling, also used for
// torch .bin storages), element sizes, decoding raw little-endian bytes into a Tensor, and the
// reader interface model and adapter loading go through (safetensors or PyTorch .bin alike).
import { Tensor, halfToF32 } from '../tensor/tensor.js';
import { tensor } from '../tensor/ops/basic.js';
import { bf16ToF32, f32ToBf16 } from './half.js';

/** Bytes per element of every dtype the safetensors format defines. */
export const DTYPE_SIZE: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, F8_E8M0: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  F64: 8, I64: 8, U64: 8, C64: 8,
};

export const FLOAT_FILE_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

/** Name, dtype and shape of one tensor in a weight file. */
export interface TensorMeta { dtype: string; shape: number[] }

/**
 * An open weight file read tensor by tensor. SafetensorsReader and TorchBinReader both
 * implement it, so loaders do not care which format a checkpoint folder holds.
 */
export interface TensorFileReader {
  readonly file: string;
  /** Tensor names, in the order reading them is cheapest. */
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorMeta;
  /** The whole tensor (F16/BF16 become float32 when toFloat32, the default). */
  tensor(name: string, toFloat32?: boolean): Tensor;
  /** The tensor's raw little-endian bytes, contiguous in row-major order. */
  bytes(name: string): Uint8Array;
  /** Elements [start, start + out.length) of a floating tensor as float32. */
  readFloat32(name: string, start: number, out: Float32Array): void;
  /** Elements [start, start + out.length) of a floating tensor as bfloat16 bits (rounded to nearest even). */
  readBfloat16(name: string, start: number, out: Uint16Array): void;
  close(): void;
}

/** readBfloat16 through float32 chunks (exact for BF16 sources, nearest even for others). */
export function readBfloat16ViaF32(r: TensorFileReader, name: string, start: number, out: Uint16Array): void {
  const CHUNK = 1 << 18;
  const f = new Float32Array(Math.min(CHUNK, out.length));
  for (let done = 0; done < out.length; done += CHUNK) {
    const m = Math.min(CHUNK, out.length - done);
    const part = f.subarray(0, m);
    r.readFloat32(name, start + done, part);
    f32ToBf16(part, out.subarray(done, done + m));
  }
}

/** Converts `m` elements of a floating dtype in `bytes` (aligned, offset 0) to float32 into dst. */
export function floatBytesToF32(dtype: string, bytes: Uint8Array, m: number, dst: Float32Array): void {
  if (dtype === 'F32') dst.set(new Float32Array(bytes.buffer, bytes.byteOffset, m));
  else if (dtype === 'F64') { const v = new Float64Array(bytes.buffer, bytes.byteOffset, m); for (let i = 0; i < m; i++) dst[i] = v[i]; }
  else if (dtype === 'BF16') bf16ToF32(new Uint16Array(bytes.buffer, bytes.byteOffset, m), dst);
  else halfToF32(new Uint16Array(bytes.buffer, bytes.byteOffset, m), dst);
}

/**
 * Decodes a tensor's bytes (a fresh, exactly-sized, aligned buffer). Floating dtypes map to
 * float32 / float16 / bfloat16, integer and bool dtypes to int32 (range-checked).
 */
export function decodeTensor(bytes: Uint8Array, info: TensorMeta, name: string, fail: (msg: string) => never, toF32: boolean): Tensor {
  const { dtype, shape } = info;
  const ab = bytes.buffer;
  const n = shape.reduce((a, s) => a * s, 1);
  const toInt = (get: (i: number) => number | bigint): Tensor => {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const v = get(i);
      const x = typeof v === 'bigint' ? Number(v) : v;
      if (x > 2147483647 || x < -2147483648) fail(`tensor "${name}" (${dtype}) holds ${v} at index ${i}, outside the int32 range`);
      out[i] = x;
    }
    return tensor(out, shape, { dtype: 'int32' });
  };
  switch (dtype) {
    case 'F32': return tensor(new Float32Array(ab, 0, n), shape, { dtype: 'float32' });
    case 'F64': return tensor(Float32Array.from(new Float64Array(ab, 0, n)), shape, { dtype: 'float32' });
    case 'F16': case 'BF16': {
      const bits = new Uint16Array(ab, 0, n);
      if (!toF32) return tensor(bits, shape, { dtype: dtype === 'F16' ? 'float16' : 'bfloat16' });
      const out = new Float32Array(n);
      if (dtype === 'F16') halfToF32(bits, out); else bf16ToF32(bits, out);
      return tensor(out, shape, { dtype: 'float32' });
    }
    case 'I32': return tensor(new Int32Array(ab, 0, n), shape, { dtype: 'int32' });
    case 'U32': { const a = new Uint32Array(ab, 0, n); return toInt((i) => a[i]); }
    case 'I64': { const a = new BigInt64Array(ab, 0, n); return toInt((i) => a[i]); }
    case 'U64': { const a = new BigUint64Array(ab, 0, n); return toInt((i) => a[i]); }
    case 'I16': return tensor(Int32Array.from(new Int16Array(ab, 0, n)), shape, { dtype: 'int32' });
    case 'U16': return tensor(Int32Array.from(new Uint16Array(ab, 0, n)), shape, { dtype: 'int32' });
    case 'I8': return tensor(Int32Array.from(new Int8Array(ab, 0, n)), shape, { dtype: 'int32' });
    case 'U8': return tensor(Int32Array.from(bytes), shape, { dtype: 'int32' });
    case 'BOOL': return tensor(Int32Array.from(bytes, (b) => (b ? 1 : 0)), shape, { dtype: 'int32' });
    default: fail(`tensor "${name}": dtype ${dtype} cannot be loaded as a Tensor (use readTensorBytes for raw bytes)`);
  }
}

/** NaN / ±Inf count (x - x is 0 only for finite x). */
export function countNonFinite(a: Float32Array): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) { const v = a[i]; if (v - v !== 0) n++; }
  return n;
}

/** bfloat16 bits with an all-ones exponent are NaN / Inf. */
export function countNonFiniteBf16(a: Uint16Array): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if ((a[i] & 0x7f80) === 0x7f80) n++;
  return n;
}
