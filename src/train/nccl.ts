// NCCL for data-parallel training on the cuda backend (native/cuda/src/nccl.cc: libnccl.so.2
// opened at run time). Float32 buffers (gradients, the start-up broadcast of the trainable
// weights) move between GPUs, on the backend's stream; everything small (JSON, barriers,
// token counts, logged losses) and the communicator's unique id go over the bootstrap
// collective: MPI under mpirun, which stays the launcher, or nothing for a single process.
import { cudaStatus, loadCuda } from '../backends/cuda/index.js';
import { gradientBuckets, type Collective, type ReduceBuffer } from './distributed.js';

export const NCCL_ID_BYTES = 128;

/** The NCCL entry points of the cuda addon. */
export interface NcclAddon {
  /** Loads libnccl.so.2 (once): "<path> (NCCL x.y.z)". Throws, naming PEFT_TS_NCCL_LIB, when it cannot. */
  ncclLibrary(): string;
  ncclUniqueId(): Uint8Array;
  /** ncclCommInitRank on this process's device (blocks until every rank joined). */
  ncclInit(id: Uint8Array, nranks: number, rank: number): { device: number; library: string };
  /** In place: factor * (sum over ranks), packed into one device bucket, on the stream. */
  ncclAllReduce(bufs: Float32Array[], factor: number): void;
  ncclBroadcast(buf: Float32Array, root: number): void;
  /** ncclCommDestroy, or ncclCommAbort when abort. */
  ncclFinish(abort: boolean): void;
}

export class NcclCollective implements Collective {
  readonly name = 'nccl';
  readonly rank: number;
  readonly worldSize: number;
  /** Path and version of the libnccl that was loaded. */
  readonly library: string;
  /** This rank's device, once the communicator exists (the first float32 collective). */
  device: number | null = null;
  private ready: Promise<void> | null = null;

  constructor(readonly bootstrap: Collective, private readonly addon: NcclAddon) {
    this.rank = bootstrap.rank;
    this.worldSize = bootstrap.worldSize;
    this.library = addon.ncclLibrary();
    process.once('exit', () => { try { addon.ncclFinish(false); } catch { /* exiting anyway */ } });
  }

  /**
   * The communicator, made on the first float32 collective, which every rank reaches in the
   * same order: rank 0's ncclGetUniqueId travels over the bootstrap, then ncclCommInitRank.
   */
  private comm(): Promise<void> {
    return (this.ready ??= (async () => {
      const id = this.rank === 0 ? this.addon.ncclUniqueId() : new Uint8Array(NCCL_ID_BYTES);
      await this.bootstrap.broadcast(id, 0);
      this.device = this.addon.ncclInit(id, this.worldSize, this.rank).device;
    })());
  }

  async allReduceSum(buf: ReduceBuffer): Promise<void> {
    if (!(buf instanceof Float32Array)) return this.bootstrap.allReduceSum(buf);
    await this.comm();
    this.addon.ncclAllReduce([buf], 1);
  }

  async broadcast(buf: ReduceBuffer | Uint8Array, root: number): Promise<void> {
    if (!(buf instanceof Float32Array)) return this.bootstrap.broadcast(buf, root);
    await this.comm();
    this.addon.ncclBroadcast(buf, root);
  }

  barrier(): Promise<void> { return this.bootstrap.barrier(); }

  /** DDP's buckets, each one ncclAllReduce (sum) and a scale by 1/worldSize on the device. */
  async averageGradients(grads: Float32Array[], extra: Float64Array, bucketFloats: number): Promise<void> {
    await this.comm();
    for (const [i, j] of gradientBuckets(grads, bucketFloats)) this.addon.ncclAllReduce(grads.slice(i, j), 1 / this.worldSize);
    if (extra.length) await this.bootstrap.allReduceSum(extra);
  }

  abort(code: number): never {
    try { this.addon.ncclFinish(true); } catch { /* ending the job regardless */ }
    return this.bootstrap.abort(code);
  }
}

/**
 * The NCCL collective over `bootstrap` (the job's MPI collective under mpirun). Throws, saying
 * why, when the cuda backend cannot run here or libnccl.so.2 cannot be loaded
 * (PEFT_TS_NCCL_LIB names the library file).
 */
export function ncclCollective(bootstrap: Collective): NcclCollective {
  const s = cudaStatus();
  if (!s.available) throw new Error(`NCCL collective: needs the cuda backend on a GPU, which cannot run here: ${s.reason}`);
  const addon = loadCuda() as unknown as NcclAddon;
  if (typeof addon.ncclLibrary !== 'function') throw new Error('NCCL collective: the cuda addon predates NCCL support; rebuild it (npm run build:cuda)');
  try {
    return new NcclCollective(bootstrap, addon);
  } catch (e) {
    throw new Error(`NCCL collective: ${(e as Error).message.replace(/^peft_cuda: /, '')}`);
  }
}
