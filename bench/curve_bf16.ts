// bf16 training curve beside Python peft (issue 12): the same LoRA fine-tuning run, 200 steps,
// same initial adapter, same batches, in fp32 and bf16 on both sides, loss recorded per step.
// It answers "does our bf16 track Python peft's bf16 within noise?" with the noise measured in
// the same run: how far Python bf16 is from Python fp32, and ours fp32 from Python fp32.
//
//   node dist/bench/curve_bf16.js [--steps 200] [--batch 8] [--seq 128] [--lr 1e-3] [--warmup 10]
//        [--threads 2] [--window 10] [--python /opt/pyref/bin/python] [--data DIR] [--reuse-python]
//        [--out file.json]
//
// scripts/peft_curve.py prepare writes the untrained adapter (peft save_pretrained, LoRA r16 on
// c_attn / c_proj / c_fc of the embedded default model, dropout 0) and the token batches; then
// Python trains in fp32, under torch.autocast('cpu', bfloat16) (TrainingArguments bf16=True) and
// with the whole model in bfloat16, and we train with the library's Trainer in fp32, bf16: true
// (autocast) and bf16: true on bf16 frozen weights (fromPretrained({ dtype: 'bfloat16' })).
// --reuse-python keeps the Python curves already in --data (when only our side changed).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setNumThreads, nativeInfo } from '../src/backends/index.js';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { PeftModel } from '../src/peft/index.js';
import { DataCollatorForLanguageModeling, Dataset, type Row } from '../src/data/index.js';
import { Trainer, type LogEntry } from '../src/train/index.js';

const argv = process.argv.slice(2);
const flag = (n: string, d: string) => { const i = argv.indexOf('--' + n); return i >= 0 ? argv[i + 1] : d; };
const steps = Number(flag('steps', '200')), B = Number(flag('batch', '8')), T = Number(flag('seq', '128'));
const lr = Number(flag('lr', '1e-3')), warmup = Number(flag('warmup', '10'));
const threads = Number(flag('threads', '2')), window = Number(flag('window', '10'));
const root = (() => { let d = dirname(fileURLToPath(import.meta.url)); while (!existsSync(join(d, 'package.json'))) d = dirname(d); return d; })();
const python = flag('python', process.env.PEFT_BASELINE_PYTHON ?? '/opt/pyref/bin/python');
const script = join(root, 'scripts', 'peft_curve.py');
const data = flag('data', join(tmpdir(), `peft-ts-curve-${steps}x${B}x${T}`));
setNumThreads(threads);

interface Curve { impl: string; mode: string; seconds: number; loss: number[]; grad_norm: number[]; lr: number[] }

function py(args: string[]): string {
  return execFileSync(python, [script, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 1_800_000 }).trim().split('\n').pop()!;
}

// 1. Shared start: the initial adapter and the batches (made once per shape, by Python).
const batchesFile = join(data, 'batches.json');
if (!existsSync(batchesFile) || !existsSync(join(data, 'adapter-init', 'adapter_model.safetensors'))) {
  console.error(`preparing ${data} ...`);
  console.error(py(['prepare', data, '--steps', String(steps), '--batch', String(B), '--seq', String(T)]));
}
const prepared = JSON.parse(readFileSync(batchesFile, 'utf8')) as { model: string; batch: number; seq: number; steps: number; blocks: number; tokens: number; batches: number[][][] };
if (prepared.steps !== steps || prepared.batch !== B || prepared.seq !== T) throw new Error(`${batchesFile} was made for ${prepared.steps} steps of ${prepared.batch} x ${prepared.seq}; pass another --data`);

// 2. Python peft, each mode in its own process.
const pyModes = ['fp32', 'autocast-bf16', 'bf16'];
const curves: Record<string, Curve> = {};
for (const m of pyModes) {
  const file = join(data, `python-${m}-lr${lr}-w${warmup}-t${threads}.json`);
  if (!argv.includes('--reuse-python') || !existsSync(file)) {
    console.error(`python peft ${m} ...`);
    writeFileSync(file, py(['train', data, m, '--threads', String(threads), '--lr', String(lr), '--warmup', String(warmup)]));
  }
  curves[`python ${m}`] = JSON.parse(readFileSync(file, 'utf8')) as Curve;
}

// 3. Ours: the library's Trainer on the same weights and batches.
async function ours(mode: 'fp32' | 'autocast-bf16' | 'bf16w-autocast-bf16'): Promise<Curve> {
  const base = await AutoModelForCausalLM.fromPretrained(prepared.model, { dtype: mode === 'bf16w-autocast-bf16' ? 'bfloat16' : 'float32' });
  const model = await PeftModel.fromPretrained(base, join(data, 'adapter-init'), { isTrainable: true });
  const out = mkdtempSync(join(tmpdir(), 'peft-ts-curve-run-'));
  const logs: LogEntry[] = [];
  const expected = prepared.batches;
  let seen = 0;
  const collate = DataCollatorForLanguageModeling({ padTokenId: 0 });
  const trainer = new Trainer({
    model,
    args: {
      outputDir: out, maxSteps: steps, perDeviceTrainBatchSize: B, learningRate: lr, lrSchedulerType: 'linear', warmupSteps: warmup,
      weightDecay: 0, maxGradNorm: 1, loggingSteps: 1, saveStrategy: 'no', reportTo: 'none', plotCurves: false, bf16: mode !== 'fp32', seed: 42,
    },
    // Checks that the Trainer's batch s is Python's batch s (rows in order), so the curves are comparable.
    dataCollator: (rows) => {
      const want = expected[seen++];
      rows.forEach((r, b) => {
        const ids = r.inputIds as number[];
        if (ids.length !== T || ids.some((v, t) => v !== want[b][t])) throw new Error(`step ${seen}: the Trainer's batch is not Python's (row ${b})`);
      });
      return collate(rows);
    },
    callbacks: [{ onLog: ({ logs: l }) => { if (typeof l.loss === 'number') logs.push(l); } }],
    progressStream: { write: () => true },
  });
  // The Trainer visits the dataset in a seeded permutation (one epoch here: steps * B rows);
  // placing Python's k-th row at that permutation's k-th index makes it visit them in Python's order.
  const order = (trainer as unknown as { epochOrder(n: number, epoch: number): number[] }).epochOrder(steps * B, 0);
  const rows: Row[] = new Array(steps * B);
  order.forEach((i, k) => { rows[i] = { inputIds: expected[Math.floor(k / B)][k % B] }; });
  trainer.trainDataset = new Dataset(rows);
  const t0 = performance.now();
  await trainer.train();
  const seconds = (performance.now() - t0) / 1000;
  rmSync(out, { recursive: true, force: true });
  if (logs.length !== steps || seen !== steps) throw new Error(`ours ${mode}: ${logs.length} logged steps, ${seen} batches, want ${steps}`);
  return { impl: 'peft-ts', mode, seconds: +seconds.toFixed(2), loss: logs.map((l) => l.loss as number), grad_norm: logs.map((l) => l.grad_norm as number), lr: logs.map((l) => l.learning_rate as number) };
}
for (const m of ['fp32', 'autocast-bf16', 'bf16w-autocast-bf16'] as const) {
  console.error(`peft-ts ${m} ...`);
  curves[`peft-ts ${m}`] = await ours(m);
}

// 4. The same schedule on both sides, or nothing below means anything.
const lrGap = Math.max(...curves['peft-ts fp32'].lr.map((v, i) => Math.abs(v - curves['python fp32'].lr[i])));
if (lrGap > 1e-9 * lr) throw new Error(`learning-rate schedules differ by ${lrGap}`);

const smooth = (x: number[]) => x.map((_, i) => { const lo = Math.max(0, i - window + 1); const s = x.slice(lo, i + 1); return s.reduce((a, b) => a + b, 0) / s.length; });
const mean = (x: number[]) => x.reduce((a, b) => a + b, 0) / x.length;
function gap(a: string, b: string) {
  const x = curves[a].loss, y = curves[b].loss;
  const d = x.map((v, i) => v - y[i]);
  const sx = smooth(x), sy = smooth(y);
  const tail = d.slice(-Math.max(1, Math.floor(steps / 10)));
  return {
    a, b,
    mean_abs: mean(d.map(Math.abs)), max_abs: Math.max(...d.map(Math.abs)),
    mean_abs_smoothed: mean(sx.map((v, i) => Math.abs(v - sy[i]))),
    mean_abs_last_10pct: mean(tail.map(Math.abs)), mean_signed_last_10pct: mean(tail),
    grad_norm_mean_rel: mean(curves[a].grad_norm.map((g, i) => Math.abs(g - curves[b].grad_norm[i]) / curves[b].grad_norm[i])),
  };
}
const pairs = [
  ['peft-ts autocast-bf16', 'python autocast-bf16'], // the claim
  ['python autocast-bf16', 'python fp32'],           // noise: what bf16 does to Python's own curve
  ['peft-ts fp32', 'python fp32'],                   // noise: two fp32 implementations
  ['peft-ts autocast-bf16', 'peft-ts fp32'],
  ['peft-ts autocast-bf16', 'python fp32'],
  ['peft-ts bf16w-autocast-bf16', 'python autocast-bf16'],
  ['peft-ts bf16w-autocast-bf16', 'python bf16'],
  ['python bf16', 'python fp32'],
];
const gaps = pairs.map(([a, b]) => gap(a, b));
// Step-to-step movement of the curve itself (different batches): the scale of "the curve".
const stepNoise = mean(curves['python fp32'].loss.slice(1).map((v, i) => Math.abs(v - curves['python fp32'].loss[i])));
const claim = gaps[0], floor = Math.max(gaps[1].mean_abs, gaps[2].mean_abs);
const claimSmooth = gaps[0].mean_abs_smoothed, floorSmooth = Math.max(gaps[1].mean_abs_smoothed, gaps[2].mean_abs_smoothed);
// Two independent bf16 roundings of the same run sit ~sqrt(2) x one rounding apart; 2x leaves room.
const within = claim.mean_abs <= 2 * floor && claimSmooth <= 2 * floorSmooth;

const names = Object.keys(curves);
console.log(`\nbf16 training curve: default model (GPT-2 shape, 4 layers, 128 wide, vocab 4096), LoRA r16 c_attn,c_proj,c_fc, B${B} x T${T}, ${steps} steps, AdamW lr ${lr} linear (warmup ${warmup}), clip 1.0`);
console.log(`${cpus()[0]?.model ?? 'cpu'}, ${threads} threads, native ${JSON.stringify(nativeInfo?.() ?? null)}`);
console.log(`data: ${prepared.tokens} tokens in ${prepared.blocks} blocks of ${T}, ${(steps * B / prepared.blocks).toFixed(2)} epochs\n`);
console.log(`| step | ${names.join(' | ')} |`);
console.log(`|---:|${names.map(() => '---:').join('|')}|`);
for (let s = 0; s < steps; s = s === 0 ? 19 : s + 20) console.log(`| ${s + 1} | ${names.map((n) => curves[n].loss[s].toFixed(4)).join(' | ')} |`);
console.log(`| mean | ${names.map((n) => mean(curves[n].loss).toFixed(4)).join(' | ')} |`);
console.log(`| seconds | ${names.map((n) => curves[n].seconds.toFixed(1)).join(' | ')} |`);
console.log(`\nloss gaps over the ${steps} steps (smoothed: moving mean of ${window} steps); the curve moves ${stepNoise.toFixed(4)} a step on average`);
console.log('| a | b | mean abs | max abs | mean abs smoothed | mean abs last 10% | mean a-b last 10% | grad norm mean rel |');
console.log('|---|---|---:|---:|---:|---:|---:|---:|');
for (const g of gaps) console.log(`| ${g.a} | ${g.b} | ${g.mean_abs.toExponential(2)} | ${g.max_abs.toExponential(2)} | ${g.mean_abs_smoothed.toExponential(2)} | ${g.mean_abs_last_10pct.toExponential(2)} | ${g.mean_signed_last_10pct.toExponential(2)} | ${g.grad_norm_mean_rel.toExponential(2)} |`);
console.log(`\nours bf16 vs Python bf16: ${claim.mean_abs.toExponential(2)} (smoothed ${claimSmooth.toExponential(2)}) against a noise floor of ${floor.toExponential(2)} (smoothed ${floorSmooth.toExponential(2)}): `
  + (within ? 'WITHIN noise (<= 2x the floor)' : 'NOT within noise (> 2x the floor)'));

const outFile = flag('out', join(root, 'bench', 'results', `curve-bf16-${new Date().toISOString().slice(0, 10)}.json`));
mkdirSync(dirname(outFile), { recursive: true });
writeFileSync(outFile, JSON.stringify({
  date: new Date().toISOString(), cpu: cpus()[0]?.model, threads, native: nativeInfo?.() ?? null,
  setup: { model: 'assets/default-model', lora: { r: 16, alpha: 32, dropout: 0, targets: ['c_attn', 'c_proj', 'c_fc'] }, batch: B, seq: T, steps, lr, warmup, schedule: 'linear', maxGradNorm: 1, tokens: prepared.tokens, blocks: prepared.blocks },
  within_noise: within, noise_floor: floor, noise_floor_smoothed: floorSmooth, step_to_step: stepNoise, gaps, curves,
}, null, 1));
console.log(`wrote ${outFile}`);
