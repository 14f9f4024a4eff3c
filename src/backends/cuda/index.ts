// The `cuda` backend: every kernel of the contract on an NVIDIA GPU (native/cuda, built by
// `npm run build:cuda`), float32 compute, cuBLAS GEMMs. Kernels are asynchronous on one
// stream: buffers from alloc() are CUDA managed memory the host can read after
// synchronize(); any other typed array is staged (copied to the device and back), which is
// correct but slow and counted in cudaStats(). Never picked automatically: select it with
// PEFT_TS_BACKEND=cuda or setBackend('cuda').
import type { AttentionShape, Backend, F32 } from '../backend.js';
import { bindAddonKernels } from '../addon-kernels.js';
import { loadCuda, type CudaAddon, type CudaInfo, type CudaStats } from './native.js';

export { loadCuda, findCudaAddon, CUDA_BUILD_HINT } from './native.js';
export type { CudaAddon, CudaInfo, CudaStats } from './native.js';

const KIND = { float32: 0, int32: 1, uint16: 2, uint8: 3 } as const;

/**
 * Builds the backend object around a loaded addon (every method is the addon's own),
 * including the flash-style fused attention of native/cuda/attention.
 */
export function makeCudaBackend(n: CudaAddon): Backend & { memoryStats(): { currentBytes: number; peakBytes: number; stagedBytes: number }; resetPeakMemory(): void } {
  return {
    // The shared kernels; matmulBf16's fast (TF32 on) and exact modes: native/cuda/src/device.h gemmBf16.
    ...bindAddonKernels(n, 'cuda'),
    name: 'cuda',
    alloc: ((len: number, kind: keyof typeof KIND) => n.alloc(len, KIND[kind])) as Backend['alloc'],
    synchronize: () => n.synchronize(),
    fill: (out, value) => n.fill(out, value),
    // Read by bench/train: peak device memory of tensors (as torch.cuda.max_memory_allocated).
    memoryStats: () => { const s = n.stats(); return { currentBytes: s.liveBytes, peakBytes: s.peakLiveBytes, stagedBytes: s.stagedBytesIn + s.stagedBytesOut }; },
    resetPeakMemory: () => n.resetPeak(),
    // Flash-style fused attention (native/cuda/attention): no [T, S] matrix on the device.
    // (absent from the CPU-emulator build of the addon, which then takes the composite path)
    ...(typeof n.attention === 'function' ? {
      attention: (q: F32, k: F32, v: F32, bias: F32 | null, shape: AttentionShape, out: F32, lse: F32) => n.attention(q, k, v, bias, shape, out, lse),
      attentionBackward: (q: F32, k: F32, v: F32, bias: F32 | null, shape: AttentionShape, out: F32, lse: F32, gOut: F32, gq: F32, gk: F32, gv: F32) =>
        n.attentionBackward(q, k, v, bias, shape, out, lse, gOut, gq, gk, gv),
    } : {}),
    dequantizeAbsmax: (q, absmax, bs, code, offset, count, out) => n.dequantizeAbsmax(q, absmax, bs, code, offset, count, out),
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
