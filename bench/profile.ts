// --profile for the benches: runs a function once with every backend call timed (GEMMs keyed
// by their shape) and prints the calls that took longest; what is not inside a backend call
// is the framework (graph, allocation, JS glue).
import { getBackend, setBackend } from '../src/tensor/index.js';
import { registerBackend } from '../src/tensor/registry.js';
import { backendName } from '../src/backends/index.js';
import type { Backend } from '../src/backends/backend.js';

export interface ProfileRow { call: string; calls: number; ms: number }
export interface Profile { totalMs: number; insideMs: number; rows: ProfileRow[] }

function key(name: string, xs: unknown[]): string {
  if (name === 'matmul' || name === 'matmulAutocast') {
    const [, , , b, m, n, k, tA, tB] = xs;
    return `${name} ${b}x[${m}x${k}]x[${k}x${n}]${tA ? ' tA' : ''}${tB ? ' tB' : ''}`;
  }
  if (name === 'matmulBf16') {
    const [, , , m, n, k, tB, , , roundA] = xs;
    return `${name} [${m}x${k}]x[${k}x${n}]${tB ? ' tB' : ''}${roundA ? ' roundA' : ''}`;
  }
  return name;
}

/** base with every method timed: record(name, args, ms) after each call. */
export function timedBackend(base: Backend, record: (name: string, args: unknown[], ms: number) => void): Backend {
  const timed: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(base)) {
    if (typeof f !== 'function') continue;
    timed[name] = (...xs: unknown[]) => {
      const t0 = performance.now();
      try { return (f as (...y: unknown[]) => unknown).apply(base, xs); } finally { record(name, xs, performance.now() - t0); }
    };
  }
  return { ...base, ...timed } as Backend;
}

export function profileCalls(fn: () => void, top = 40): Profile {
  const base = getBackend();
  const acc = new Map<string, ProfileRow>();
  const timed = timedBackend(base, (name, xs, ms) => {
    const k = key(name, xs);
    const e = acc.get(k) ?? { call: k, calls: 0, ms: 0 };
    e.ms += ms; e.calls++; acc.set(k, e);
  });
  registerBackend('profiled', () => timed);
  const prev = backendName();
  setBackend('profiled');
  const t0 = performance.now();
  try { fn(); } finally { setBackend(prev); }
  const totalMs = performance.now() - t0;
  const rows = [...acc.values()].sort((a, b) => b.ms - a.ms);
  const insideMs = rows.reduce((s, r) => s + r.ms, 0);
  console.log(`\nprofile: ${totalMs.toFixed(1)} ms, inside backend calls ${insideMs.toFixed(1)} ms, framework ${(totalMs - insideMs).toFixed(1)} ms`);
  console.log('| call | calls | ms | share |\n|---|---:|---:|---:|');
  for (const r of rows.slice(0, top)) console.log(`| ${r.call} | ${r.calls} | ${r.ms.toFixed(2)} | ${(100 * r.ms / totalMs).toFixed(1)}% |`);
  return { totalMs, insideMs, rows };
}
