// Training throughput benchmark: the same workloads as shared/bench/peft_baseline.py, run
// here and (when a Python with transformers + peft is found) by the Python baseline in the
// same command, so the ratio is measured on one machine. Prints a table, writes JSON.
//
//   node dist/bench/train.js [gpt2-clm|distilbert-cls|llama1b-clm|llama1b-qlora] [--device cpu|cuda]
//        [--steps N] [--warmup N] [--threads N] [--python /path/to/python]
//        [--baseline path/to/peft_baseline.py] [--out file.json]
//        [--batch B] [--seq T] [--gradient-checkpointing] [--full-logits] [--no-baseline] [--dtype float32|bfloat16]
//        [--bf16] [--baseline-dtype float32|bfloat16]
//        [--baseline-result file.json] [--tiny] [--profile]
//
// --baseline-result takes the baseline's JSON line from a file instead of running it here
// (scripts/gpu/run_all.sh runs it in its own process first, so the two never share the GPU's
// memory). --tiny keeps each workload's architecture at toy sizes (2 layers, width 64,
// vocab 1000, B2 x T32): for rehearsing the GPU script on the CPU emulator, never for figures.
//
// --dtype bfloat16 stores our frozen Linear / Conv1D / Embedding weights in bf16 (fromConfig's
// dtype, as fromPretrained({ dtype: 'bfloat16' }) loads them); LoRA, norms and accumulation stay float32.
// --bf16 runs the step under autocast('bfloat16') (TrainingArguments bf16: GEMMs on bf16
// operands, float32 accumulation; the cpu backend's path is in nativeInfo().bf16).
// On the CPU the Python baseline runs in bfloat16 when either is given (its model in
// torch_dtype=bfloat16: oneDNN bf16 GEMMs), else float32; --baseline-dtype overrides.
//
// --device cuda selects the cuda backend and runs the baseline on the GPU with the baseline's
// GPU shapes (B16 x T1024 for gpt2-clm, B8 x T1024 for llama1b); peak GPU memory comes from
// the backend's own allocator statistics.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpus } from 'node:os';
import { backendName, setNumThreads, nativeInfo } from '../src/backends/index.js';
import { Rng, tidy, tensor, memoryStats, resetPeakMemory, getBackend, setBackend, autocast } from '../src/tensor/index.js';
import { profileCalls } from './profile.js';
import { quantizeModel } from '../src/quant/model.js';
import { readFileSync } from 'node:fs';
import { AutoModelForCausalLM, AutoModelForSequenceClassification } from '../src/models/index.js';
import { LoraConfig, getPeftModel } from '../src/peft/index.js';
import { AdamW } from '../src/train/optim.js';

const argv = process.argv.slice(2);
const flag = (n: string, d?: string) => { const i = argv.indexOf('--' + n); return i >= 0 ? argv[i + 1] : d; };
const workload = argv.find((a) => !a.startsWith('--') && !argv[argv.indexOf(a) - 1]?.startsWith('--')) ?? 'gpt2-clm';
const steps = Number(flag('steps', '5')), warm = Number(flag('warmup', '2'));
const threads = Number(flag('threads', String(cpus().length)));
const ckpt = argv.includes('--gradient-checkpointing');
// --full-logits: materialise the [B, T, V] logits and take the loss from them (the unfused path).
const fullLogits = argv.includes('--full-logits');
const device = flag('device', 'cpu')!;
const dtype = flag('dtype', 'float32')!;
const bf16 = argv.includes('--bf16');
if (dtype !== 'float32' && dtype !== 'bfloat16') throw new Error(`--dtype must be float32 or bfloat16, got ${dtype}`);
if (dtype === 'bfloat16' && workload === 'llama1b-qlora') throw new Error('--dtype bfloat16 does not apply to llama1b-qlora (its linear weights are NF4)');
/** fromConfig options: bf16 weights are drawn layer by layer, never a whole float32 model. */
const dt = { dtype: dtype as 'float32' | 'bfloat16' };
if (device !== 'cpu' && device !== 'cuda') throw new Error(`--device must be cpu or cuda, got ${device}`);
const gpu = device === 'cuda';
const tiny = argv.includes('--tiny');
setNumThreads(threads);
if (gpu) setBackend('cuda'); // throws with the reason when the cuda addon or a GPU is missing

const root = (() => { let d = dirname(fileURLToPath(import.meta.url)); while (!existsSync(join(d, 'package.json'))) d = dirname(d); return d; })();

function buildWorkload() {
  const rng = new Rng(0);
  if (workload === 'gpt2-clm') {
    // GPT-2 124M shape, random init (the FLOPs are those of the pretrained model).
    const shape = tiny ? { vocab_size: 1000, n_positions: 128, n_embd: 64, n_layer: 2, n_head: 4 } : { vocab_size: 50257, n_positions: 1024, n_embd: 768, n_layer: 12, n_head: 12 };
    const model = AutoModelForCausalLM.fromConfig({ model_type: 'gpt2', ...shape }, { rng, ...dt });
    const peft = getPeftModel(model, new LoraConfig({ taskType: 'CAUSAL_LM', r: 8, loraAlpha: 16, loraDropout: 0.05, targetModules: ['c_attn'], fanInFanOut: true }));
    if (tiny) return { peft, B: 2, T: 32, vocab: 1000, unit: 'tokens', cls: false };
    return { peft, B: gpu ? 16 : 4, T: gpu ? 1024 : 256, vocab: 50257, unit: 'tokens', cls: false };
  }
  if (workload === 'distilbert-cls') {
    const model = AutoModelForSequenceClassification.fromConfig({ model_type: 'distilbert', vocab_size: 30522, dim: 768, n_layers: 6, n_heads: 12, hidden_dim: 3072, max_position_embeddings: 512, num_labels: 3 }, { rng, ...dt });
    const peft = getPeftModel(model, new LoraConfig({ taskType: 'SEQ_CLS', r: 8, loraAlpha: 32, loraDropout: 0.1, targetModules: ['q_lin', 'v_lin'] }));
    return { peft, B: gpu ? 32 : 16, T: 128, vocab: 30522, unit: 'samples', cls: true };
  }
  if (workload === 'llama1b-clm' || workload === 'llama1b-qlora') {
    // Llama-3.2-1B shape, as peft_baseline.py builds it.
    const shape = tiny ? { vocab_size: 1000, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 }
      : { vocab_size: 128256, hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8 };
    const model = AutoModelForCausalLM.fromConfig({
      model_type: 'llama', ...shape, max_position_embeddings: 4096, rope_theta: 500000.0,
      tie_word_embeddings: true, rms_norm_eps: 1e-5,
    }, { rng, ...dt });
    if (workload === 'llama1b-qlora') quantizeModel(model, { computeDtype: 'bfloat16', compressStatistics: true });
    const peft = getPeftModel(model, new LoraConfig({
      taskType: 'CAUSAL_LM', r: 16, loraAlpha: 32, loraDropout: 0.05,
      targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    }));
    if (tiny) return { peft, B: 2, T: 32, vocab: 1000, unit: 'tokens', cls: false };
    return { peft, B: gpu ? 8 : 1, T: gpu ? 1024 : 256, vocab: 128256, unit: 'tokens', cls: false };
  }
  throw new Error(`unknown workload '${workload}' (gpt2-clm | distilbert-cls | llama1b-clm | llama1b-qlora)`);
}

/** Device memory statistics of an asynchronous backend (cuda), when it keeps them. */
type DeviceStats = { peakBytes: number; currentBytes: number; stagedBytes?: number };
function deviceStats(): DeviceStats | null {
  const b = getBackend() as unknown as { memoryStats?: () => DeviceStats };
  return b.memoryStats ? b.memoryStats() : null;
}
function resetDevicePeak(): void {
  (getBackend() as unknown as { resetPeakMemory?: () => void }).resetPeakMemory?.();
}

/** Peak resident set of this process (VmHWM), GiB. */
function peakRssGiB(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? +(Number(m[1]) / 2 ** 20).toFixed(2) : NaN;
}

function measureOurs() {
  const w = buildWorkload();
  const { peft, vocab, unit, cls } = w;
  // Batch/sequence overrides exist to show where gradient checkpointing pays (long sequences).
  const B = Number(flag('batch', String(w.B))), T = Number(flag('seq', String(w.T)));
  for (const [, m] of peft.namedModules()) if ('gradientCheckpointing' in m) (m as unknown as { gradientCheckpointing: boolean }).gradientCheckpointing = ckpt;
  peft.train();
  const rng = new Rng(1);
  const ids = new Int32Array(B * T).map(() => rng.int(vocab));
  const inputIds = tensor(ids, [B, T]);
  const attentionMask = tensor(new Int32Array(B * T).fill(1), [B, T]);
  const labels = cls ? tensor(new Int32Array(B).map(() => rng.int(3)), [B]) : inputIds;
  const params = [...peft.namedParameters()].filter(([, p]) => p.requiresGrad);
  const opt = new AdamW(params, { lr: 2e-4 });
  const step = () => {
    const loss = tidy(() => {
      // As the Trainer's training step: causal LMs skip the full logits (fused head + loss);
      // with --bf16 the forward runs under autocast and each op's backward follows it.
      const out = autocast(bf16 ? 'bfloat16' : null, () => peft.forward({ inputIds, attentionMask, labels, returnLogits: fullLogits }));
      out.loss!.backward();
      return out.loss!.item();
    });
    opt.step();
    opt.zeroGrad();
    return loss;
  };
  for (let i = 0; i < warm; i++) step();
  resetPeakMemory();
  resetDevicePeak();
  const live0 = memoryStats().liveBytes;
  const t0 = performance.now();
  let loss = 0;
  for (let i = 0; i < steps; i++) loss = step();
  const dt = (performance.now() - t0) / steps / 1000;
  if (argv.includes('--profile')) profileCalls(() => { step(); });
  const per = unit === 'samples' ? B : B * T;
  return {
    impl: 'peft-ts', backend: backendName(), workload, ...(tiny ? { tiny: true } : {}), dtype: dtype + (bf16 ? ' +autocast bf16' : ''), batch: B, seq: T, threads,
    trainable: peft.numParameters(true), total: peft.numParameters(),
    step_ms: +(dt * 1000).toFixed(1), throughput: +(per / dt).toFixed(1), unit: unit + '/s', loss,
    rss_GiB: +(process.memoryUsage().rss / 2 ** 30).toFixed(2), peak_rss_GiB: peakRssGiB(),
    // Tensor bytes a step adds on top of what lives between steps (weights, optimizer state):
    // activations kept for backward, gradients and temporaries.
    step_peak_tensor_GiB: +((memoryStats().peakLiveBytes - live0) / 2 ** 30).toFixed(3),
    gradient_checkpointing: ckpt, full_logits: fullLogits,
    ...(gpu ? { device: 'cuda', peak_mem_GiB: gpuPeak(), staged_GiB: gpuStaged() } : {}),
  };
}

function gpuPeak(): number | null {
  const st = deviceStats();
  return st ? +(st.peakBytes / 2 ** 30).toFixed(2) : null;
}
function gpuStaged(): number | null {
  const st = deviceStats();
  return st && st.stagedBytes !== undefined ? +(st.stagedBytes / 2 ** 30).toFixed(3) : null;
}

function measureBaseline(): Record<string, unknown> | null {
  const given = flag('baseline-result');
  if (given) {
    // the baseline's stdout, saved by the caller: its last line is the JSON result
    const line = existsSync(given) ? readFileSync(given, 'utf8').trim().split('\n').pop() ?? '' : '';
    try { return { impl: 'python peft', ...JSON.parse(line) }; } catch { console.error(`no baseline result in ${given}`); return null; }
  }
  const py = flag('python', process.env.PEFT_BASELINE_PYTHON ?? (existsSync('/opt/pyref/bin/python') ? '/opt/pyref/bin/python' : 'python3'));
  const script = flag('baseline', [resolve(root, '../shared/bench/peft_baseline.py'), resolve(root, 'shared/bench/peft_baseline.py')].find(existsSync));
  if (!script || !existsSync(script)) { console.error('baseline script not found; pass --baseline'); return null; }
  try {
    const baseDt = flag('baseline-dtype', bf16 || dtype === 'bfloat16' ? 'bfloat16' : 'float32')!;
    const out = execFileSync(py!, gpu ? [script, workload, 'cuda'] : [script, workload, 'cpu', String(threads), baseDt], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 900_000 });
    const line = out.trim().split('\n').pop()!;
    return { impl: 'python peft', ...JSON.parse(line) };
  } catch (e) {
    console.error(`baseline not run (${py} ${script}): ${(e as Error).message.split('\n')[0]}`);
    return null;
  }
}

const ours = measureOurs();
// The Python baseline runs its fixed B x T only, so it is skipped when they are overridden.
const base = argv.includes('--no-baseline') || ((flag('batch') || flag('seq') || ckpt || tiny) && !flag('baseline-result')) ? null : measureBaseline();
// The baseline uses bf16 weights (and bf16 compute) on the GPU, float32 on the CPU.
const baseDtype = base ? String(base.dtype ?? '').replace(/^torch\./, '') : '';
if (base && baseDtype && baseDtype !== dtype) console.log(`note: our weights are ${dtype}${bf16 ? ' (autocast bf16 GEMMs)' : ''}, the baseline's ${baseDtype}`);
const rows = [ours, ...(base ? [base] : [])];
const where = gpu ? `cuda (${String((base as { gpu?: string } | null)?.gpu ?? 'GPU')})` : `${cpus()[0]?.model ?? 'cpu'} (${threads} threads), native: ${JSON.stringify(nativeInfo?.() ?? null)}`;
console.log(`\nworkload ${workload} on ${where}`);
console.log('| impl | dtype | B x T | grad ckpt | step ms | throughput | step peak tensors GiB | peak RSS GiB | peak GPU GiB | trainable | total |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.impl} | ${(r as { dtype?: string }).dtype ?? '-'} | ${r.batch}x${r.seq} | ${r.gradient_checkpointing ?? '-'} | ${r.step_ms} | ${r.throughput} ${r.unit} | ${r.step_peak_tensor_GiB ?? '-'} | ${r.peak_rss_GiB ?? '-'} | ${(r as { peak_mem_GiB?: number }).peak_mem_GiB ?? '-'} | ${r.trainable} | ${r.total} |`);
if (base && tiny) console.log('no ratio: --tiny models are not the baseline\'s');
else if (base) {
  console.log(`ratio peft-ts / python peft throughput: ${(ours.throughput / Number(base.throughput)).toFixed(2)}x`);
  if (gpu && base.peak_mem_GiB) console.log(`ratio peak GPU memory: ${(Number(ours.peak_mem_GiB) / Number(base.peak_mem_GiB)).toFixed(2)}x`);
}
const outFile = flag('out', join(root, 'bench', 'results', `train-${workload}${gpu ? '-cuda' : ''}${flag('batch') || flag('seq') ? `-B${ours.batch}xT${ours.seq}` : ''}${ckpt ? '-ckpt' : ''}${fullLogits ? '-fulllogits' : ''}${dtype === 'bfloat16' ? '-bf16' : ''}${bf16 ? '-autocast' : ''}-${new Date().toISOString().slice(0, 10)}.json`))!;
mkdirSync(dirname(outFile), { recursive: true });
writeFileSync(outFile, JSON.stringify({ date: new Date().toISOString(), rows }, null, 2));
console.log(`wrote ${outFile}`);
