// One rank of test/nccl.test.ts's collective checks, on the cuda backend (alone, or under
// mpirun): the job's collective must be NCCL; sums, broadcasts and bucketed gradient averages
// of device buffers (and of plain arrays, staged) must give the values every rank can compute.
// Exits non-zero on any mismatch; prints one line `nccl-ok {...}` on success.
import assert from 'node:assert/strict';
import { getBackend, setBackend } from '../../src/tensor/registry.js';
import { cudaStats } from '../../src/backends/index.js';
import { allReduceGradients, getCollective } from '../../src/train/distributed.js';
import { NcclCollective } from '../../src/train/nccl.js';

setBackend('cuda');
const b = getBackend();
const c = getCollective();
assert.ok(c instanceof NcclCollective, `expected the NCCL collective, got ${c.name}`);
const { rank, worldSize: n } = c;
const dev = (vals: number[]): Float32Array => { const a = b.alloc!(vals.length, 'float32') as Float32Array; a.set(vals); return a; };
const ranks = [...Array(n).keys()];
const sumOver = (f: (r: number) => number) => ranks.reduce((s, r) => s + f(r), 0);
const check = (got: ArrayLike<number>, want: number[], what: string) => {
  for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) <= 1e-6 * Math.max(1, Math.abs(want[i])), `${what}[${i}]: ${got[i]} vs ${want[i]}`);
};

// allReduceSum of a device array (in place) and of a plain one (staged through the device).
const len = 1000;
const x = dev([...Array(len).keys()].map((i) => (rank + 1) * (i + 1)));
await c.allReduceSum(x);
b.synchronize!();
check(x, [...Array(len).keys()].map((i) => sumOver((r) => (r + 1) * (i + 1))), 'device allReduceSum');
const staged0 = cudaStats().stagedArrays;
const h = Float32Array.from([rank, 2 * rank + 0.5]);
await c.allReduceSum(h);
check(h, [sumOver((r) => r), sumOver((r) => 2 * r + 0.5)], 'host allReduceSum');
assert.ok(cudaStats().stagedArrays > staged0, 'a plain array is staged');

// broadcast from the last rank; small values over the bootstrap (MPI) collective.
const y = dev([rank, rank * 10, 7]);
await c.broadcast(y, n - 1);
b.synchronize!();
check(y, [n - 1, (n - 1) * 10, 7], 'broadcast');
const f64 = Float64Array.from([rank + 0.25]);
await c.allReduceSum(f64);
check(f64, [sumOver((r) => r + 0.25)], 'float64 allReduceSum (bootstrap)');

// Gradients: three arrays in buckets of at most 8 floats ([g1, g2] then [g3]), averaged;
// the extras come back summed.
const g1 = dev([1, 2, 3].map((v) => v * (rank + 1))), g2 = Float32Array.from([4, 5].map((v) => v + rank));
const g3 = dev([...Array(9).keys()].map((i) => i - rank));
const extra = Float64Array.from([10 + rank, rank === 0 ? 1 : 0]);
await allReduceGradients(c, [g1, g2, g3], extra, 8);
b.synchronize!();
const mean = (f: (r: number) => number) => sumOver(f) / n;
check(g1, [1, 2, 3].map((v) => mean((r) => v * (r + 1))), 'g1');
check(g2, [4, 5].map((v) => mean((r) => v + r)), 'g2');
check(g3, [...Array(9).keys()].map((i) => mean((r) => i - r)), 'g3');
check(extra, [sumOver((r) => 10 + r), 1], 'extra');
assert.equal(c.device, rank, 'each rank uses the GPU of its local rank');
console.log(`nccl-ok ${JSON.stringify({ rank, worldSize: n, device: c.device, library: c.library })}`);
