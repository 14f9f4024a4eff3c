// Linear4bit on a backend with its own memory and an NF4 kernel (cuda; `deferred` in the
// tests): the packed codes and the float32 scales live in backend memory, each tile of weight
// rows is dequantized by the kernel into a scratch tensor (and rounded to bf16 by the
// conversion kernels when that is the compute dtype), then multiplied, all in stream order.
// Nothing is read or written on the host, so a forward or backward never waits for the device.
import type { Backend, F32 } from '../backends/backend.js';
import { Tensor, empty } from '../tensor/tensor.js';
import { QuantState, Quantized4bit, dequantizeAbsmax, numBlocks } from './nf4.js';

/** The weight as the kernels read it: packed codes and one float32 scale per block. */
export interface DeviceWeight {
  backend: Backend;
  packed: Uint8Array;
  /**
   * Every block's absmax as float32, expanded once per layer (on the device when the backend
   * has dequantizeAbsmax): 4 bytes per block of 64 weights, 1/8 of the packed codes.
   */
  scales: Float32Array;
}

/** Compute dtypes the device path handles (float16 keeps the host rounding path). */
export type DeviceDtype = 'float32' | 'bfloat16';

/** Whether Linear4bit can run on `be` without host work: its own memory and the NF4 kernel. */
export function hasDevicePath(be: Backend): boolean {
  return typeof be.alloc === 'function' && typeof be.synchronize === 'function' && typeof be.dequantizeNF4 === 'function';
}

/** Copies the packed codes into backend memory and builds the float32 scales there. */
export function uploadWeight(be: Backend, q: Quantized4bit): DeviceWeight {
  const st = q.state, nb = numBlocks(st), nested = st.nested;
  if (st.absmax.length !== nb) throw new Error(`quant state has ${st.absmax.length} absmax values, shape [${st.shape}] needs ${nb}`);
  const alloc = be.alloc!;
  const packed = alloc(q.packed.length, 'uint8');
  const scales = alloc(nb, 'float32') as Float32Array;
  const onDevice = nested !== null && typeof be.dequantizeAbsmax === 'function';
  const qd = onDevice ? alloc(nb, 'uint8') : null;
  const n2 = onDevice ? alloc(nested!.absmax.length, 'float32') as Float32Array : null;
  be.synchronize!(); // fresh blocks may be recycled ones that queued kernels still use
  packed.set(q.packed);
  if (!nested) scales.set(st.absmax as Float32Array);
  else if (qd && n2) {
    qd.set(st.absmax as Uint8Array);
    n2.set(nested.absmax);
    be.dequantizeAbsmax!(qd, n2, nested.blocksize, nested.code, nested.offset, nb, scales);
  } else scales.set(dequantizeAbsmax(st));
  return { backend: be, packed, scales };
}

/** src rounded to bfloat16 precision (nearest even) into dst, by the conversion kernels; may alias. */
function roundBf16(be: Backend, src: F32, dst: F32): void {
  const h = empty([src.length], 'bfloat16', false);
  be.f32ToBf16(src, h.halfBuf);
  be.bf16ToF32(h.halfBuf, dst);
  h.dispose(); // reused only by later kernels, in stream order
}

/** Weight rows [r0, r1) dequantized (and rounded to the compute dtype) into the front of buf. */
function dequantRows(w: DeviceWeight, st: QuantState, inF: number, r0: number, r1: number, dtype: DeviceDtype, buf: F32): F32 {
  const bs = st.blocksize, s = r0 * inF, e = r1 * inF;
  const out = buf.subarray(0, e - s);
  w.backend.dequantizeNF4!(w.packed, w.scales.subarray(Math.floor(s / bs), Math.ceil(e / bs)), bs, st.code, s, e - s, out);
  if (dtype === 'bfloat16') roundBf16(w.backend, out, out);
  return out;
}

/** Shapes of one Linear4bit call. */
export interface DeviceCall {
  w: DeviceWeight;
  state: QuantState;
  inF: number;
  outF: number;
  /** Rows of the weight per tile. */
  rows: number;
  dtype: DeviceDtype;
}

/** y = x @ dequant(W)^T for x [..., in] (M rows), y [...lead, out]; no graph. */
export function forwardDevice(c: DeviceCall, x: Tensor, M: number, lead: number[]): Tensor {
  const { w, state, inF, outF, rows: R, dtype } = c;
  const be = w.backend;
  let xr: Tensor | null = null;
  let xb = x.buf;
  if (dtype === 'bfloat16') { xr = empty([x.size], 'float32', false); roundBf16(be, xb, xr.buf); xb = xr.buf; }
  const y = empty([...lead, outF], 'float32', false);
  const scratch = empty([Math.min(R, outF) * inF], 'float32', false);
  if (R >= outF) {
    be.matmul(xb, dequantRows(w, state, inF, 0, outF, dtype, scratch.buf), y.buf, 1, M, outF, inF, false, true, 0, 0, 1, 0);
  } else {
    // Tile r0..r1 of W gives rows r0..r1 of y^T [out, M], a contiguous slice; one transpose at the end.
    const yT = empty([outF * M], 'float32', false);
    for (let r0 = 0; r0 < outF; r0 += R) {
      const r1 = Math.min(outF, r0 + R);
      const wt = dequantRows(w, state, inF, r0, r1, dtype, scratch.buf);
      be.matmul(wt, xb, yT.buf.subarray(r0 * M, r1 * M), 1, r1 - r0, M, inF, false, true, 0, 0, 1, 0);
    }
    be.permute(yT.buf, [outF, M], [1, 0], y.buf);
    yT.dispose();
  }
  scratch.dispose();
  xr?.dispose();
  return y;
}

/** gx = gy @ dequant(W) for gy [..., out] (M rows), gx [...lead, in]. */
export function inputGradDevice(c: DeviceCall, gy: Tensor, M: number, lead: number[]): Tensor {
  const { w, state, inF, outF, rows: R, dtype } = c;
  const be = w.backend;
  const gx = empty([...lead, inF], 'float32', false);
  const scratch = empty([Math.min(R, outF) * inF], 'float32', false);
  if (R >= outF) {
    be.matmul(gy.buf, dequantRows(w, state, inF, 0, outF, dtype, scratch.buf), gx.buf, 1, M, inF, outF, false, false, 0, 0, 1, 0);
  } else {
    // gx += gy[:, r0:r1] @ W[r0:r1, :], with gy transposed once so each tile's columns are contiguous.
    const gyT = empty([outF * M], 'float32', false);
    be.permute(gy.buf, [M, outF], [1, 0], gyT.buf);
    for (let r0 = 0; r0 < outF; r0 += R) {
      const r1 = Math.min(outF, r0 + R);
      const wt = dequantRows(w, state, inF, r0, r1, dtype, scratch.buf);
      be.matmul(gyT.buf.subarray(r0 * M, r1 * M), wt, gx.buf, 1, M, inF, r1 - r0, true, false, 0, 0, 1, r0 === 0 ? 0 : 1);
    }
    gyT.dispose();
  }
  scratch.dispose();
  return gx;
}
