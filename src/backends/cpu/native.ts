// Locates and loads the Node-API addon (native/build/Release/peft_native.node). The addon
// links OpenBLAS dynamically, so both "not built" and "libopenblas missing" end in an
// error that names the fix.
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddonKernels } from '../addon-kernels.js';

export const BUILD_HINT = 'sudo apt-get install -y build-essential libopenblas-dev python3, then: npm rebuild peft-ts (in a peft-ts checkout: npm run build:native)';
const REL = join('native', 'build', 'Release', 'peft_native.node');

type F32 = Float32Array;

/** The raw addon surface (op codes are indices into UNARY_OPS / BINARY_OPS). */
export interface NativeAddon extends AddonKernels {
  /** cblas_sgemm, row-major, exactly as OpenBLAS takes it (for benchmarks). */
  sgemmRaw(transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number, a: F32, lda: number,
    b: F32, ldb: number, beta: number, c: F32, ldc: number): void;
  /** Sets matmulBf16's tile of W (elements; 0 only reads it); returns the previous value. */
  bf16TileElements(n: number): number;
  setThreads(n: number): void;
  threads(): number;
  blasThreads(): number;
  /** 'avx512' or 'avx2': the kernel table picked for this CPU. */
  simd(): string;
  blasConfig(): string;
  /** The bf16 (autocast) GEMM path; with a mode ('auto' | 'fallback') sets it first. */
  bf16Gemm(mode?: 'auto' | 'fallback'): { path: string; whyNot: string };
}

/** Directories that may hold the package root (with native/ under it). */
export function candidateRoots(): string[] {
  const roots: string[] = [];
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, 'package.json'))) roots.push(dir);
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  roots.push(process.cwd());
  return [...new Set(roots.map((r) => resolve(r)))];
}

export function findAddon(): string | null {
  // An explicit path is the only place looked at (tests use it to simulate a missing build).
  const forced = process.env.PEFT_TS_NATIVE_PATH;
  if (forced) return existsSync(forced) ? resolve(forced) : null;
  for (const root of candidateRoots()) {
    const p = join(root, REL);
    if (existsSync(p)) return p;
  }
  return null;
}

/** The OpenBLAS kernel family this CPU can run, from /proc/cpuinfo (Linux x86-64 only). */
export function blasCoreType(): string | undefined {
  if (process.platform !== 'linux' || process.arch !== 'x64') return undefined;
  let flags: Set<string>;
  try {
    const m = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (!m) return undefined;
    flags = new Set(m[1].trim().split(/\s+/));
  } catch { return undefined; }
  if (['avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512cd'].every((f) => flags.has(f))) return 'SKYLAKEX';
  if (['avx2', 'fma'].every((f) => flags.has(f))) return 'HASWELL';
  return undefined;
}

let cached: NativeAddon | null = null;

/** Loads the addon once; throws an Error naming the fix when it is missing or cannot load. */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  const path = findAddon();
  if (!path) {
    const where = process.env.PEFT_TS_NATIVE_PATH ?? `${REL} under ${candidateRoots().join(', ')}`;
    throw new Error(`peft-ts native CPU backend is not built (looked for ${where}). ` +
      `Build it with: ${BUILD_HINT}`);
  }
  // OpenBLAS reads these when the library loads: keep its threads from spinning long
  // after each GEMM (they would steal cores from our own kernels) unless the user chose.
  process.env.OPENBLAS_THREAD_TIMEOUT ??= '4';
  // OpenBLAS 0.3.21 does not know newer Xeons (Sapphire Rapids) and falls back to its
  // generic "Prescott" kernels, ~5x slower: name the core from the CPU's own flags.
  const core = blasCoreType();
  if (core) process.env.OPENBLAS_CORETYPE ??= core;
  try {
    cached = createRequire(import.meta.url)(path) as NativeAddon;
  } catch (e) {
    const msg = (e as Error).message;
    const blas = /openblas|cblas/i.test(msg) ? ' OpenBLAS could not be loaded.' : '';
    throw new Error(`peft-ts native CPU backend at ${path} failed to load:${blas} ${msg}. Fix: ${BUILD_HINT}`);
  }
  return cached;
}
