// Data-parallel training: the sharding and gradient averaging in-process, then real jobs under
// `mpirun -np 2` (skipped, with the reason, where Open MPI or the MPI addon is missing):
// same adapter as one process with the same global batch, resume after a kill with the same
// or another number of ranks, and a failing rank ending the job with a clear error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { allReduceGradients, findMpiAddon, launcherWorld, shardOrder, type Collective } from '../src/train/distributed.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { TrainingArguments } from '../src/train/args.js';

let root = dirname(fileURLToPath(import.meta.url));
while (!existsSync(join(root, 'package.json'))) root = dirname(root);
const worker = join(root, 'dist', 'test', 'helpers', 'dp_worker.js');
const cli = join(root, 'dist', 'src', 'cli', 'main.js');

test('shardOrder: the ranks\' k-th batches together are the k-th global batch', () => {
  const order = [...Array(23).keys()].map((i) => (i * 7) % 23);
  for (const world of [1, 2, 3, 4]) {
    for (const dropLast of [false, true]) {
      const shards = [...Array(world).keys()].map((r) => shardOrder(order, r, world, dropLast));
      const n = shards[0].length;
      for (const s of shards) assert.equal(s.length, n, 'every rank gets as many samples');
      const bs = 2;
      for (let k = 0; k * bs < n; k++) {
        const got = shards.flatMap((s) => s.slice(k * bs, (k + 1) * bs)).sort((a, b) => a - b);
        const padded = dropLast ? order.slice(0, order.length - (order.length % world)) : [...order, ...order].slice(0, n * world);
        const want = padded.slice(k * bs * world, Math.min((k + 1) * bs * world, n * world)).sort((a, b) => a - b);
        assert.deepEqual(got, want, `world ${world} dropLast ${dropLast} batch ${k}`);
      }
    }
  }
});

test('allReduceGradients: buckets, averages grads and sums the extras', async () => {
  // Two simulated ranks: the "other" rank's values are added by the fake collective.
  const other = new Map<number, Float64Array>();
  const calls: number[] = [];
  const fake: Collective = {
    rank: 0, worldSize: 2, name: 'fake',
    async allReduceSum(buf) { calls.push(buf.length); const o = other.get(buf.length)!; for (let i = 0; i < buf.length; i++) buf[i] += o[i]; },
    async broadcast() {}, async barrier() {}, abort() { throw new Error('abort'); },
  };
  other.set(5, Float64Array.from([3, 2, 1, 30, 40]));
  other.set(1, Float64Array.from([5]));
  // 3 + 2 floats do not fit one 4-float bucket: two buckets, then the extras.
  other.set(3, Float64Array.from([3, 2, 1])); other.set(2, Float64Array.from([30, 40]));
  const h1 = Float32Array.from([1, 2, 3]), h2 = Float32Array.from([10, 20]);
  await allReduceGradients(fake, [h1, h2], Float64Array.from([7]), 4);
  assert.deepEqual(calls, [3, 2, 1]);
  assert.deepEqual([...h1], [2, 2, 2]);
  assert.deepEqual([...h2], [20, 30]);
  calls.length = 0;
  const k1 = Float32Array.from([1, 2, 3]), k2 = Float32Array.from([10, 20]), ex = Float64Array.from([7]);
  await allReduceGradients(fake, [k1, k2], ex, 1 << 20);
  assert.deepEqual(calls, [5, 1]);
  assert.deepEqual([...k1], [2, 2, 2]);
  assert.deepEqual([...ex], [12]);
});

test('launcherWorld reads Open MPI and PMI variables; TrainingArguments reports them', () => {
  assert.equal(launcherWorld({}), null);
  assert.deepEqual(launcherWorld({ OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_RANK: '2', OMPI_COMM_WORLD_LOCAL_RANK: '0' }), { rank: 2, size: 4, localRank: 0, launcher: 'openmpi' });
  assert.deepEqual(launcherWorld({ PMI_SIZE: '2', PMI_RANK: '1' }), { rank: 1, size: 2, localRank: 1, launcher: 'pmi' });
  assert.throws(() => launcherWorld({ OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_RANK: '2' }), /inconsistent/);
  const a = new TrainingArguments({ outputDir: '/tmp/x', perDeviceTrainBatchSize: 4, gradientAccumulationSteps: 3 });
  assert.equal(a.worldSize, 1);
  assert.equal(a.processIndex, 0);
  assert.equal(a.globalBatchSize, 12);
});

// ---- real jobs --------------------------------------------------------------------------
const mpirun = spawnSync('mpirun', ['--version'], { encoding: 'utf8' });
const skipReason = process.env.PEFT_TS_BACKEND === 'deferred' ? 'process orchestration: runs once, on the cpu backend'
  : mpirun.status !== 0 ? 'mpirun not found (apt-get install openmpi-bin libopenmpi-dev)'
    : !findMpiAddon() ? 'MPI addon not built (npm run build:mpi)'
      : !existsSync(worker) ? 'dist/test/helpers/dp_worker.js missing' : false;
if (skipReason) process.stdout.write(`# distributed: mpirun jobs not exercised: ${skipReason}\n`);

const env = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_rmaps_base_oversubscribe: '1', PEFT_TS_ROOT: root };
function job(np: number, spec: object) {
  const cmd = np > 0 ? 'mpirun' : process.execPath;
  const args = np > 0 ? ['--oversubscribe', '-np', String(np), process.execPath, worker, JSON.stringify(spec)] : [worker, JSON.stringify(spec)];
  return spawnSync(cmd, args, { cwd: root, env, encoding: 'utf8', timeout: 120_000 });
}
function adapter(dir: string): Map<string, Float32Array> {
  const m = new Map<string, Float32Array>();
  for (const [k, t] of readSafetensors(join(dir, 'adapter_model.safetensors'))) m.set(k, t.toFloat32Array());
  return m;
}
function maxDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  let d = 0;
  for (const [k, x] of a) { const y = b.get(k)!; for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i] - y[i])); }
  return d;
}

test('mpirun -np 2 trains to the adapter of one process with the same global batch; only rank 0 writes', { skip: skipReason, timeout: 300_000 }, () => {
  const tmp = mkdtempSync(join(tmpdir(), 'peft-ts-dp-'));
  const evalFile = join(tmp, 'eval.jsonl');
  writeFileSync(evalFile, readFileSync(join(root, 'assets/data/kjv_section_test.jsonl'), 'utf8').split('\n').slice(0, 48).join('\n') + '\n');
  const evalFlags = ['--eval-data', evalFile, '--eval-steps', '2'];
  try {
    const two = spawnSync('mpirun', ['--oversubscribe', '-np', '2', process.execPath, cli, 'train', '--data', join(root, 'assets/data/kjv_section_train.jsonl'),
      '--max-steps', '4', '--batch-size', '4', '--lora-dropout', '0', '--logging-steps', '1', ...evalFlags, '--output-dir', join(tmp, 'np2')], { cwd: root, env, encoding: 'utf8', timeout: 120_000 });
    assert.equal(two.status, 0, two.stdout + two.stderr);
    const one = spawnSync(process.execPath, [cli, 'train', '--data', join(root, 'assets/data/kjv_section_train.jsonl'),
      '--max-steps', '4', '--batch-size', '8', '--lora-dropout', '0', '--logging-steps', '1', ...evalFlags, '--output-dir', join(tmp, 'np1')], { cwd: root, env, encoding: 'utf8', timeout: 120_000 });
    assert.equal(one.status, 0, one.stdout + one.stderr);
    assert.ok(maxDiff(adapter(join(tmp, 'np2')), adapter(join(tmp, 'np1'))) < 1e-5);
    // One log, written once: 4 step lines + the summary, with the losses of the one-process run.
    const log = (d: string) => readFileSync(join(tmp, d, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    const l2 = log('np2'), l1 = log('np1');
    assert.equal(l2.length, l1.length);
    for (let i = 0; i < l1.length; i++) {
      for (const k of ['loss', 'eval_loss', 'eval_accuracy']) {
        if (l1[i][k] !== undefined) assert.ok(Math.abs(l1[i][k] - l2[i][k]) < 1e-5, `line ${i + 1} ${k}: ${l1[i][k]} vs ${l2[i][k]}`);
      }
    }
    assert.deepEqual(l2.filter((e) => e.eval_loss !== undefined).map((e) => e.step), l1.filter((e) => e.eval_loss !== undefined).map((e) => e.step));
    assert.equal((two.stdout.match(/saved the adapter/g) ?? []).length, 1, 'only rank 0 reports');
  } finally { rmSync(tmp, { recursive: true, force: true }); }
});

test('a rank killed mid-run: the job fails, checkpoints are whole, resume with 2 or 1 ranks reaches the same adapter', { skip: skipReason, timeout: 300_000 }, () => {
  const tmp = mkdtempSync(join(tmpdir(), 'peft-ts-dp-'));
  try {
    const full = job(2, { out: join(tmp, 'full'), steps: 6, bs: 4, saveSteps: 3 });
    assert.equal(full.status, 0, full.stderr);
    const killed = job(2, { out: join(tmp, 'k2'), steps: 6, bs: 4, saveSteps: 3, die: { rank: 1, step: 5, how: 'kill' } });
    assert.notEqual(killed.status, 0, 'the job must fail when a rank dies');
    assert.deepEqual(readdirSync(join(tmp, 'k2')).filter((f) => f.startsWith('checkpoint-') || f.startsWith('.tmp')), ['checkpoint-3']);
    assert.ok(!existsSync(join(tmp, 'k2', 'adapter_model.safetensors')), 'no final adapter from a failed job');
    spawnSync('cp', ['-r', join(tmp, 'k2'), join(tmp, 'k1')]);
    const r2 = job(2, { out: join(tmp, 'k2'), steps: 6, bs: 4, saveSteps: 3, resume: true });
    assert.equal(r2.status, 0, r2.stderr);
    assert.equal(maxDiff(adapter(join(tmp, 'k2')), adapter(join(tmp, 'full'))), 0, 'same ranks: identical adapter');
    // One process with the same global batch (2 x 4) picks the run up from the same checkpoint.
    const r1 = job(0, { out: join(tmp, 'k1'), steps: 6, bs: 8, saveSteps: 3, resume: true });
    assert.equal(r1.status, 0, r1.stderr);
    assert.ok(maxDiff(adapter(join(tmp, 'k1')), adapter(join(tmp, 'full'))) < 1e-5, 'one rank: same adapter within float tolerance');
  } finally { rmSync(tmp, { recursive: true, force: true }); }
});

test('an error on one rank ends every rank with a clear message and a non-zero status', { skip: skipReason, timeout: 300_000 }, () => {
  const tmp = mkdtempSync(join(tmpdir(), 'peft-ts-dp-'));
  try {
    const r = job(2, { out: join(tmp, 'e'), steps: 6, bs: 4, die: { rank: 1, step: 2, how: 'throw' } });
    assert.notEqual(r.status, 0);
    const all = r.stdout + r.stderr;
    assert.match(all, /\[rank 1\/2\] training failed: Error: injected failure at step 2/);
    assert.match(all, /\[rank 1\/2\] ending every rank of the job/);
    assert.ok(!existsSync(join(tmp, 'e', 'adapter_model.safetensors')));
  } finally { rmSync(tmp, { recursive: true, force: true }); }
});
