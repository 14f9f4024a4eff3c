// Greedy decoding side by side with transformers: a random-init GPT-2 124M-shaped model
// (GPT2Config() defaults) generating N new tokens from a P-token prompt at batch 1 and 8,
// float32 and bfloat16 weights, ours and transformers' (the anchor script
// shared/bench/transformers_generate.py), each in its own process (so that its peak RSS is
// its own), interleaved per batch size so that the ratios come from the same minutes of a
// shared machine. Prints a table, writes JSON to bench/results/.
// Our rows: 'float32'; 'bfloat16' (bf16 weights, float32 activations: each GEMM widens W);
// 'bfloat16+autocast' (bf16 weights and generate's autocast: activations rounded to bf16 in
// the GEMMs, as transformers runs a bf16 model). transformers' 'bfloat16' row is its bf16 model.
//
//   node dist/bench/generate_compare.js [--batches 1,8] [--prompt P] [--new N] [--threads T] [--reps R]
//        [--dtypes float32,bfloat16,bfloat16+autocast] [--python /opt/pyref/bin/python] [--no-python] [--out file.json]
//        [--profile] (ours: one run with every backend call timed, on stderr)
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const argv = process.argv.slice(2);
const flag = (n: string, d?: string) => { const i = argv.indexOf('--' + n); return i >= 0 ? argv[i + 1] : d; };
const prompt = Number(flag('prompt', '32')), newTokens = Number(flag('new', '64')), threads = Number(flag('threads', '2'));
const reps = Number(flag('reps', '3'));
const self = fileURLToPath(import.meta.url);
const root = (() => { let d = dirname(self); while (!existsSync(join(d, 'package.json'))) d = dirname(d); return d; })();

interface Row { impl: string; dtype: string; batch: number; prompt: number; new: number; seconds: number; tokens_per_s: number; peak_rss_MiB: number; step_ms?: number }

/** One configuration of ours, run in this process (the parent spawns one per configuration). */
async function child(config: string, batch: number): Promise<Row> {
  const dtype = config.startsWith('bfloat16') ? 'bfloat16' : 'float32';
  const ac = config.endsWith('+autocast') ? 'bfloat16' as const : null;
  const { setNumThreads } = await import('../src/backends/index.js');
  const { Rng, tensor } = await import('../src/tensor/index.js');
  const { AutoModelForCausalLM } = await import('../src/models/index.js');
  const { generate } = await import('../src/generate/index.js');
  setNumThreads(threads);
  // GPT2Config() defaults, as the transformers script builds it.
  const model = AutoModelForCausalLM.fromConfig({ model_type: 'gpt2', vocab_size: 50257, n_positions: 1024, n_embd: 768, n_layer: 12, n_head: 12 },
    { rng: new Rng(0), dtype });
  model.train(false);
  const ids = tensor(Int32Array.from({ length: batch * prompt }, (_, i) => 1 + ((i * 37) % 50000)), [batch, prompt], { dtype: 'int32' });
  const run = (n: number) => generate(model, ids, { maxNewTokens: n, eosTokenId: null, autocast: ac }).dispose();
  run(newTokens); // warm-up, as the Python script does
  const times: number[] = [], firsts: number[] = [];
  for (let r = 0; r < reps; r++) {
    let t0 = performance.now();
    run(1);
    firsts.push((performance.now() - t0) / 1e3);
    t0 = performance.now();
    run(newTokens);
    times.push((performance.now() - t0) / 1e3);
  }
  if (argv.includes('--profile')) {
    // to stderr: stdout carries the result line to the parent
    const { profileCalls } = await import('./profile.js');
    const log = console.log;
    console.log = console.error;
    try { console.error(`\n${config} batch ${batch}: first token (prompt pass)`); profileCalls(() => run(1), 15); console.error(`${newTokens} new tokens`); profileCalls(() => run(newTokens), 30); } finally { console.log = log; }
  }
  const best = Math.min(...times), first = Math.min(...firsts);
  return {
    impl: 'peft-ts', dtype: config, batch, prompt, new: newTokens, seconds: +best.toFixed(3), tokens_per_s: +((batch * newTokens) / best).toFixed(1),
    // A decoding step without the prompt pass: (whole run - prompt pass and first token) / (N - 1).
    step_ms: +(((best - first) / Math.max(1, newTokens - 1)) * 1e3).toFixed(2),
    peak_rss_MiB: +(process.resourceUsage().maxRSS / 1024).toFixed(0),
  };
}

function ours(dtype: string, batch: number): Row {
  const out = execFileSync(process.execPath, [self, '--child', dtype, String(batch), '--prompt', String(prompt), '--new', String(newTokens),
    '--threads', String(threads), '--reps', String(reps), ...(argv.includes('--profile') ? ['--profile'] : [])], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(out.trim().split('\n').pop()!);
}

function transformers(py: string, script: string, dtype: string, batch: number): Row | null {
  // runpy keeps the anchor script as it is; its peak RSS is read after it returns.
  const code = 'import sys, runpy, resource, json\n'
    + `sys.argv = ${JSON.stringify([script, String(batch), String(prompt), String(newTokens), String(threads), ...(dtype === 'bfloat16' ? ['bf16'] : [])])}\n`
    + `runpy.run_path(${JSON.stringify(script)}, run_name='__main__')\n`
    + "print(json.dumps({'peak_rss_MiB': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))\n";
  try {
    const lines = execFileSync(py, ['-c', code], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 1_800_000 }).trim().split('\n');
    const r = JSON.parse(lines[lines.length - 2]), mem = JSON.parse(lines[lines.length - 1]);
    return { impl: 'transformers', dtype, batch, prompt: r.prompt, new: r.new, seconds: r.seconds, tokens_per_s: r.tokens_per_s, peak_rss_MiB: mem.peak_rss_MiB };
  } catch (e) {
    console.error(`transformers not run (${py} ${script}): ${(e as Error).message.split('\n')[0]}`);
    return null;
  }
}

async function main(): Promise<void> {
  const ci = argv.indexOf('--child');
  if (ci >= 0) {
    console.log(JSON.stringify(await child(argv[ci + 1], Number(argv[ci + 2]))));
    return;
  }
  const batches = flag('batches', '1,8')!.split(',').map(Number);
  const dtypes = flag('dtypes', 'float32,bfloat16,bfloat16+autocast')!.split(',');
  const bad = dtypes.filter((d) => !['float32', 'bfloat16', 'bfloat16+autocast'].includes(d));
  if (bad.length) throw new Error(`--dtypes: unknown ${bad.join(', ')} (float32, bfloat16, bfloat16+autocast)`);
  const py = flag('python', process.env.PEFT_BASELINE_PYTHON ?? (existsSync('/opt/pyref/bin/python') ? '/opt/pyref/bin/python' : 'python3'))!;
  const script = flag('baseline', ['../shared/bench/transformers_generate.py', '../../shared/bench/transformers_generate.py', 'shared/bench/transformers_generate.py']
    .map((p) => resolve(root, p)).find(existsSync));
  const withPy = !argv.includes('--no-python') && !!script;
  if (!withPy && !argv.includes('--no-python')) console.error('transformers_generate.py not found (pass --baseline PATH): ours only');
  const rows: Row[] = [];
  for (const b of batches) {
    for (const dt of dtypes) { const r = ours(dt, b); rows.push(r); console.error(JSON.stringify(r)); }
    if (withPy) for (const dt of dtypes.filter((d) => !d.includes('+'))) { const r = transformers(py, script!, dt, b); if (r) { rows.push(r); console.error(JSON.stringify(r)); } }
  }
  const { nativeInfo } = await import('../src/backends/index.js');
  console.log(`\ngreedy decode, GPT-2 124M shape (random init), prompt ${prompt}, ${newTokens} new tokens, ${threads} threads, best of ${reps}`);
  console.log(`${cpus()[0]?.model ?? 'cpu'}, native ${JSON.stringify(nativeInfo())}`);
  console.log('| batch | impl | dtype | tokens/s | s per run | step ms | peak RSS MiB |');
  console.log('|---:|---|---|---:|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.batch} | ${r.impl} | ${r.dtype} | ${r.tokens_per_s} | ${r.seconds} | ${r.step_ms ?? '-'} | ${r.peak_rss_MiB} |`);
  const ratios: Record<string, number> = {};
  for (const b of batches) {
    const tf = rows.filter((r) => r.batch === b && r.impl === 'transformers');
    const us = rows.filter((r) => r.batch === b && r.impl === 'peft-ts');
    if (!tf.length || !us.length) continue;
    const bestTf = tf.reduce((x, y) => (y.tokens_per_s > x.tokens_per_s ? y : x));
    const bestUs = us.reduce((x, y) => (y.tokens_per_s > x.tokens_per_s ? y : x));
    ratios[`batch${b}`] = +(bestUs.tokens_per_s / bestTf.tokens_per_s).toFixed(2);
    console.log(`batch ${b}: peft-ts ${bestUs.dtype} ${bestUs.tokens_per_s} tok/s vs transformers' faster (${bestTf.dtype}) ${bestTf.tokens_per_s}: ${ratios[`batch${b}`]}x`);
  }
  const out = flag('out', join(root, 'bench', 'results', `generate-compare-${new Date().toISOString().slice(0, 10)}.json`))!;
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ bench: 'generate_compare', date: new Date().toISOString(), cpu: cpus()[0]?.model, threads, prompt, newTokens, reps, rows, ratios }, null, 2) + '\n');
  console.log(`wrote ${out}`);
}

await main();
