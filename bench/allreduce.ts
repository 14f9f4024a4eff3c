// Cost of data-parallel gradient averaging per optimizer step: allReduceGradients (bucketed
// MPI_Allreduce + scaling) over the trainable parameters of the training workloads, next to
// the step time a rank spends computing. Run under the launcher:
//
//   mpirun -np 2 node dist/bench/allreduce.js [--reps R] [--out file.json]
//
// Rank 0 prints a table and writes JSON to bench/results/.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { allReduceGradients, getCollective } from '../src/train/distributed.js';

const argv = process.argv.slice(2);
const flag = (n: string, d?: string) => { const i = argv.indexOf('--' + n); return i >= 0 ? argv[i + 1] : d; };
const reps = Number(flag('reps', '20'));
const c = getCollective();
if (c.worldSize < 2) throw new Error('run under mpirun -np 2 (or more)');

// Trainable tensors of each workload's LoRA (shapes of A and B per target layer).
const lora = (layers: number, targets: [number, number][], r: number) =>
  Array.from({ length: layers }, () => targets.flatMap(([i, o]) => [r * i, o * r])).flat();
const workloads: { name: string; sizes: number[] }[] = [
  { name: 'default-cls (r16 c_attn,c_proj,c_fc, 4 layers)', sizes: lora(4, [[128, 384], [128, 128], [128, 512], [512, 128]], 16) },
  { name: 'gpt2-clm (r8 c_attn, 12 layers)', sizes: lora(12, [[768, 2304]], 8) },
  { name: 'llama1b-clm (r16 all 7 proj, 16 layers)', sizes: lora(16, [[2048, 2048], [2048, 512], [2048, 512], [2048, 2048], [2048, 8192], [2048, 8192], [8192, 2048]], 16) },
];
const rows: Record<string, unknown>[] = [];
for (const w of workloads) {
  const grads = w.sizes.map((n) => new Float32Array(n).fill(c.rank + 1));
  const floats = w.sizes.reduce((a, b) => a + b, 0);
  await allReduceGradients(c, grads, new Float64Array(1));
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    await c.barrier();
    const t0 = performance.now();
    await allReduceGradients(c, grads, new Float64Array(1));
    ts.push(performance.now() - t0);
  }
  ts.sort((a, b) => a - b);
  rows.push({ workload: w.name, tensors: w.sizes.length, floats, megabytes: +(floats * 4 / 2 ** 20).toFixed(2), ms_min: +ts[0].toFixed(3), ms_median: +ts[ts.length >> 1].toFixed(3) });
}
if (c.rank === 0) {
  console.log(`allReduceGradients, ${c.worldSize} ranks on one machine (${(c as unknown as { library?: string }).library ?? c.name})`);
  console.log('| workload | tensors | floats | MiB | ms min | ms median |\n|---|---:|---:|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.workload} | ${r.tensors} | ${r.floats} | ${r.megabytes} | ${r.ms_min} | ${r.ms_median} |`);
  let root = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(root, 'package.json'))) root = dirname(root);
  const out = flag('out', join(root, 'bench', 'results', `allreduce-np${c.worldSize}-${new Date().toISOString().slice(0, 10)}.json`))!;
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ ranks: c.worldSize, reps, rows }, null, 2) + '\n');
  console.log(`wrote ${out}`);
}
