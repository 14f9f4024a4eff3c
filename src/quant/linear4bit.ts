// bitsandbytes' Linear4bit: a frozen NF4 weight [out, in] and a float32 bias. The weight is
// dequantized a tile of rows at a time into one shared scratch buffer and multiplied with
// the backend's GEMM, so a large layer never has its float32 weight in memory. Backward
// gives the input gradient only (the quantized weight is frozen; a float32 bias that
// requires grad gets its gradient through the ordinary add op). On a backend with its own
// memory and an NF4 kernel (cuda) the codes move into that memory at first use and tiles are
// dequantized and multiplied there without waiting for the device (./device.ts).
import { Tensor, empty, result } from '../tensor/tensor.js';
import type { Backend } from '../backends/backend.js';
import { getBackend, hostSync } from '../tensor/registry.js';
import { add } from '../tensor/ops/basic.js';
import { tensor } from '../tensor/ops/basic.js';
import { Module } from '../nn/module.js';
import type { LinearLike } from '../nn/layers.js';
import { halfToF32 } from '../tensor/tensor.js';
import { f32ToF16Bits } from '../io/half.js';
import {
  NF4Quantizer, Quantized4bit, blockScales, Quantize4bitOptions, QuantState, dequantizeNF4, dequantizeNF4Range, quantizeNF4, quantizedBytes,
} from './nf4.js';
import { quantizedToTensors } from './serialize.js';
import { DeviceWeight, forwardDevice, hasDevicePath, inputGradDevice, uploadWeight, type DeviceCall } from './device.js';

/** bnb_4bit_compute_dtype: the precision the matmul inputs are rounded to (accumulation is float32). */
export type ComputeDtype = 'float32' | 'bfloat16' | 'float16';

/**
 * Elements of weight dequantized per tile (16 MiB of float32). Fewer, larger GEMMs: on a
 * 2048 -> 8192 layer 1 MiB tiles cost ~15% more time (docs/benchmarks.md).
 */
let tileElems = 1 << 22;
/** On a device backend: 16 Mi elements (a 64 MiB float32 scratch), so GEMMs stay large. */
let deviceTileElems = 1 << 24;
/** Elements read and quantized per piece when a weight is quantized while it streams in (1 MiB). */
const STREAM_PIECE = 1 << 18;
/** Changes the tile size (tests use it to force several tiles). Returns the previous value. */
export function setLinear4bitTileElements(n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new Error(`tile size must be a positive integer, got ${n}`);
  const prev = tileElems; tileElems = n; return prev;
}
/** The same for the tiles dequantized in backend memory (cuda). Returns the previous value. */
export function setLinear4bitDeviceTileElements(n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new Error(`tile size must be a positive integer, got ${n}`);
  const prev = deviceTileElems; deviceTileElems = n; return prev;
}

// One scratch buffer for every Linear4bit (JS is single-threaded and forward/backward never nest).
let scratch = new Float32Array(0);
function scratchOf(n: number): Float32Array {
  if (scratch.length < n) scratch = new Float32Array(n);
  return scratch.subarray(0, n);
}

let scalesScratch = new Float32Array(0);

/**
 * Weight elements [s, e) dequantized into the host array out: by the backend's dequantizeNF4
 * kernel when it has one and runs synchronously (the double-quantized absmax of the tile's
 * blocks expanded here first), else in TypeScript. Both give the same bits.
 */
function dequantTile(q: Quantized4bit, s: number, e: number, out: Float32Array): Float32Array {
  const be = getBackend();
  // An asynchronous backend would write `out` later than the host reads it.
  if (!be.dequantizeNF4 || be.alloc) return dequantizeNF4Range(q.packed, q.state, s, e, out);
  const bs = q.state.blocksize, b0 = Math.floor(s / bs), b1 = Math.ceil(e / bs);
  if (q.state.nested && scalesScratch.length < b1 - b0) scalesScratch = new Float32Array(b1 - b0);
  be.dequantizeNF4(q.packed, blockScales(q.state, b0, b1, scalesScratch), bs, q.state.code, s, e - s, out);
  return out.subarray(0, e - s);
}

const rf32 = new Float32Array(1);
const ru32 = new Uint32Array(rf32.buffer);
/** Rounds values in place to the compute dtype's precision (round to nearest even). */
export function roundToDtype(x: Float32Array, dtype: ComputeDtype): void {
  if (dtype === 'float32') return;
  if (dtype === 'bfloat16') {
    for (let i = 0; i < x.length; i++) {
      rf32[0] = x[i];
      const u = ru32[0];
      if ((u & 0x7f800000) === 0x7f800000) continue; // inf / NaN unchanged
      ru32[0] = ((u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000) >>> 0;
      x[i] = rf32[0];
    }
    return;
  }
  const h = new Uint16Array(1), o = new Float32Array(1);
  for (let i = 0; i < x.length; i++) { h[0] = f32ToF16Bits(x[i]); halfToF32(h, o); x[i] = o[0]; }
}

export class Linear4bit extends Module implements LinearLike {
  private q: Quantized4bit | null;
  /** The weight in backend memory (device backends); q.packed is then the same array. */
  private dev: DeviceWeight | null = null;
  /** Options used whenever the weight is (re)quantized. */
  readonly quantOptions: Quantize4bitOptions;

  /**
   * q: the quantized weight, or null for a placeholder that a loader fills later
   * (loadQuantized / quantizeWeight). bias is kept as the module's "bias" parameter.
   */
  constructor(readonly inFeatures: number, readonly outFeatures: number, q: Quantized4bit | null,
    bias: Tensor | null = null, public computeDtype: ComputeDtype = 'float32', quantOptions: Quantize4bitOptions = {}) {
    super();
    this.quantOptions = { blocksize: 64, compressStatistics: true, ...quantOptions };
    this.q = null;
    if (q) this.loadQuantized(q);
    if (bias && bias.size !== outFeatures) throw new Error(`Linear4bit: bias has ${bias.size} values, expected ${outFeatures}`);
    this.registerParameter('bias', bias);
  }

  /** Quantizes a float32 weight stored [out, in]. */
  static fromWeight(weight: Float32Array, inFeatures: number, outFeatures: number, bias: Tensor | null = null,
    computeDtype: ComputeDtype = 'float32', opts: Quantize4bitOptions = {}): Linear4bit {
    const m = new Linear4bit(inFeatures, outFeatures, null, bias, computeDtype, opts);
    m.quantizeWeight(weight);
    return m;
  }

  get bias(): Tensor | null { return this.getParameter('bias'); }
  get isLoaded(): boolean { return this.q !== null; }
  get quantized(): Quantized4bit { return this.hostQ(); }
  get quantState(): QuantState { return this.need().state; }
  /** The packed 4-bit codes (bnb's Params4bit data); backend memory once used on a device backend. */
  get packedWeight(): Uint8Array { return this.hostQ().packed; }

  private need(): Quantized4bit {
    if (!this.q) throw new Error(`Linear4bit(${this.inFeatures}, ${this.outFeatures}): weight not loaded yet`);
    return this.q;
  }

  /** The weight for host reads: waits for queued kernels when the codes are in backend memory. */
  private hostQ(): Quantized4bit {
    const q = this.need();
    if (this.dev) hostSync();
    return q;
  }

  /** Installs a new weight (host arrays); a copy in backend memory is made again on next use. */
  private setQ(q: Quantized4bit): void {
    this.q = q;
    this.dev = null;
  }

  /**
   * The weight in the backend's memory, copied there on first use. The packed codes then live
   * only there (host-visible memory: host readers synchronize first), plus one float32 scale
   * per block (see DeviceWeight).
   */
  private deviceWeight(be: Backend): DeviceWeight {
    if (this.dev && this.dev.backend === be) return this.dev;
    const q = this.hostQ();
    const d = uploadWeight(be, q);
    this.q = { packed: d.packed, state: q.state };
    this.dev = d;
    return d;
  }

  /** The device path: a backend with memory and the NF4 kernel; float16 compute keeps the host rounding. */
  private deviceCall(be: Backend): DeviceCall | null {
    if (!hasDevicePath(be) || this.computeDtype === 'float16') return null;
    return {
      w: this.deviceWeight(be), state: this.need().state, inF: this.inFeatures, outF: this.outFeatures,
      rows: this.tileRows(deviceTileElems), dtype: this.computeDtype,
    };
  }

  /** Installs an already-quantized weight (e.g. read from a bnb checkpoint). */
  loadQuantized(q: Quantized4bit): void {
    const s = q.state.shape;
    if (s.length !== 2 || s[0] !== this.outFeatures || s[1] !== this.inFeatures) {
      throw new Error(`Linear4bit: quantized weight has shape [${s}], expected [${this.outFeatures}, ${this.inFeatures}]`);
    }
    this.setQ({ packed: q.packed, state: q.state });
  }

  /** (Re)quantizes from a float32 weight [out, in]; the float array is not kept. */
  quantizeWeight(weight: Float32Array, dtype = 'float32'): void {
    if (weight.length !== this.inFeatures * this.outFeatures) {
      throw new Error(`Linear4bit: weight has ${weight.length} values, expected ${this.outFeatures}x${this.inFeatures}`);
    }
    this.setQ(quantizeNF4(weight, [this.outFeatures, this.inFeatures], { ...this.quantOptions, dtype }));
  }

  /**
   * Quantizes a float32 weight [out, in] that is read piece by piece: read(start, out) fills
   * out with elements [start, start + out.length). Only a 1 MiB piece is held at a time; the
   * bits are the same as quantizeWeight's.
   */
  quantizeStreaming(read: (start: number, out: Float32Array) => void, dtype = 'float32'): void {
    const q = new NF4Quantizer([this.outFeatures, this.inFeatures], { ...this.quantOptions, dtype });
    const n = q.numel, step = Math.max(q.blocksize, STREAM_PIECE - (STREAM_PIECE % q.blocksize));
    for (let s = 0; s < n; s += step) {
      const piece = scratchOf(Math.min(step, n - s));
      read(s, piece);
      q.push(piece);
    }
    this.setQ(q.finish());
  }

  /** The dequantized weight as a float32 tensor [out, in] (materialises it: for merging/export). */
  dequantizeWeight(): Tensor {
    const q = this.hostQ();
    return tensor(dequantizeNF4(q.packed, q.state), [this.outFeatures, this.inFeatures]);
  }

  /**
   * W <- quantize(dequantize(W) + scale * delta), delta [out, in]: how peft merges LoRA into
   * a 4-bit layer. The result is rounded to NF4 again, so outputs change slightly.
   */
  mergeDelta(delta: Float32Array, scale = 1): void {
    warnOnce('Merge lora module to 4-bit linear may get different generations due to rounding errors.');
    const q = this.hostQ();
    const w = dequantizeNF4(q.packed, q.state);
    if (delta.length !== w.length) throw new Error(`mergeDelta: delta has ${delta.length} values, weight ${w.length}`);
    for (let i = 0; i < w.length; i++) w[i] += scale * delta[i];
    this.quantizeWeight(w, q.state.dtype);
  }

  /** Drops the quantized weight (host and device copies) when the model is disposed. */
  protected override disposeBuffers(): void { this.q = null; this.dev = null; }

  /** Bytes held by the quantized weight (packed codes + absmax + nested state + maps). */
  quantizedBytes(): number { return this.q ? quantizedBytes(this.q) : 0; }

  /** bnb's state-dict entries for this layer: "<prefix>.weight" (+ state) and "<prefix>.bias". */
  stateTensors(prefix: string): Map<string, Tensor> {
    const out = quantizedToTensors(prefix ? `${prefix}.weight` : 'weight', this.hostQ());
    const b = this.bias;
    if (b) out.set(prefix ? `${prefix}.bias` : 'bias', b);
    return out;
  }

  /** Rows of the weight per tile. */
  private tileRows(elems = tileElems): number {
    return Math.max(1, Math.min(this.outFeatures, Math.floor(elems / this.inFeatures)));
  }

  forward(x: Tensor): Tensor {
    const q = this.need();
    const inF = this.inFeatures, outF = this.outFeatures;
    if (x.shape[x.ndim - 1] !== inF) throw new Error(`Linear4bit: input ${x.label()} has last dim ${x.shape[x.ndim - 1]}, expected ${inF}`);
    const M = x.size / inF;
    const lead = x.shape.slice(0, -1);
    const be = getBackend();
    const dc = this.deviceCall(be);
    const y = dc ? forwardDevice(dc, x, M, lead) : this.forwardHost(q, be, x, M, lead);
    const out = result(y, 'linear4bit', [x], (gy) => [this.inputGrad(gy, M)]);
    const b = this.bias;
    return b ? add(out, b) : out;
  }

  /** Tiles dequantized on the host (cpu, reference; float16 compute anywhere). */
  private forwardHost(q: Quantized4bit, be: Backend, x: Tensor, M: number, lead: number[]): Tensor {
    const inF = this.inFeatures, outF = this.outFeatures;
    let xd = x.data;
    if (this.computeDtype !== 'float32') { xd = new Float32Array(xd); roundToDtype(xd, this.computeDtype); }
    // Each tile of weight rows gives y[:, r0:r1] = x @ W[r0:r1]^T (the same GEMM as linear()),
    // computed into a small buffer and copied into its columns of y.
    const y = empty([...lead, outF], 'float32', false);
    const yd = y.data;
    const R = this.tileRows();
    const tile = R >= outF ? null : new Float32Array(M * R);
    for (let r0 = 0; r0 < outF; r0 += R) {
      const r1 = Math.min(outF, r0 + R), rows = r1 - r0;
      const w = dequantTile(q, r0 * inF, r1 * inF, scratchOf(rows * inF));
      roundToDtype(w, this.computeDtype);
      if (!tile) { be.matmul(xd, w, yd, 1, M, rows, inF, false, true, 0, 0, 1, 0); break; }
      be.matmul(xd, w, tile, 1, M, rows, inF, false, true, 0, 0, 1, 0);
      hostSync(); // the tile and the scratch are host buffers reused next iteration
      for (let i = 0; i < M; i++) yd.set(tile.subarray(i * rows, (i + 1) * rows), i * outF + r0);
    }
    hostSync();
    return y;
  }

  /** gx = gy @ dequant(W), tile by tile: gx += gy[:, rows] @ W[rows, :]. */
  private inputGrad(gy: Tensor, M: number): Tensor {
    const q = this.need();
    const inF = this.inFeatures, outF = this.outFeatures;
    const be = getBackend();
    const dc = this.deviceCall(be);
    if (dc) return inputGradDevice(dc, gy, M, gy.shape.slice(0, -1));
    const gyT = empty([outF, M], 'float32', false);
    be.permute(gy.data, [M, outF], [1, 0], gyT.data);
    const gx = empty([...gy.shape.slice(0, -1), inF], 'float32', true);
    const R = this.tileRows();
    for (let r0 = 0; r0 < outF; r0 += R) {
      const r1 = Math.min(outF, r0 + R), rows = r1 - r0;
      const w = dequantTile(q, r0 * inF, r1 * inF, scratchOf(rows * inF));
      roundToDtype(w, this.computeDtype);
      // op(A) = (gyT[rows, M])^T [M, rows]; B = W tile [rows, in]; accumulate into gx.
      be.matmul(gyT.data.subarray(r0 * M, r1 * M), w, gx.data, 1, M, inF, rows, true, false, 0, 0, 1, 1);
      hostSync(); // the scratch is rewritten on the host next iteration
    }
    gyT.dispose();
    return gx;
  }
}

const warned = new Set<string>();
export function warnOnce(msg: string): void {
  if (warned.has(msg)) return;
  warned.add(msg);
  console.warn(msg);
}
