// The active backend. `cpu` (the native addon) when it loads, else `reference`.
import type { Backend } from '../backends/backend.js';
import { referenceBackend } from '../backends/reference/index.js';

let active: Backend = referenceBackend;
const known = new Map<string, () => Backend>([['reference', () => referenceBackend]]);

export function registerBackend(name: string, factory: () => Backend): void { known.set(name, factory); }

export function getBackend(): Backend { return active; }

/** Waits for queued kernels of an asynchronous backend (a no-op for cpu and reference). */
export function hostSync(): void { if (active.synchronize) active.synchronize(); }

export function setBackend(name: string): Backend {
  const f = known.get(name);
  if (!f) throw new Error(`unknown backend '${name}' (known: ${[...known.keys()].join(', ')})`);
  const next = f();
  hostSync(); // work queued on the previous backend finishes before another one takes over
  active = next;
  return active;
}

/** Runs fn with another backend active (tests compare backends this way). */
export function withBackend<T>(name: string, fn: () => T): T {
  const prev = active;
  setBackend(name);
  try { return fn(); } finally { hostSync(); active = prev; }
}
