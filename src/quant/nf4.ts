// NF4 blockwise quantization and double quantization, bit-for-bit as bitsandbytes' CUDA
// kernels do it (kQuantizeBlockwise / dQuantizeNF4 / dQuantize), so that a checkpoint we
// write loads in bitsandbytes and one it wrote dequantizes here to the same floats.
import { DYNAMIC_MAP_BITS, NF4_BITS } from './maps.js';

function fromBits(bits: number[]): Float32Array {
  return new Float32Array(Uint32Array.from(bits).buffer);
}

/** bitsandbytes' 16 NF4 code values (float32), index = 4-bit code. */
export const NF4_CODE: Readonly<Float32Array> = fromBits(NF4_BITS);
/** bitsandbytes' create_dynamic_map(signed=True): 256 sorted float32 values. */
export const DYNAMIC_MAP: Readonly<Float32Array> = fromBits(DYNAMIC_MAP_BITS);

const f = Math.fround;
// The kernel's thresholds: midpoints of adjacent codes computed in double, used as float literals.
const T = Array.from({ length: 15 }, (_, i) => f((NF4_CODE[i] + NF4_CODE[i + 1]) / 2));

/**
 * dQuantizeNF4: decision tree with strict '>' on the midpoints, so a value exactly on a
 * midpoint takes the lower code, and NaN (a block of zeros: 0 * 1/0) takes code 0.
 */
export function nf4Index(x: number): number {
  if (x > T[7]) {
    if (x > T[11]) {
      if (x > T[13]) return x > T[14] ? 15 : 14;
      return x > T[12] ? 13 : 12;
    }
    if (x > T[9]) return x > T[10] ? 11 : 10;
    return x > T[8] ? 9 : 8;
  }
  if (x > T[3]) {
    if (x > T[5]) return x > T[6] ? 7 : 6;
    return x > T[4] ? 5 : 4;
  }
  if (x > T[1]) return x > T[2] ? 3 : 2;
  return x > T[0] ? 1 : 0;
}

/** dQuantize<0> of the CUDA kernel: binary search in a sorted 256-entry map, then nearest of the neighbours. */
export function dynamicIndex(code: ArrayLike<number>, x: number): number {
  let pivot = 127, upperPivot = 255, lowerPivot = 0;
  let lower = -1, upper = 1;
  let val = code[pivot];
  for (let i = 64; i > 0; i >>= 1) {
    if (x > val) { lowerPivot = pivot; lower = val; pivot += i; }
    else { upperPivot = pivot; upper = val; pivot -= i; }
    val = code[pivot];
  }
  if (upperPivot === 255) upper = code[upperPivot];
  if (lowerPivot === 0) lower = code[lowerPivot];
  if (x > val) return x > f((upper + val) * 0.5) ? upperPivot : pivot;
  return x < f((lower + val) * 0.5) ? lowerPivot : pivot;
}

function blockAbsmax(x: ArrayLike<number>, blocksize: number): Float32Array {
  const n = x.length, nb = Math.ceil(n / blocksize);
  const absmax = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    let m = 0;
    const end = Math.min(n, (b + 1) * blocksize);
    for (let i = b * blocksize; i < end; i++) { const a = Math.abs(x[i]); if (a > m) m = a; }
    absmax[b] = m;
  }
  return absmax;
}

/** The nested (second-level) state of double quantization. */
export interface NestedState {
  /** float32 absmax of each block of `blocksize` quantized absmax values. */
  absmax: Float32Array;
  /** The 8-bit map (bnb's "nested_quant_map"). */
  code: Float32Array;
  blocksize: number;
  /** mean(absmax), subtracted before quantizing. */
  offset: number;
  dtype: string;
}

/** bitsandbytes' QuantState for a 4-bit weight. */
export interface QuantState {
  quantType: 'nf4';
  blocksize: number;
  /** Original dtype of the weight, as bnb records it ('float32', 'bfloat16', 'float16'). */
  dtype: string;
  /** Original weight shape ([out, in] for a Linear). */
  shape: number[];
  /** float32 per-block absmax, or uint8 codes of (absmax - offset) when nested. */
  absmax: Float32Array | Uint8Array;
  /** The 16-entry 4-bit map (bnb's "quant_map"). */
  code: Float32Array;
  nested: NestedState | null;
}

export interface Quantized4bit {
  /** Two codes per byte, first element in the high nibble; ceil(n/2) bytes. */
  packed: Uint8Array;
  state: QuantState;
}

export interface Quantize4bitOptions {
  /** Elements per absmax block (bnb default 64). */
  blocksize?: number;
  /** Double quantization (bnb_4bit_use_double_quant / compress_statistics). */
  compressStatistics?: boolean;
  /** dtype recorded in the state (the dtype the weight had), default 'float32'. */
  dtype?: string;
}

/** bnb quantize_blockwise with a 256-entry map: codes and float32 absmax per block. */
export function quantizeBlockwise(x: ArrayLike<number>, code: ArrayLike<number> = DYNAMIC_MAP, blocksize = 256):
  { q: Uint8Array; absmax: Float32Array } {
  if (code.length !== 256) throw new Error(`quantizeBlockwise: the map needs 256 entries, got ${code.length}`);
  const absmax = blockAbsmax(x, blocksize);
  const q = new Uint8Array(x.length);
  for (let b = 0; b < absmax.length; b++) {
    const r = f(1 / absmax[b]); // the kernel multiplies by the float32 reciprocal
    const end = Math.min(x.length, (b + 1) * blocksize);
    for (let i = b * blocksize; i < end; i++) q[i] = dynamicIndex(code, f(x[i] * r));
  }
  return { q, absmax };
}

/** bnb dequantize_blockwise: out[i] = code[q[i]] * absmax[i / blocksize] (float32). */
export function dequantizeBlockwise(q: Uint8Array, absmax: Float32Array, code: ArrayLike<number>, blocksize: number,
  out = new Float32Array(q.length)): Float32Array {
  for (let i = 0; i < q.length; i++) out[i] = f(code[q[i]] * absmax[Math.floor(i / blocksize)]);
  return out;
}

/** Mean of float32 values, summed in double and rounded once (bnb's absmax.mean() up to summation order). */
function meanF32(x: Float32Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i];
  return f(s / x.length);
}

/**
 * Quantizes float32 weights (row-major, any shape) to NF4 like bnb.functional.quantize_4bit
 * with quant_type='nf4'. An odd element count is padded with one 0 value (code 7).
 */
export function quantizeNF4(x: Float32Array, shape: number[], opts: Quantize4bitOptions = {}): Quantized4bit {
  const q = new NF4Quantizer(shape, opts);
  if (q.numel !== x.length) throw new Error(`quantizeNF4: shape [${shape}] has ${q.numel} elements, data has ${x.length}`);
  q.push(x);
  return q.finish();
}

/**
 * quantizeNF4 for a weight that arrives in pieces (a loader reading a checkpoint chunk by
 * chunk): push() takes the next elements in row-major order, a whole number of blocks at a
 * time except for the last piece. Only the packed codes and the absmax vector are held, so
 * the float32 weight never has to exist whole. finish() gives the same bits as quantizeNF4.
 */
export class NF4Quantizer {
  readonly numel: number;
  readonly blocksize: number;
  private readonly packed: Uint8Array;
  private readonly absmax: Float32Array;
  private pos = 0;

  constructor(readonly shape: number[], private readonly opts: Quantize4bitOptions = {}) {
    const blocksize = opts.blocksize ?? 64;
    if (![64, 128, 256, 512, 1024, 2048, 4096].includes(blocksize)) {
      throw new Error(`quantizeNF4: blocksize must be one of bitsandbytes' 64..4096 powers of two, got ${blocksize}`);
    }
    const n = shape.reduce((a, b) => a * b, 1);
    if (n === 0) throw new Error('quantizeNF4: empty tensor');
    this.numel = n;
    this.blocksize = blocksize;
    this.packed = new Uint8Array(Math.ceil(n / 2));
    this.absmax = new Float32Array(Math.ceil(n / blocksize));
  }

  /** Elements pushed so far. */
  get position(): number { return this.pos; }

  /** Quantizes the next x.length elements (a multiple of blocksize unless they end the weight). */
  push(x: Float32Array): this {
    const bs = this.blocksize, p0 = this.pos, n = x.length;
    if (p0 + n > this.numel) throw new Error(`NF4Quantizer: ${p0 + n} elements pushed, the weight has ${this.numel}`);
    if (n % bs !== 0 && p0 + n !== this.numel) throw new Error(`NF4Quantizer: pieces must hold whole blocks of ${bs} (got ${n} elements at ${p0})`);
    const packed = this.packed, b0 = p0 / bs;
    for (let b = 0; b * bs < n; b++) {
      const s = b * bs, e = Math.min(n, s + bs);
      let m = 0;
      for (let i = s; i < e; i++) { const a = Math.abs(x[i]); if (a > m) m = a; }
      this.absmax[b0 + b] = m;
      const r = f(1 / m); // the kernel multiplies by the float32 reciprocal
      for (let i = s; i < e; i++) {
        const q = nf4Index(f(x[i] * r)), j = p0 + i;
        packed[j >> 1] |= (j & 1) ? q : q << 4;
      }
    }
    this.pos += n;
    return this;
  }

  /** The quantized weight (with double quantization of absmax when compressStatistics). */
  finish(): Quantized4bit {
    const n = this.numel;
    if (this.pos !== n) throw new Error(`NF4Quantizer: ${this.pos} of ${n} elements pushed`);
    const packed = this.packed, absmax = this.absmax;
    if (n & 1) packed[n >> 1] |= nf4Index(0);
    const state: QuantState = {
      quantType: 'nf4', blocksize: this.blocksize, dtype: this.opts.dtype ?? 'float32', shape: this.shape.slice(),
      absmax, code: NF4_CODE as Float32Array, nested: null, // maps are shared, never written
    };
    if (this.opts.compressStatistics) {
      const offset = meanF32(absmax);
      const centered = new Float32Array(absmax.length);
      for (let i = 0; i < absmax.length; i++) centered[i] = f(absmax[i] - offset);
      const { q, absmax: nAbs } = quantizeBlockwise(centered, DYNAMIC_MAP, 256);
      state.absmax = q;
      state.nested = { absmax: nAbs, code: DYNAMIC_MAP as Float32Array, blocksize: 256, offset, dtype: 'float32' };
    }
    return { packed, state };
  }
}

/** Number of absmax blocks of a state. */
export function numBlocks(state: QuantState): number {
  return Math.ceil(state.shape.reduce((a, b) => a * b, 1) / state.blocksize);
}

/** One block's float32 absmax (dequantizing the nested 8-bit value when double-quantized). */
export function blockScale(state: QuantState, b: number): number {
  const nested = state.nested;
  if (!nested) return state.absmax[b];
  return f(f(nested.code[state.absmax[b]] * nested.absmax[Math.floor(b / nested.blocksize)]) + nested.offset);
}

/**
 * Float32 scales of blocks [b0, b1): a view of absmax, or, when double-quantized, those
 * blocks expanded into `scratch` (same values as blockScale). What Backend.dequantizeNF4 takes.
 */
export function blockScales(state: QuantState, b0: number, b1: number, scratch: Float32Array): Float32Array {
  const nested = state.nested;
  if (!nested) return (state.absmax as Float32Array).subarray(b0, b1);
  if (scratch.length < b1 - b0) throw new Error(`blockScales: scratch has ${scratch.length} slots, needs ${b1 - b0}`);
  const q = state.absmax as Uint8Array, code = nested.code, nAbs = nested.absmax, nbs = nested.blocksize, off = nested.offset;
  const out = scratch.subarray(0, b1 - b0);
  for (let b = b0; b < b1; b++) out[b - b0] = f(f(code[q[b]] * nAbs[Math.floor(b / nbs)]) + off);
  return out;
}

/** The float32 absmax vector (bnb: dequantize_blockwise(absmax, state2) + offset). */
export function dequantizeAbsmax(state: QuantState): Float32Array {
  const nb = numBlocks(state);
  if (state.absmax.length !== nb) throw new Error(`quant state has ${state.absmax.length} absmax values, shape [${state.shape}] needs ${nb}`);
  const out = new Float32Array(nb);
  for (let b = 0; b < nb; b++) out[b] = blockScale(state, b);
  return out;
}

const lut = new Float32Array(16);

/**
 * Dequantizes elements [start, end) of the flattened weight into out[0 .. end-start):
 * out = code[nibble] * absmax[block], in float32. Lets callers work tile by tile.
 */
export function dequantizeNF4Range(packed: Uint8Array, state: QuantState, start: number, end: number,
  out: Float32Array): Float32Array {
  const bs = state.blocksize, code = state.code;
  if (out.length < end - start) throw new Error(`dequantizeNF4Range: out has ${out.length} slots, range needs ${end - start}`);
  let i = start;
  while (i < end) {
    const b = Math.floor(i / bs);
    const blockEnd = Math.min(end, (b + 1) * bs);
    const scale = blockScale(state, b);
    // Storing into a Float32Array rounds the double product once: the kernel's float32 multiply.
    if ((i & 1) === 0) {
      // Whole bytes: both nibbles at once (the hot path of every forward).
      // The 16 scaled codes of this block, rounded to float32 once (same values as code*scale per element).
      const c = lut;
      for (let j = 0; j < 16; j++) c[j] = code[j] * scale;
      const o = i - start;
      const pairs = (blockEnd - i) >> 1, p0 = i >> 1;
      for (let k = 0; k < pairs; k++) {
        const byte = packed[p0 + k];
        out[o + 2 * k] = c[byte >> 4];
        out[o + 2 * k + 1] = c[byte & 15];
      }
      i += pairs * 2;
    }
    for (; i < blockEnd; i++) {
      const byte = packed[i >> 1];
      out[i - start] = code[(i & 1) ? byte & 15 : byte >> 4] * scale;
    }
  }
  return out;
}

/** Dequantizes the whole weight (bnb.functional.dequantize_4bit) as float32. */
export function dequantizeNF4(packed: Uint8Array, state: QuantState, out?: Float32Array): Float32Array {
  const n = state.shape.reduce((a, b) => a * b, 1);
  if (packed.length !== Math.ceil(n / 2)) throw new Error(`dequantizeNF4: ${packed.length} packed bytes for shape [${state.shape}] (needs ${Math.ceil(n / 2)})`);
  if (state.quantType !== 'nf4') throw new Error(`dequantizeNF4: quant_type '${state.quantType}' is not supported (only nf4)`);
  return dequantizeNF4Range(packed, state, 0, n, out ?? new Float32Array(n));
}

/** Bytes held by a quantized weight: packed codes, absmax (and nested state), code maps. */
export function quantizedBytes(q: Quantized4bit): number {
  const s = q.state;
  let n = q.packed.byteLength + s.absmax.byteLength + s.code.byteLength;
  if (s.nested) n += s.nested.absmax.byteLength + s.nested.code.byteLength;
  return n;
}
