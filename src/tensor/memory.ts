// tidy(): every tensor made inside is disposed when the scope ends, except what fn returns
// and what keep() marks. Leaf gradients and parameters are never in a scope's list.
import type { Tensor } from './tensor.js';

const scopes: Set<Tensor>[] = [];

export function currentScope(): Set<Tensor> | undefined { return scopes[scopes.length - 1]; }

export function trackTensor(t: Tensor): void {
  const s = currentScope();
  if (s) s.add(t);
}

/** Removes t from every open scope so it survives them. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

function collect(v: unknown, out: Set<Tensor>, depth = 0): void {
  if (!v || depth > 4) return;
  if (typeof v === 'object' && 'shape' in (v as object) && 'dispose' in (v as object)) { out.add(v as Tensor); return; }
  if (Array.isArray(v)) { for (const x of v) collect(x, out, depth + 1); return; }
  if (typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
    for (const x of Object.values(v as object)) collect(x, out, depth + 1);
  }
}

export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let res: T;
  try {
    res = fn();
  } finally {
    scopes.pop();
  }
  const kept = new Set<Tensor>();
  collect(res, kept);
  for (const t of scope) {
    if (kept.has(t)) { const parent = currentScope(); if (parent) parent.add(t); continue; }
    if (t.requiresGrad && t.isLeaf && !t.graphFreed) { continue; } // parameters made inside a scope live on
    t.dispose();
  }
  return res;
}

/** Async variant; the scope stays open across awaits, so do not interleave two. */
export async function tidyAsync<T>(fn: () => Promise<T>): Promise<T> {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let res: T;
  try {
    res = await fn();
  } finally {
    const i = scopes.lastIndexOf(scope);
    if (i >= 0) scopes.splice(i, 1);
  }
  const kept = new Set<Tensor>();
  collect(res, kept);
  for (const t of scope) if (!kept.has(t) && !(t.requiresGrad && t.isLeaf && !t.graphFreed)) t.dispose();
  return res;
}
