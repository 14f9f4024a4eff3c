// Locates and loads the CUDA addon (native/cuda/build/peft_cuda.node), which only
// `npm run build:cuda` builds. Loading it never touches the GPU: status() then says whether
// a device and cuBLAS can be used, and why not.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { AnyBuf, AttentionShape } from '../backend.js';
import { candidateRoots } from '../cpu/native.js';
import type { AddonKernels } from '../addon-kernels.js';

export const CUDA_BUILD_HINT = 'npm run build:cuda (needs nvcc from CUDA 13 and the cuBLAS headers; see native/cuda/README.md)';
const REL = join('native', 'cuda', 'build', 'peft_cuda.node');

type F32 = Float32Array;

/** Counters of the addon: its managed-memory block cache, staging of foreign arrays, launches. */
export interface CudaStats {
  /** Managed memory held (live + cached blocks). */
  reservedBytes: number;
  liveBytes: number;
  cachedBytes: number;
  /** Highest liveBytes / reservedBytes since load or resetPeak(). */
  peakLiveBytes: number;
  peakReservedBytes: number;
  blocks: number;
  allocs: number;
  reuses: number;
  rawAllocs: number;
  rawFrees: number;
  /** Arrays not from alloc() that kernels had to copy to the device (and back, for outputs). */
  stagedArrays: number;
  stagedBytesIn: number;
  stagedBytesOut: number;
  launches: number;
  gemms: number;
  syncs: number;
  /** Pool growths refused because the device lacked the free memory (cudaMemGetInfo minus the reserve). */
  refusedGrowths: number;
}

export interface CudaInfo {
  device: number;
  name: string;
  computeCapability: string;
  multiprocessors: number;
  totalMemory: number;
  concurrentManagedAccess: boolean;
  driverVersion: number;
  runtimeVersion: number;
  /** Path and version of the libcublas that was loaded. */
  cublas: string;
  tf32: boolean;
  prefetch: boolean;
  /** cudaMemGetInfo's free bytes now. */
  freeMemory: number;
  /** Bytes the pool leaves free on the device (PEFT_TS_CUDA_RESERVE_MB, default 512). */
  reserveBytes: number;
}

/** The raw addon surface (op codes are indices into UNARY_OPS / BINARY_OPS). */
export interface CudaAddon extends AddonKernels {
  attention(q: F32, k: F32, v: F32, bias: F32 | null, shape: AttentionShape, out: F32, lse: F32): void;
  attentionBackward(q: F32, k: F32, v: F32, bias: F32 | null, shape: AttentionShape, out: F32, lse: F32, gOut: F32,
    gq: F32, gk: F32, gv: F32): void;
  dequantizeAbsmax(q: Uint8Array, absmax: F32, blocksize: number, code: F32, offset: number, n: number, out: F32): void;
  /** kind: 0 float32, 1 int32, 2 uint16, 3 uint8. CUDA managed memory, contents unspecified. */
  alloc(n: number, kind: number): AnyBuf | Uint8Array;
  fill(out: AnyBuf, value: number): void;
  synchronize(): void;
  /** True when the array lies in memory from alloc() (kernels use it without staging). */
  isDeviceArray(a: AnyBuf | Uint8Array): boolean;
  stats(): CudaStats;
  resetPeak(): void;
  /** Synchronizes and frees every cached block; returns the bytes freed. */
  emptyCache(): number;
  /** Never throws: whether a CUDA device and cuBLAS can be used, and why not. */
  status(): { available: boolean; reason: string | null };
  info(): CudaInfo;
  setTf32(on: boolean): void;
}

export function findCudaAddon(): string | null {
  // An explicit path is the only place looked at (tests use it to simulate a missing build).
  const forced = process.env.PEFT_TS_CUDA_PATH;
  if (forced) return existsSync(forced) ? resolve(forced) : null;
  for (const root of candidateRoots()) {
    const p = join(root, REL);
    if (existsSync(p)) return p;
  }
  return null;
}

let cached: CudaAddon | null = null;

/** Loads the addon once; throws an Error naming the fix when it is missing or cannot load. */
export function loadCuda(): CudaAddon {
  if (cached) return cached;
  const path = findCudaAddon();
  if (!path) {
    const where = process.env.PEFT_TS_CUDA_PATH ?? `${REL} under ${candidateRoots().join(', ')}`;
    throw new Error(`peft-ts CUDA backend is not built (looked for ${where}). Build it with: ${CUDA_BUILD_HINT}`);
  }
  try {
    cached = createRequire(import.meta.url)(path) as CudaAddon;
  } catch (e) {
    throw new Error(`peft-ts CUDA backend at ${path} failed to load: ${(e as Error).message}. Rebuild it with: ${CUDA_BUILD_HINT}`);
  }
  return cached;
}
