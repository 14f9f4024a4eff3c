// The `cuda` backend: every kernel of the contract on an NVIDIA GPU (native/cuda, built by
// `npm run build:cuda`), float32 compute, cuBLAS GEMMs. Kernels are asynchronous on one
// stream: buffers from alloc() are CUDA managed memory the host can read after
// synchronize(); any other typed array is staged (copied to the device and back), which is
// correct but slow and counted in cudaStats(). Never picked automatically: select it with
// PEFT_TS_BACKEND=cuda or setBackend('cuda').
import type { AttentionShape, Backend, BinaryOp, F32, UnaryOp } from '../backend.js';
import { BINARY_OPS, UNARY_OPS } from '../cpu/index.js';
import { loadCuda, type CudaAddon, type CudaInfo, type CudaStats } from './native.js';

export { loadCuda, findCudaAddon, CUDA_BUILD_HINT } from './native.js';
export type { CudaAddon, CudaInfo, CudaStats } from './native.js';

const unaryCode = Object.fromEntries(UNARY_OPS.map((o, i) => [o, i])) as Record<UnaryOp, number>;
const binaryCode = Object.fromEntries(BINARY_OPS.map((o, i) => [o, i])) as Record<BinaryOp, number>;
const KIND = { float32: 0, int32: 1, uint16: 2, uint8: 3 } as const;

function code<T extends string>(table: Record<T, number>, op: T, kind: string): number {
  const c = table[op];
  if (c === undefined) throw new Error(`cuda backend: unknown ${kind} op '${op}'`);
  return c;
}

/**
 * Builds the backend object around a loaded addon (every method is the addon's own),
 * including the flash-style fused attention of native/cuda/attention.
 */
export function makeCudaBackend(n: CudaAddon): Backend & { memoryStats(): { currentBytes: number; peakBytes: number; stagedBytes: number }; resetPeakMemory(): void } {
  return {
    name: 'cuda',
    alloc: ((len: number, kind: keyof typeof KIND) => n.alloc(len, KIND[kind])) as Backend['alloc'],
    synchronize: () => n.synchronize(),
    fill: (out, value) => n.fill(out, value),
    // Read by bench/train: peak device memory of tensors (as torch.cuda.max_memory_allocated).
    memoryStats: () => { const s = n.stats(); return { currentBytes: s.liveBytes, peakBytes: s.peakLiveBytes, stagedBytes: s.stagedBytesIn + s.stagedBytesOut }; },
    resetPeakMemory: () => n.resetPeak(),
    matmul: (a, b, c, batch, m, nn, k, tA, tB, sA, sB, alpha, beta) => n.matmul(a, b, c, batch, m, nn, k, tA, tB, sA, sB, alpha, beta),
    unary: (op, x, out) => n.unary(code(unaryCode, op, 'unary'), x, out),
    unaryBackward: (op, x, gy, gx) => n.unaryBackward(code(unaryCode, op, 'unary'), x, gy, gx),
    binary: (op, a, sa, b, sb, out, shape) => n.binary(code(binaryCode, op, 'binary'), a, sa, b, sb, out, shape),
    affine: (x, s, t, out) => n.affine(x, s, t, out),
    dropoutMask: (out, p, seed) => n.dropoutMask(out, p, seed),
    // Flash-style fused attention (native/cuda/attention): no [T, S] matrix on the device.
    // (absent from the CPU-emulator build of the addon, which then takes the composite path)
    ...(typeof n.attention === 'function' ? {
      attention: (q: F32, k: F32, v: F32, bias: F32 | null, shape: AttentionShape, out: F32, lse: F32) => n.attention(q, k, v, bias, shape, out, lse),
      attentionBackward: (q: F32, k: F32, v: F32, bias: F32 | null, shape: AttentionShape, out: F32, lse: F32, gOut: F32, gq: F32, gk: F32, gv: F32) =>
        n.attentionBackward(q, k, v, bias, shape, out, lse, gOut, gq, gk, gv),
    } : {}),
    axpy: (alpha, x, y) => n.axpy(alpha, x, y),
    sumMid: (x, o, m, i, out) => n.sumMid(x, o, m, i, out),
    maxMid: (x, o, m, i, out) => n.maxMid(x, o, m, i, out),
    permute: (x, shape, perm, out) => n.permute(x, shape, perm, out),
    stridedCopy: (x, off, st, shape, out) => n.stridedCopy(x, off, st, shape, out),
    stridedAdd: (g, shape, gx, off, st) => n.stridedAdd(g, shape, gx, off, st),
    softmax: (x, r, c, out) => n.softmax(x, r, c, out),
    softmaxBackward: (y, gy, r, c, gx) => n.softmaxBackward(y, gy, r, c, gx),
    logSoftmax: (x, r, c, out) => n.logSoftmax(x, r, c, out),
    logSoftmaxBackward: (y, gy, r, c, gx) => n.logSoftmaxBackward(y, gy, r, c, gx),
    crossEntropy: (x, t, r, c, ig, loss, lse) => n.crossEntropy(x, t, r, c, ig, loss, lse),
    crossEntropyBackward: (x, t, lse, gl, r, c, ig, gx) => n.crossEntropyBackward(x, t, lse, gl, r, c, ig, gx),
    layerNorm: (x, w, b, r, c, eps, out, mean, rstd) => n.layerNorm(x, w, b, r, c, eps, out, mean, rstd),
    layerNormBackward: (x, w, mean, rstd, gy, r, c, gx, gw, gb) => n.layerNormBackward(x, w, mean, rstd, gy, r, c, gx, gw, gb),
    rmsNorm: (x, w, r, c, eps, out, rstd) => n.rmsNorm(x, w, r, c, eps, out, rstd),
    rmsNormBackward: (x, w, rstd, gy, r, c, gx, gw) => n.rmsNormBackward(x, w, rstd, gy, r, c, gx, gw),
    embedding: (table, ids, dim, out) => n.embedding(table, ids, dim, out),
    embeddingBackward: (gy, ids, dim, gt) => n.embeddingBackward(gy, ids, dim, gt),
    rope: (x, cos, sin, pos, b, h, t, d, inv, out) => n.rope(x, cos, sin, pos, b, h, t, d, inv, out),
    adamw: (p, g, m, v, lr, b1, b2, eps, wd, step) => n.adamw(p, g, m, v, lr, b1, b2, eps, wd, step),
    bf16ToF32: (x, out) => n.bf16ToF32(x, out),
    f32ToBf16: (x, out) => n.f32ToBf16(x, out),
    dequantizeNF4: (packed, absmax, bs, code, start, count, out) => n.dequantizeNF4(packed, absmax, bs, code, start, count, out),
    dequantizeAbsmax: (q, absmax, bs, code, offset, count, out) => n.dequantizeAbsmax(q, absmax, bs, code, offset, count, out),
    // Frozen bf16 weights: see native/cuda/src/device.h gemmBf16 for the fast (TF32 on) and exact modes.
    matmulBf16: (a, w, c, m, nn, k, tB, alpha, beta) => n.matmulBf16(a, w, c, m, nn, k, tB, alpha, beta),
    embeddingBf16: (table, ids, dim, out) => n.embeddingBf16(table, ids, dim, out),
  };
}

/** Whether the cuda backend can run here and, when not, why (never throws). */
export function cudaStatus(): { available: boolean; reason: string | null } {
  let n: CudaAddon;
  try { n = loadCuda(); } catch (e) { return { available: false, reason: (e as Error).message }; }
  return n.status();
}

/** True when the addon is built and a CUDA device and cuBLAS can be used. */
export function cudaAvailable(): boolean { return cudaStatus().available; }

let backend: Backend | null = null;

/** The cuda backend; throws an Error saying why when it cannot run here. */
export function cudaBackend(): Backend {
  if (backend) return backend;
  const n = loadCuda();
  const s = n.status();
  if (!s.available) throw new Error(`peft-ts CUDA backend unavailable: ${s.reason}`);
  backend = makeCudaBackend(n);
  return backend;
}

/** Device, driver, cuBLAS and mode of the cuda backend (throws when unavailable). */
export function cudaInfo(): CudaInfo { return loadCuda().info(); }

/** Allocator, staging and launch counters (throws when unavailable). */
export function cudaStats(): CudaStats { return loadCuda().stats(); }

/** Synchronizes and returns every cached managed block to CUDA; the bytes freed. */
export function cudaEmptyCache(): number { return loadCuda().emptyCache(); }

/**
 * TF32 tensor-core math for float32 GEMMs (about 10 mantissa bits on the inputs, float32
 * accumulation). On by default; PEFT_TS_CUDA_TF32=0 turns it off at start-up.
 */
export function setCudaTf32(on: boolean): void { loadCuda().setTf32(on); }
