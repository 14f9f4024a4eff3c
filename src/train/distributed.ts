// Data-parallel seam of the Trainer: a Collective moves gradients and decisions between the
// processes of one job. Under mpirun (Open MPI / MPICH / PMIx environment variables) it is the
// MPI addon (native/mpi, MPI_COMM_WORLD); otherwise a single process with no-op collectives.
// On the cuda backend gradients go through NCCL instead (./nccl.ts), bootstrapped over MPI.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { candidateRoots } from '../backends/cpu/native.js';
import { backendName } from '../backends/index.js';
import { ncclCollective } from './nccl.js';

export type ReduceBuffer = Float32Array | Float64Array | Int32Array;

export interface Collective {
  readonly rank: number;
  readonly worldSize: number;
  /** 'local' (one process), 'mpi' or 'nccl'. */
  readonly name: string;
  /** In-place sum over every rank. */
  allReduceSum(buf: ReduceBuffer): Promise<void>;
  /** In-place copy of root's buffer to every rank (same length everywhere). */
  broadcast(buf: ReduceBuffer | Uint8Array, root: number): Promise<void>;
  barrier(): Promise<void>;
  /** Ends the whole job (every rank) with this exit code. */
  abort(code: number): never;
  /**
   * allReduceGradients for collectives that keep gradients on the device (NCCL): same contract,
   * and the arrays are the backend's buffers, handed over without waiting for queued kernels.
   */
  averageGradients?(grads: Float32Array[], extra: Float64Array, bucketFloats: number): Promise<void>;
}

interface MpiAddon {
  init(): { rank: number; size: number; library: string };
  allReduceSum(buf: ReduceBuffer): Promise<void>;
  broadcast(buf: ReduceBuffer | Uint8Array, root: number): Promise<void>;
  barrier(): Promise<void>;
  abort(code: number): void;
  finalize(): void;
}

export const MPI_BUILD_HINT = 'apt-get install -y libopenmpi-dev openmpi-bin && npm run build:mpi';
const MPI_REL = join('native', 'mpi', 'build', 'Release', 'peft_mpi.node');

/** The world a launcher describes through the environment, or null when not launched by one. */
export function launcherWorld(env: NodeJS.ProcessEnv = process.env): { rank: number; size: number; localRank: number; launcher: string } | null {
  const pick = (...names: string[]) => { for (const n of names) if (env[n] !== undefined && env[n] !== '') return Number(env[n]); return undefined; };
  const size = pick('OMPI_COMM_WORLD_SIZE', 'PMI_SIZE', 'PMIX_SIZE', 'MPI_LOCALNRANKS');
  const rank = pick('OMPI_COMM_WORLD_RANK', 'PMI_RANK', 'PMIX_RANK');
  if (size === undefined || rank === undefined) return null;
  if (!Number.isInteger(size) || size < 1 || !Number.isInteger(rank) || rank < 0 || rank >= size) {
    throw new Error(`distributed: the launcher's environment is inconsistent (rank ${rank}, size ${size})`);
  }
  const localRank = pick('OMPI_COMM_WORLD_LOCAL_RANK', 'MPI_LOCALRANKID', 'PMI_LOCAL_RANK') ?? rank;
  return { rank, size, localRank, launcher: env.OMPI_COMM_WORLD_SIZE !== undefined ? 'openmpi' : 'pmi' };
}

export function findMpiAddon(): string | null {
  const forced = process.env.PEFT_TS_MPI_PATH;
  if (forced) return existsSync(forced) ? forced : null;
  for (const root of candidateRoots()) {
    const p = join(root, MPI_REL);
    if (existsSync(p)) return p;
  }
  return null;
}

class LocalCollective implements Collective {
  readonly rank = 0;
  readonly worldSize = 1;
  readonly name = 'local';
  async allReduceSum(): Promise<void> {}
  async broadcast(): Promise<void> {}
  async barrier(): Promise<void> {}
  abort(code: number): never { process.exit(code); }
}

class MpiCollective implements Collective {
  readonly name = 'mpi';
  readonly rank: number;
  readonly worldSize: number;
  readonly library: string;
  constructor(private readonly addon: MpiAddon) {
    const w = addon.init();
    this.rank = w.rank;
    this.worldSize = w.size;
    this.library = w.library.split('\n')[0].trim();
    // Open MPI reports a rank that exits without MPI_Finalize as a failure of the job.
    process.once('exit', () => addon.finalize());
  }
  allReduceSum(buf: ReduceBuffer): Promise<void> { return this.addon.allReduceSum(buf); }
  broadcast(buf: ReduceBuffer | Uint8Array, root: number): Promise<void> { return this.addon.broadcast(buf, root); }
  barrier(): Promise<void> { return this.addon.barrier(); }
  abort(code: number): never { this.addon.abort(code); process.exit(code); }
}

let current: Collective | null = null;
let base: Collective | null = null;

/**
 * The job's collective, made on first use: MPI when a launcher started this process with more
 * than one rank (MPI_Init happens here), else the one-process collective; NCCL over that when
 * the cuda backend is active with more than one rank. PEFT_TS_COLLECTIVE=nccl or mpi chooses.
 */
export function getCollective(): Collective {
  if (current) return current;
  const want = process.env.PEFT_TS_COLLECTIVE || 'auto';
  if (!['auto', 'mpi', 'nccl'].includes(want)) throw new Error(`PEFT_TS_COLLECTIVE must be mpi or nccl (or unset: NCCL on the cuda backend, else MPI), got '${want}'`);
  const b = bootstrapCollective();
  if (want === 'nccl' || (want === 'auto' && b.worldSize > 1 && backendName() === 'cuda')) {
    try {
      return (current = ncclCollective(b));
    } catch (e) {
      if (want === 'nccl') throw e;
      throw new Error(`${(e as Error).message}. Or average the gradients over MPI through host memory: PEFT_TS_COLLECTIVE=mpi`);
    }
  }
  return (current = b);
}

/** MPI under a launcher with more than one rank, else the one-process collective: what NCCL bootstraps over. */
export function bootstrapCollective(): Collective {
  if (base) return base;
  const world = launcherWorld();
  if (!world || world.size === 1) return (base = new LocalCollective());
  const file = findMpiAddon();
  if (!file) {
    throw new Error(`distributed: started by mpirun with ${world.size} ranks, but the MPI addon is not built ` +
      `(${MPI_REL}). Install and build it: ${MPI_BUILD_HINT}`);
  }
  const addon = createRequire(import.meta.url)(file) as MpiAddon;
  const c = new MpiCollective(addon);
  if (c.worldSize !== world.size || c.rank !== world.rank) {
    throw new Error(`distributed: MPI says rank ${c.rank} of ${c.worldSize}, the launcher said ${world.rank} of ${world.size}`);
  }
  return (base = c);
}

/** Replaces the job's collective (tests, or a communicator made by the caller). */
export function setCollective(c: Collective | null): void { current = c; }

/** Every rank learns root's JSON value (length first, then the bytes). */
export async function broadcastJson<T>(c: Collective, value: T | undefined, root = 0): Promise<T> {
  if (c.worldSize === 1) return value as T;
  if (value instanceof Promise) throw new TypeError('broadcastJson: got a Promise; await the value first');
  const bytes = c.rank === root ? new TextEncoder().encode(JSON.stringify(value ?? null)) : new Uint8Array(0);
  const len = new Int32Array([bytes.length]);
  await c.broadcast(len, root);
  const buf = c.rank === root ? bytes : new Uint8Array(len[0]);
  await c.broadcast(buf, root);
  return JSON.parse(new TextDecoder().decode(buf)) as T;
}

/** Gradient buckets of at most this many floats (DDP's default bucket is 25 MB). */
export const BUCKET_FLOATS = (25 << 20) / 4;

/**
 * Averages the gradients of params over every rank: packed into buckets of up to
 * BUCKET_FLOATS, summed in place, scaled by 1/worldSize and copied back. `extra` (e.g. loss
 * and token counts) rides along in the last bucket and comes back summed, not averaged.
 */
export async function allReduceGradients(c: Collective, grads: Float32Array[], extra: Float64Array, bucketFloats = BUCKET_FLOATS): Promise<void> {
  if (c.averageGradients) return c.averageGradients(grads, extra, bucketFloats);
  if (c.worldSize === 1) return;
  const inv = 1 / c.worldSize;
  for (const [i, j] of gradientBuckets(grads, bucketFloats)) {
    let n = 0;
    for (let k = i; k < j; k++) n += grads[k].length;
    const bucket = new Float32Array(n);
    let o = 0;
    for (let k = i; k < j; k++) { bucket.set(grads[k], o); o += grads[k].length; }
    await c.allReduceSum(bucket);
    o = 0;
    for (let k = i; k < j; k++) {
      const g = grads[k];
      for (let e = 0; e < g.length; e++) g[e] = bucket[o + e] * inv;
      o += g.length;
    }
  }
  if (extra.length) await c.allReduceSum(extra);
}

/** Consecutive runs [i, j) of grads holding at most bucketFloats floats (or one bigger array). */
export function gradientBuckets(grads: Float32Array[], bucketFloats: number): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < grads.length;) {
    let n = 0, j = i;
    while (j < grads.length && (n === 0 || n + grads[j].length <= bucketFloats)) n += grads[j++].length;
    out.push([i, j]);
    i = j;
  }
  return out;
}

/**
 * DistributedSampler's shard of an epoch's order: padded by repeating its head to a multiple
 * of worldSize (unless dropLast, which trims the tail), then every worldSize-th index from rank.
 * Rank r's k-th batch of size bs and the other ranks' k-th batches together hold exactly the
 * k-th global batch of size bs * worldSize of the unsharded order.
 */
export function shardOrder(order: number[], rank: number, worldSize: number, dropLast: boolean): number[] {
  if (worldSize === 1) return order;
  let idx = order;
  if (dropLast) idx = order.slice(0, order.length - (order.length % worldSize));
  else if (order.length % worldSize) {
    const pad = worldSize - (order.length % worldSize);
    idx = [...order];
    for (let i = 0; i < pad; i++) idx.push(order[i % order.length]);
  }
  const out: number[] = [];
  for (let i = rank; i < idx.length; i += worldSize) out.push(idx[i]);
  return out;
}
