// Generation throughput: the default model (assets/default-model) decoding N new tokens
// greedily with the KV cache, for a few batch sizes and prompt lengths. eos is off so every
// run makes exactly N tokens. Prints a table, writes JSON to bench/results/.
//
//   node dist/bench/generate.js [default|long] [--new N] [--reps R] [--threads T] [--label name]
//        [--out file.json] [--beams K]
//
// long: a random-init GPT-2 (n_embd 256, 4 layers, 2048 positions) decoding 1024 tokens from
// a 16-token prompt, where the KV cache (not the small matmuls) dominates a step.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { backendName, setNumThreads } from '../src/backends/index.js';
import { Rng, tensor, memoryStats, resetPeakMemory } from '../src/tensor/index.js';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { generate } from '../src/generate/index.js';

const argv = process.argv.slice(2);
const flag = (n: string, d?: string) => { const i = argv.indexOf('--' + n); return i >= 0 ? argv[i + 1] : d; };
const workload = argv.find((a, i) => !a.startsWith('--') && !argv[i - 1]?.startsWith('--')) ?? 'default';
if (workload !== 'default' && workload !== 'long') throw new Error(`workload must be default or long, got ${workload}`);
const long = workload === 'long';
const newTokens = Number(flag('new', long ? '1024' : '128')), reps = Number(flag('reps', long ? '3' : '9'));
const beams = Number(flag('beams', '1'));
// One thread by default: CPU seconds then measure our work even on a busy machine.
const threads = Number(flag('threads', '1'));
setNumThreads(threads);
const root = (() => { let d = dirname(fileURLToPath(import.meta.url)); while (!existsSync(join(d, 'package.json'))) d = dirname(d); return d; })();
const model = long
  ? AutoModelForCausalLM.fromConfig({ model_type: 'gpt2', vocab_size: 4096, n_positions: 2048, n_embd: 256, n_layer: 4, n_head: 4 }, { rng: new Rng(0) })
  : AutoModelForCausalLM.fromPretrainedSync(join(root, 'assets', 'default-model'));
model.train(false);

const cases = long ? [{ batch: 1, prompt: 16 }]
  : [{ batch: 1, prompt: 8 }, { batch: 1, prompt: 120 }, { batch: 4, prompt: 8 }, { batch: 4, prompt: 120 }];
const rows: Record<string, number | string>[] = [];
for (const c of cases) {
  const ids = Int32Array.from({ length: c.batch * c.prompt }, (_, i) => 1 + ((i * 37) % 4000));
  const input = tensor(ids, [c.batch, c.prompt], { dtype: 'int32' });
  const run = () => generate(model, input, { maxNewTokens: newTokens, eosTokenId: null, ...(beams > 1 ? { numBeams: beams } : {}) }).dispose();
  run(); // warm-up (pool, JIT)
  const times: number[] = [], cpu: number[] = [];
  const live0 = memoryStats().liveBytes;
  resetPeakMemory();
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint(), c0 = process.cpuUsage();
    run();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1e6);
  }
  // Peak bytes held by tensors during a run, above what was live before (weights): the
  // cache and the step's temporaries. Deterministic, unlike times on a shared machine.
  const peakExtra = memoryStats().peakLiveBytes - live0;
  times.sort((a, b) => a - b);
  cpu.sort((a, b) => a - b);
  // The minimum is the least disturbed by other work on a shared machine; the median is kept too.
  const med = times[Math.floor(times.length / 2)], min = times[0];
  rows.push({ batch: c.batch, prompt: c.prompt, newTokens, beams, seconds: +min.toFixed(4), medianSeconds: +med.toFixed(4), cpuSeconds: +cpu[0].toFixed(4), peakExtraBytes: peakExtra, tokensPerSec: +((c.batch * newTokens) / min).toFixed(1) });
  input.dispose();
}
const mem = memoryStats() as unknown as Record<string, number>;
console.log(`generate bench: ${long ? 'long (random GPT-2, 256 wide)' : 'default model'}, backend ${backendName()}, ${newTokens} new tokens, best of ${reps} (median in the JSON)`);
console.log('batch  prompt  beams  seconds  cpu s    tokens/s  peak extra MB');
for (const r of rows) {
  console.log(`${String(r.batch).padStart(5)}  ${String(r.prompt).padStart(6)}  ${String(r.beams).padStart(5)}  ${String(r.seconds).padStart(7)}  `
    + `${String(r.cpuSeconds).padStart(7)}  ${String(r.tokensPerSec).padStart(8)}  ${((r.peakExtraBytes as number) / 2 ** 20).toFixed(2).padStart(13)}`);
}
const label = flag('label', 'current');
const out = flag('out', join(root, 'bench', 'results', `generate-${workload}-${label}-${new Date().toISOString().slice(0, 10)}.json`))!;
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify({ bench: 'generate', workload, label, backend: backendName(), threads, rows, memory: mem }, null, 2) + '\n');
console.log(`wrote ${out}`);
