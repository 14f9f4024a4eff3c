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

/** What the addon runs on: SIMD level, thread counts, OpenBLAS build. */
export function nativeInfo(): { simd: string; threads: number; blasThreads: number; blas: string } {
  const n = loadNative();
  return { simd: n.simd(), threads: n.threads(), blasThreads: n.blasThreads(), blas: n.blasConfig() };
}
