// Backend selection. Importing this module registers `cpu` and makes it active when the
// native addon loads, unless PEFT_TS_BACKEND=reference; otherwise the reference backend
// stays active and one line on stderr says how to build the addon. `cuda` is registered
// too but only ever selected explicitly (PEFT_TS_BACKEND=cuda or setBackend('cuda')).
import { getBackend, registerBackend, setBackend } from '../tensor/registry.js';
import { BUILD_HINT, cpuAvailable, cpuBackend } from './cpu/index.js';
import { cudaBackend } from './cuda/index.js';
import { referenceBackend } from './reference/index.js';
import { makeDeferredBackend } from './deferred/index.js';

export type { Backend, BinaryOp, UnaryOp, F32, I32 } from './backend.js';
export { referenceBackend } from './reference/index.js';
export { makeDeferredBackend } from './deferred/index.js';
export { cpuBackend, cpuAvailable, nativeInfo, setNumThreads, getNumThreads, setBf16Gemm } from './cpu/index.js';
export { cudaBackend, cudaAvailable, cudaStatus, cudaInfo, cudaStats, cudaEmptyCache, setCudaTf32 } from './cuda/index.js';
export type { CudaInfo, CudaStats } from './cuda/index.js';

registerBackend('cpu', cpuBackend);
registerBackend('cuda', cudaBackend);
// Test-only: queues kernels until synchronize() to catch host reads that skip the wait.
let deferred: ReturnType<typeof makeDeferredBackend> | null = null;
registerBackend('deferred', () => (deferred ??= makeDeferredBackend(cpuAvailable() ? cpuBackend() : referenceBackend)));

let initialized = false;
let warned = false;

/**
 * Picks the active backend: PEFT_TS_BACKEND if set ('reference', 'cpu' or 'cuda'; 'cpu' and
 * 'cuda' throw, saying why, when they cannot run), else cpu when it loads, else reference with a one-line warning.
 * Returns the active backend's name. Safe to call again.
 */
export function initBackend(): string {
  initialized = true;
  const want = process.env.PEFT_TS_BACKEND;
  if (want) return setBackend(want).name;
  try {
    setBackend('cpu');
  } catch (e) {
    if (!warned) {
      warned = true;
      const why = (e as Error).message.includes('not built') ? 'native CPU backend not built' : 'native CPU backend failed to load';
      process.stderr.write(`peft-ts: ${why}; using the slow reference backend. Build it with: ${BUILD_HINT}\n`);
    }
  }
  return getBackend().name;
}

/** Name of the active backend ('cpu', 'reference' or 'cuda'). */
export function backendName(): string {
  if (!initialized) initBackend();
  return getBackend().name;
}

initBackend();
