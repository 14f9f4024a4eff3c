// The `cpu` backend: the reference backend with every hot kernel replaced by the native
// addon (OpenBLAS sgemm + threaded SIMD kernels). Buffers are passed zero-copy.
import type { Backend } from '../backend.js';
import { bindAddonKernels } from '../addon-kernels.js';
import { referenceBackend } from '../reference/index.js';
import { loadNative, type NativeAddon } from './native.js';

export { loadNative, findAddon, BUILD_HINT } from './native.js';
export type { NativeAddon } from './native.js';

export { UNARY_OPS, BINARY_OPS } from '../addon-kernels.js';

/** Builds the backend object around a loaded addon. */
export function makeCpuBackend(n: NativeAddon): Backend {
  // No native fused attention yet: the composite path (sgemm + softmax) beats the plain-loop oracle.
  return { ...referenceBackend, attention: undefined, attentionBackward: undefined, ...bindAddonKernels(n, 'cpu'), name: 'cpu' };
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

/**
 * What the addon runs on: SIMD level, thread counts, OpenBLAS build, and bf16: the path of
 * autocast's bf16 GEMMs ('onednn:<oneDNN impl>', e.g. 'onednn:brg:avx512_core_amx_bf16', or
 * 'fp32-fallback', with bf16Why saying why oneDNN is not used).
 */
export function nativeInfo(): { simd: string; threads: number; blasThreads: number; blas: string; bf16: string; bf16Why: string } {
  const n = loadNative();
  const g = n.bf16Gemm();
  return { simd: n.simd(), threads: n.threads(), blasThreads: n.blasThreads(), blas: n.blasConfig(), bf16: g.path, bf16Why: g.whyNot };
}

/**
 * Chooses the bf16 GEMM path of autocast: 'auto' (oneDNN where the CPU and libdnnl allow) or
 * 'fallback' (bf16-rounded operands through float32 sgemm; tests use it to check both).
 * PEFT_TS_BF16_GEMM=fallback sets it at load. Returns the path now active.
 */
export function setBf16Gemm(mode: 'auto' | 'fallback'): string { return loadNative().bf16Gemm(mode).path; }
