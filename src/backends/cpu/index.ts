// The `cpu` backend: the reference backend with every hot kernel replaced by the native
// addon (OpenBLAS sgemm + threaded SIMD kernels). Buffers are passed zero-copy.
import type { Backend, BinaryOp, UnaryOp } from '../backend.js';
import { referenceBackend } from '../reference/index.js';
import { loadNative, type NativeAddon } from './native.js';

export { loadNative, findAddon, BUILD_HINT } from './native.js';
export type { NativeAddon } from './native.js';

// Must match the enums in native/src/kernels.h.
export const UNARY_OPS: readonly UnaryOp[] = ['neg', 'exp', 'log', 'sqrt', 'rsqrt', 'tanh', 'relu', 'sigmoid', 'silu', 'gelu',
  'gelu_tanh', 'abs', 'square', 'recip'];
export const BINARY_OPS: readonly BinaryOp[] = ['add', 'sub', 'mul', 'div', 'max', 'min', 'pow'];

const unaryCode = Object.fromEntries(UNARY_OPS.map((o, i) => [o, i])) as Record<UnaryOp, number>;
const binaryCode = Object.fromEntries(BINARY_OPS.map((o, i) => [o, i])) as Record<BinaryOp, number>;

function code<T extends string>(table: Record<T, number>, op: T, kind: string): number {
  const c = table[op];
  if (c === undefined) throw new Error(`cpu backend: unknown ${kind} op '${op}'`);
  return c;
}

/** Builds the backend object around a loaded addon. */
export function makeCpuBackend(n: NativeAddon): Backend {
  const overrides: Partial<Backend> = {
    matmul: (a, b, c, batch, m, nn, k, tA, tB, sA, sB, alpha, beta) => n.matmul(a, b, c, batch, m, nn, k, tA, tB, sA, sB, alpha, beta),
    unary: (op, x, out) => n.unary(code(unaryCode, op, 'unary'), x, out),
    unaryBackward: (op, x, gy, gx) => n.unaryBackward(code(unaryCode, op, 'unary'), x, gy, gx),
    binary: (op, a, sa, b, sb, out, shape) => n.binary(code(binaryCode, op, 'binary'), a, sa, b, sb, out, shape),
    affine: (x, s, t, out) => n.affine(x, s, t, out),
    dropoutMask: (out, p, seed) => n.dropoutMask(out, p, seed),
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
    matmulBf16: (a, w, c, m, nn, k, tB, alpha, beta) => n.matmulBf16(a, w, c, m, nn, k, tB, alpha, beta),
    embeddingBf16: (table, ids, dim, out) => n.embeddingBf16(table, ids, dim, out),
    dequantizeNF4: (packed, absmax, bs, code, start, count, out) => n.dequantizeNF4(packed, absmax, bs, code, start, count, out),
  };
  // No native fused attention yet: the composite path (sgemm + softmax) beats the plain-loop oracle.
  return { ...referenceBackend, attention: undefined, attentionBackward: undefined, ...overrides, name: 'cpu' };
}

let backend: Backend | null = null;

/** The cpu backend (loads the addon on first use; throws with the build fix if it cannot). */
export function cpuBackend(): Backend {
  if (!backend) backend = makeCpuBackend(loadNative());
  return backend;
}

/** True when the addon can be loaded. */
export function cpuAvailable(): boolean {
  try { loadNative(); return true; } catch { return false; }
}

/** Threads used by the native kernels and OpenBLAS (env PEFT_TS_THREADS sets the default). */
export function setNumThreads(n: number): void { loadNative().setThreads(n); }
export function getNumThreads(): number { return loadNative().threads(); }

/** What the addon runs on: SIMD level, thread counts, OpenBLAS build. */
export function nativeInfo(): { simd: string; threads: number; blasThreads: number; blas: string } {
  const n = loadNative();
  return { simd: n.simd(), threads: n.threads(), blasThreads: n.blasThreads(), blas: n.blasConfig() };
}
