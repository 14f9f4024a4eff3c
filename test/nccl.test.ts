// Data-parallel training over NCCL on the cuda backend (src/train/nccl.ts, native/cuda/src/nccl.cc).
// Everywhere: the collective's routing and bootstrap against a scripted addon, and the clear
// error without the cuda backend. Where the cuda addon runs (a GPU, or the CPU emulator of
// `npm run test:cuda-emu` with its fake libnccl.so.2 over shared memory): a missing
// libnccl.so.2, NCCL in one process, and under `mpirun -np 2` the collective's sums and
// broadcasts, training to the adapter of one process with the same global batch, and an NCCL
// error on one rank ending every rank.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cudaInfo, cudaStatus } from '../src/backends/index.js';
import { loadCuda } from '../src/backends/cuda/index.js';
import { allReduceGradients, findMpiAddon, type Collective } from '../src/train/distributed.js';
import { NcclCollective, type NcclAddon } from '../src/train/nccl.js';
import { readSafetensors } from '../src/io/safetensors.js';

let root = dirname(fileURLToPath(import.meta.url));
while (!existsSync(join(root, 'package.json'))) root = dirname(root);
const ncclWorker = join(root, 'dist', 'test', 'helpers', 'nccl_worker.js');
const dpWorker = join(root, 'dist', 'test', 'helpers', 'dp_worker.js');
const distributed = join(root, 'dist', 'src', 'train', 'distributed.js');

/** A scripted addon and bootstrap for `ranks` simulated ranks: every call is recorded. */
function scripted(rank: number, ranks: number) {
  const calls: string[] = [];
  const addon: NcclAddon = {
    ncclLibrary: () => 'libnccl.so.2 (NCCL test)',
    ncclUniqueId: () => { calls.push('uniqueId'); return new Uint8Array(128).fill(7); },
    ncclInit: (id, n, r) => { calls.push(`init ${id[0]} ${id[127]} ${n} ${r}`); return { device: r, library: 'x' }; },
    // The other ranks contribute 1 per element.
    ncclAllReduce: (bufs, f) => { calls.push(`allReduce ${bufs.map((b) => b.length).join('+')} x${f}`); for (const b of bufs) for (let i = 0; i < b.length; i++) b[i] = (b[i] + ranks - 1) * f; },
    ncclBroadcast: (buf, r) => { calls.push(`broadcast ${buf.length} from ${r}`); buf.fill(r); },
    ncclFinish: (abort) => { calls.push(abort ? 'abort' : 'destroy'); },
  };
  const boot: Collective = {
    rank, worldSize: ranks, name: 'boot',
    async allReduceSum(b) { calls.push(`boot allReduceSum ${b.constructor.name}`); for (let i = 0; i < b.length; i++) b[i] *= ranks; },
    async broadcast(b, r) { calls.push(`boot broadcast ${b.constructor.name} ${b.length} from ${r}`); if (rank !== r) b.fill(7); },
    async barrier() { calls.push('boot barrier'); },
    abort(code) { calls.push(`boot abort ${code}`); throw new Error('aborted'); },
  };
  return { calls, addon, boot };
}

test('NcclCollective: rank 0\'s unique id over the bootstrap first, float32 on NCCL, the rest on the bootstrap', async () => {
  for (const rank of [0, 1]) {
    const { calls, addon, boot } = scripted(rank, 2);
    const c = new NcclCollective(boot, addon);
    assert.equal(c.worldSize, 2);
    assert.equal(c.library, 'libnccl.so.2 (NCCL test)');
    assert.deepEqual(calls, [], 'no communicator before the first float32 collective');
    const w = Float32Array.from([5, 6]);
    await c.broadcast(w, 0);
    assert.deepEqual([...w], [0, 0]);
    await c.barrier();
    const f64 = Float64Array.from([1.5]);
    await c.allReduceSum(f64);
    assert.deepEqual([...f64], [3]);
    const bytes = new Uint8Array(3);
    await c.broadcast(bytes, 0);
    // Buckets of at most 4 floats: [3] then [2, 2]; scaled by 1/2 on the device; extras summed on the bootstrap.
    const g = [Float32Array.from([1, 2, 3]), Float32Array.from([3, 3]), Float32Array.from([5, 7])];
    const extra = Float64Array.from([4]);
    await allReduceGradients(c, g, extra, 4);
    assert.deepEqual(g.map((a) => [...a]), [[1, 1.5, 2], [2, 2], [3, 4]]);
    assert.deepEqual([...extra], [8]);
    assert.throws(() => c.abort(3), /aborted/);
    assert.deepEqual(calls, [
      ...(rank === 0 ? ['uniqueId'] : []), 'boot broadcast Uint8Array 128 from 0', `init 7 7 2 ${rank}`, 'broadcast 2 from 0',
      'boot barrier', 'boot allReduceSum Float64Array', 'boot broadcast Uint8Array 3 from 0',
      'allReduce 3 x0.5', 'allReduce 2+2 x0.5', 'boot allReduceSum Float64Array', 'abort', 'boot abort 3',
    ]);
    assert.equal(c.device, rank);
  }
});

test('allReduceGradients hands the buffers to a device collective, even with one rank', async () => {
  const { calls, addon, boot } = scripted(0, 1);
  const c = new NcclCollective(boot, addon);
  const g = Float32Array.from([2, 4]);
  await allReduceGradients(c, [g], new Float64Array(0));
  assert.deepEqual(calls, ['uniqueId', 'boot broadcast Uint8Array 128 from 0', 'init 7 7 1 0', 'allReduce 2 x1']);
  assert.deepEqual([...g], [2, 4]);
});

function getCollectiveIn(env: Record<string, string>) {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e',
    `const m = await import(${JSON.stringify(distributed)}); console.log(m.getCollective().name);`],
  { env: { ...process.env, PEFT_TS_BACKEND: '', ...env }, encoding: 'utf8' });
  return { out: r.stdout.trim(), err: r.stderr, status: r.status };
}

test('NCCL asked for without the cuda backend, or an unknown PEFT_TS_COLLECTIVE: a clear error', () => {
  const r = getCollectiveIn({ PEFT_TS_COLLECTIVE: 'nccl', PEFT_TS_CUDA_PATH: '/nonexistent/peft_cuda.node' });
  assert.equal(r.status, 1);
  assert.match(r.err, /NCCL collective: needs the cuda backend on a GPU, which cannot run here: peft-ts CUDA backend is not built.*npm run build:cuda/);
  const bad = getCollectiveIn({ PEFT_TS_COLLECTIVE: 'gloo' });
  assert.equal(bad.status, 1);
  assert.match(bad.err, /PEFT_TS_COLLECTIVE must be mpi or nccl .* got 'gloo'/);
  const plain = getCollectiveIn({ PEFT_TS_COLLECTIVE: '' });
  assert.equal(plain.status, 0, plain.err);
  assert.equal(plain.out, 'local', 'one process on the cpu backend: no NCCL');
});

// ---- where the cuda addon runs ------------------------------------------------------------
const cuda = cudaStatus();
const emu = cuda.available && /emulator/.test(cudaInfo().name);
const noCuda = 'cuda backend unavailable (npm run test:cuda-emu runs this on the CPU emulator)';
let ncclWhy: string | false = false;
if (!cuda.available) ncclWhy = noCuda;
else {
  try { (loadCuda() as unknown as NcclAddon).ncclLibrary(); } catch (e) { ncclWhy = `libnccl.so.2 not loadable here: ${(e as Error).message}`; }
}
const deferred = process.env.PEFT_TS_BACKEND === 'deferred' ? 'process orchestration: runs once, on the cpu backend' : false;
const skipCuda = deferred || (cuda.available ? false : noCuda);
const skipOne = deferred || ncclWhy;
const mpirun = spawnSync('mpirun', ['--version'], { encoding: 'utf8' }).status === 0;
// Two ranks need two devices: the emulator has as many as PEFT_TS_CUDA_EMU_DEVICES says; on
// GPUs set PEFT_TS_TEST_NCCL_NP=2 where the machine has two (=1 skips them on the emulator).
const np = process.env.PEFT_TS_TEST_NCCL_NP || (emu ? '2' : '1');
const skipTwo = skipOne || (np !== '2' ? 'PEFT_TS_TEST_NCCL_NP=2 runs the 2-rank jobs (two GPUs, or the emulator)'
  : !mpirun ? 'mpirun not found (apt-get install openmpi-bin libopenmpi-dev)'
    : !findMpiAddon() ? 'MPI addon not built (npm run build:mpi)' : false);
if (!cuda.available) process.stdout.write(`# nccl: ${cuda.reason}\n`);
for (const [what, why] of [['cuda', skipCuda], ['one-process NCCL', skipOne], ['2-rank NCCL', skipTwo]]) {
  if (why) process.stdout.write(`# nccl: ${what} tests not exercised: ${why}\n`);
}

const env = {
  ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_rmaps_base_oversubscribe: '1',
  PEFT_TS_ROOT: root, PEFT_TS_BACKEND: 'cuda', ...(emu ? { PEFT_TS_CUDA_EMU_DEVICES: '2' } : {}),
};
function mpi(args: string[], extra: Record<string, string> = {}, timeout = 300_000) {
  return spawnSync('mpirun', ['--oversubscribe', '-np', '2', process.execPath, ...args], { cwd: root, env: { ...env, ...extra }, encoding: 'utf8', timeout });
}
const adapter = (dir: string) => new Map([...readSafetensors(join(dir, 'adapter_model.safetensors'))].map(([k, t]) => [k, t.toFloat32Array()]));

test('libnccl.so.2 missing: the error names the library and PEFT_TS_NCCL_LIB', { skip: skipCuda }, () => {
  const r = getCollectiveIn({ PEFT_TS_BACKEND: 'cuda', PEFT_TS_COLLECTIVE: 'nccl', PEFT_TS_NCCL_LIB: '/nonexistent/libnccl.so.2' });
  assert.equal(r.status, 1);
  assert.match(r.err, /NCCL collective: NCCL \(libnccl\.so\.2\) could not be loaded from PEFT_TS_NCCL_LIB; set PEFT_TS_NCCL_LIB to its path/);
  assert.match(r.err, /\/nonexistent\/libnccl\.so\.2: /);
});

test('one process: NCCL with world size 1 (ncclCommInitRank, ncclAllReduce, ncclBroadcast of device buffers)', { skip: skipOne }, () => {
  const r = spawnSync(process.execPath, [ncclWorker], { cwd: root, env: { ...env, PEFT_TS_COLLECTIVE: 'nccl' }, encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /nccl-ok \{"rank":0,"worldSize":1,"device":0,/);
});

test('mpirun -np 2 on the cuda backend: the job picks NCCL; sums, broadcasts and bucketed averages agree', { skip: skipTwo, timeout: 300_000 }, () => {
  const r = mpi([ncclWorker]);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  for (const rank of [0, 1]) assert.match(r.stdout, new RegExp(`nccl-ok \\{"rank":${rank},"worldSize":2,"device":${rank},`));
});

test('mpirun -np 2 with NCCL trains to the adapter of one process with the same global batch', { skip: skipTwo, timeout: 900_000 }, () => {
  const tmp = mkdtempSync(join(tmpdir(), 'peft-ts-nccl-'));
  try {
    const two = mpi([dpWorker, JSON.stringify({ out: join(tmp, 'np2'), steps: 2, bs: 2 })], {}, 600_000);
    assert.equal(two.status, 0, two.stdout + two.stderr);
    assert.match(two.stdout, /dp-worker rank 0\/2 collective nccl/);
    assert.match(two.stdout, /dp-worker rank 1\/2 collective nccl/);
    const one = spawnSync(process.execPath, [dpWorker, JSON.stringify({ out: join(tmp, 'np1'), steps: 2, bs: 4 })], { cwd: root, env, encoding: 'utf8', timeout: 600_000 });
    assert.equal(one.status, 0, one.stdout + one.stderr);
    const a = adapter(join(tmp, 'np2')), b = adapter(join(tmp, 'np1'));
    assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
    let d = 0, moved = 0;
    for (const [k, x] of a) { const y = b.get(k)!; for (let i = 0; i < x.length; i++) { d = Math.max(d, Math.abs(x[i] - y[i])); moved = Math.max(moved, Math.abs(x[i])); } }
    assert.ok(d < 1e-5, `adapters differ by ${d}`);
    assert.ok(moved > 1e-3, 'training moved the adapter');
    const losses = (dir: string) => readFileSync(join(tmp, dir, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { loss?: number }).loss).filter((l) => l !== undefined);
    const l2 = losses('np2'), l1 = losses('np1');
    assert.equal(l2.length, l1.length);
    l1.forEach((l, i) => assert.ok(Math.abs(l! - l2[i]!) < 1e-5, `loss ${i}: ${l} vs ${l2[i]}`));
  } finally { rmSync(tmp, { recursive: true, force: true }); }
});

test('an NCCL error on one rank ends every rank with ncclGetErrorString\'s text', { skip: skipTwo || (emu ? false : 'injects the failure through the emulator\'s fake NCCL'), timeout: 600_000 }, () => {
  const tmp = mkdtempSync(join(tmpdir(), 'peft-ts-nccl-'));
  try {
    const r = mpi([dpWorker, JSON.stringify({ out: join(tmp, 'e'), steps: 3, bs: 2 })], { PEFT_TS_FAKE_NCCL_FAIL: '1:2' }, 600_000);
    assert.notEqual(r.status, 0);
    const all = r.stdout + r.stderr;
    assert.match(all, /\[rank 1\/2\] training failed: Error: peft_cuda: ncclAllReduce: unhandled system error \(fake NCCL: injected failure of ncclAllReduce 2 on rank 1\)/);
    assert.match(all, /\[rank 1\/2\] ending every rank of the job/);
    assert.ok(!existsSync(join(tmp, 'e', 'adapter_model.safetensors')), 'no adapter from a failed job');
  } finally { rmSync(tmp, { recursive: true, force: true }); }
});

test('mpirun -np 2 on the cuda backend without libnccl.so.2: every rank says what to set', { skip: skipTwo, timeout: 300_000 }, () => {
  const r = mpi([dpWorker, JSON.stringify({ out: join(tmpdir(), 'peft-ts-nccl-never'), steps: 1, bs: 2 })], { PEFT_TS_NCCL_LIB: '/nonexistent/libnccl.so.2' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /could not be loaded from PEFT_TS_NCCL_LIB; set PEFT_TS_NCCL_LIB.*Or average the gradients over MPI through host memory: PEFT_TS_COLLECTIVE=mpi/s);
});
