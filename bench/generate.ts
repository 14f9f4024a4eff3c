// Generation throughput: the default model (assets/default-model) decoding N new tokens
// greedily with the KV cache, for a few batch sizes and prompt lengths. eos is off so every
// run makes exactly N tokens. Prints a table, writes JSON to bench/results/.
//
//   node dist/bench/generate.js [--new N] [--reps R] [--threads T] [--label name] [--out file.json]
//        [--beams K]
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpus } from 'node:os';
import { backendName, setNumThreads } from '../src/backends/index.js';
import { tensor, memoryStats } from '../src/tensor/index.js';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { generate } from '../src/generate/index.js';

const argv = process.argv.slice(2);
const flag = (n: string, d?: string) => { const i = argv.indexOf('--' + n); return i >= 0 ? argv[i + 1] : d; };
const newTokens = Number(flag('new', '128')), reps = Number(flag('reps', '9'));
const beams = Number(flag('beams', '1'));
setNumThreads(Number(flag('threads', String(cpus().length))));
const root = (() => { let d = dirname(fileURLToPath(import.meta.url)); while (!existsSync(join(d, 'package.json'))) d = dirname(d); return d; })();
const model = AutoModelForCausalLM.fromPretrained(join(root, 'assets', 'default-model'));

const cases = [{ batch: 1, prompt: 8 }, { batch: 1, prompt: 64 }, { batch: 4, prompt: 8 }];
const rows: Record<string, number | string>[] = [];
for (const c of cases) {
  const ids = Int32Array.from({ length: c.batch * c.prompt }, (_, i) => 1 + ((i * 37) % 4000));
  const input = tensor(ids, [c.batch, c.prompt], { dtype: 'int32' });
  const run = () => generate(model, input, { maxNewTokens: newTokens, eosTokenId: null, ...(beams > 1 ? { numBeams: beams } : {}) }).dispose();
  run(); // warm-up (pool, JIT)
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    run();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  times.sort((a, b) => a - b);
  // The minimum is the least disturbed by other work on a shared machine; the median is kept too.
  const med = times[Math.floor(times.length / 2)], min = times[0];
  rows.push({ batch: c.batch, prompt: c.prompt, newTokens, beams, seconds: +min.toFixed(4), medianSeconds: +med.toFixed(4), tokensPerSec: +((c.batch * newTokens) / min).toFixed(1) });
  input.dispose();
}
const mem = memoryStats() as unknown as Record<string, number>;
console.log(`generate bench: default model, backend ${backendName()}, ${newTokens} new tokens, best of ${reps} (median in the JSON)`);
console.log('batch  prompt  beams  seconds  tokens/s');
for (const r of rows) console.log(`${String(r.batch).padStart(5)}  ${String(r.prompt).padStart(6)}  ${String(r.beams).padStart(5)}  ${String(r.seconds).padStart(7)}  ${String(r.tokensPerSec).padStart(8)}`);
const label = flag('label', 'current');
const out = flag('out', join(root, 'bench', 'results', `generate-${label}-${new Date().toISOString().slice(0, 10)}.json`))!;
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify({ bench: 'generate', label, backend: backendName(), threads: Number(flag('threads', String(cpus().length))), rows, memory: mem }, null, 2) + '\n');
console.log(`wrote ${out}`);
