// Memory of a Llama-shaped model loaded in 4 bit. Writes a bfloat16 checkpoint (config.json +
// model.safetensors, streamed so the writer never holds it), then loads it in fresh child
// processes and compares the peak resident set (VmHWM) above a bare process that only
// imported the library with what the weights need: 4-bit params * 0.5 byte + float32
// params * 4 + the quantization statistics. Prints a table, writes JSON.
//
//   node dist/bench/quant_memory.js [--layers N] [--hidden H] [--intermediate I] [--vocab V]
//        [--dir D (reuse/keep the checkpoint there)] [--no-float32] [--out file.json]
//
// With --speed it times instead one 2048 -> 8192 layer (a Llama MLP projection), forward +
// input-gradient backward on M tokens: float32 Linear vs Linear4bit with the weight tiles
// dequantized by the backend kernel (native when built) and by the TypeScript path.
//   node dist/bench/quant_memory.js --speed [--tokens M] [--reps N] [--out file.json]
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoModelForCausalLM, nativeInfo, backendName } from '../src/index.js';
import { Rng, getBackend, registerBackend, randn, tidy, withBackend } from '../src/tensor/index.js';
import { Linear } from '../src/nn/index.js';
import { Linear4bit, quantizeModel, dequantizeNF4Range, blockScales, setLinear4bitTileElements } from '../src/quant/index.js';

const argv = process.argv.slice(2);
const flag = (n: string, d?: string) => { const i = argv.indexOf('--' + n); return i >= 0 ? argv[i + 1] : d; };
const root = (() => { let d = dirname(fileURLToPath(import.meta.url)); while (!existsSync(join(d, 'package.json'))) d = dirname(d); return d; })();

/** Llama-3.2-1B's shape (hidden 2048, MLP 8192, 16 layers, 32 heads / 8 KV heads, tied embeddings) with a 32k vocabulary. */
function llamaConfig(): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'], model_type: 'llama',
    hidden_size: Number(flag('hidden', '2048')), intermediate_size: Number(flag('intermediate', '8192')),
    num_hidden_layers: Number(flag('layers', '16')), num_attention_heads: 32, num_key_value_heads: 8, head_dim: 64,
    vocab_size: Number(flag('vocab', '32000')), tie_word_embeddings: true, rms_norm_eps: 1e-5,
    max_position_embeddings: 131072, hidden_act: 'silu', initializer_range: 0.02, dtype: 'bfloat16',
    rope_theta: 500000, rope_scaling: { factor: 32, high_freq_factor: 4, low_freq_factor: 1, original_max_position_embeddings: 8192, rope_type: 'llama3' },
    bos_token_id: 1, eos_token_id: 2,
  };
}

/** Checkpoint tensor names and shapes, as transformers names them. */
function tensorList(c: Record<string, unknown>): [string, number[]][] {
  const h = c.hidden_size as number, inter = c.intermediate_size as number, hd = c.head_dim as number;
  const q = (c.num_attention_heads as number) * hd, kv = (c.num_key_value_heads as number) * hd;
  const out: [string, number[]][] = [['model.embed_tokens.weight', [c.vocab_size as number, h]], ['model.norm.weight', [h]]];
  for (let i = 0; i < (c.num_hidden_layers as number); i++) {
    const p = `model.layers.${i}.`;
    out.push([p + 'input_layernorm.weight', [h]], [p + 'post_attention_layernorm.weight', [h]],
      [p + 'self_attn.q_proj.weight', [q, h]], [p + 'self_attn.k_proj.weight', [kv, h]], [p + 'self_attn.v_proj.weight', [kv, h]],
      [p + 'self_attn.o_proj.weight', [h, q]], [p + 'mlp.gate_proj.weight', [inter, h]], [p + 'mlp.up_proj.weight', [inter, h]],
      [p + 'mlp.down_proj.weight', [h, inter]]);
  }
  return out;
}

/**
 * Writes model.safetensors as bfloat16, one chunk at a time: header first (names sorted
 * byte-wise, as the Rust crate orders same-dtype tensors), then each tensor's bytes.
 * Values: a pool of N(0, 0.02) draws read at random offsets (norm weights are 1).
 */
function writeCheckpoint(dir: string, c: Record<string, unknown>): number {
  const list = tensorList(c).sort((a, b) => Buffer.compare(Buffer.from(a[0]), Buffer.from(b[0])));
  const parts: string[] = ['"__metadata__":{"format":"pt"}'];
  let off = 0;
  for (const [name, shape] of list) {
    const nb = shape.reduce((a, b) => a * b, 1) * 2;
    parts.push(`${JSON.stringify(name)}:{"dtype":"BF16","shape":${JSON.stringify(shape)},"data_offsets":[${off},${off + nb}]}`);
    off += nb;
  }
  let header = Buffer.from(`{${parts.join(',')}}`);
  header = Buffer.concat([header, Buffer.alloc((8 - (header.length % 8)) % 8, 0x20)]);
  const rng = new Rng(0);
  const POOL = 1 << 22;
  const pool = new Uint16Array(POOL * 2);
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  for (let i = 0; i < POOL; i++) { f[0] = rng.normal() * 0.02; pool[i] = pool[i + POOL] = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16; }
  const ones = new Uint16Array(1 << 16).fill(0x3f80);
  const fd = openSync(join(dir, 'model.safetensors'), 'w');
  try {
    const len = Buffer.alloc(8); len.writeBigUInt64LE(BigInt(header.length));
    writeSync(fd, len); writeSync(fd, header);
    for (const [name, shape] of list) {
      let n = shape.reduce((a, b) => a * b, 1);
      const isNorm = shape.length === 1;
      while (n > 0) {
        const m = Math.min(n, isNorm ? ones.length : POOL);
        const start = isNorm ? 0 : rng.int(POOL);
        const src = isNorm ? ones.subarray(0, m) : pool.subarray(start, start + m);
        writeSync(fd, new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
        n -= m;
      }
    }
  } finally { closeSync(fd); }
  writeFileSync(join(dir, 'config.json'), JSON.stringify(c, null, 2));
  return 8 + header.length + off;
}

function status(): { hwm: number; rss: number } {
  const s = readFileSync('/proc/self/status', 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)![1]) * 1024;
  return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
}

/** What one child measures; printed as one JSON line. */
function child(mode: string, dir: string): Record<string, unknown> {
  const before = status();
  if (mode === 'bare') return { mode, peak_rss: before.hwm, rss: before.rss };
  const t0 = performance.now();
  const model = mode === 'load4bit'
    ? AutoModelForCausalLM.fromPretrainedSync(dir, { logger: () => {}, quantizationConfig: { loadIn4bit: true, bnb4bitUseDoubleQuant: true } })
    : AutoModelForCausalLM.fromPretrainedSync(dir, { logger: () => {} });
  if (mode === 'float32-then-quantize') quantizeModel(model);
  const loadS = (performance.now() - t0) / 1000;
  let qParams = 0, qHeld = 0, qPacked = 0, qLayers = 0;
  for (const [, m] of model.namedModules()) if (m instanceof Linear4bit) {
    qLayers++;
    qParams += m.inFeatures * m.outFeatures;
    qHeld += m.quantizedBytes();
    qPacked += m.packedWeight.byteLength;
  }
  const after = status();
  return {
    mode, load_s: +loadS.toFixed(1), peak_rss: after.hwm, rss_after: after.rss, rss_before: before.rss,
    quantized_layers: qLayers, quantized_params: qParams, quantized_held_bytes: qHeld, quantized_packed_bytes: qPacked,
    float_params: model.numParameters(), float_bytes: model.numParameters() * 4,
  };
}

function runChild(mode: string, dir: string): Record<string, unknown> {
  const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--child', mode, '--dir', dir],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 });
  return JSON.parse(out.trim().split('\n').pop()!);
}

const MiB = (b: number) => +(b / 2 ** 20).toFixed(1);

function main(): void {
  const cfg = llamaConfig();
  const keep = flag('dir');
  const dir = keep ?? mkdtempSync(join(tmpdir(), 'quant-memory-'));
  try {
    mkdirSync(dir, { recursive: true });
    let fileBytes: number;
    const t0 = performance.now();
    if (keep && existsSync(join(dir, 'model.safetensors'))) fileBytes = readFileSync(join(dir, 'model.safetensors')).length;
    else fileBytes = writeCheckpoint(dir, cfg);
    const writeS = (performance.now() - t0) / 1000;
    console.log(`checkpoint: ${MiB(fileBytes)} MiB bfloat16 in ${dir} (written in ${writeS.toFixed(1)} s)`);
    const bare = runChild('bare', dir);
    const q = runChild('load4bit', dir);
    const qp = q.quantized_params as number, fb = q.float_bytes as number;
    const stats = (q.quantized_held_bytes as number) - (q.quantized_packed_bytes as number);
    const expected = qp * 0.5 + fb + stats;
    const measured = (q.peak_rss as number) - (bare.peak_rss as number);
    const rows: Record<string, unknown>[] = [{
      ...q, bare_peak_rss: bare.peak_rss, measured_bytes: measured, params_x_half: qp * 0.5, stats_bytes: stats,
      expected_bytes: expected, ratio: +(measured / expected).toFixed(3),
    }];
    if (!argv.includes('--no-float32')) {
      for (const mode of ['float32', 'float32-then-quantize']) {
        const r = runChild(mode, dir);
        const m = (r.peak_rss as number) - (bare.peak_rss as number);
        const exp = mode === 'float32' ? (r.float_bytes as number) : (qp + (r.float_params as number)) * 4;
        rows.push({ ...r, bare_peak_rss: bare.peak_rss, measured_bytes: m, expected_bytes: exp, ratio: +(m / exp).toFixed(3) });
      }
    }
    const h = cfg;
    const shape = `hidden ${h.hidden_size}, intermediate ${h.intermediate_size}, ${h.num_hidden_layers} layers, ` +
      `${h.num_attention_heads} heads / ${h.num_key_value_heads} KV heads, vocab ${h.vocab_size}, tied embeddings`;
    console.log(`\nLlama-shaped model (${shape}) on ${cpus()[0]?.model ?? 'cpu'}, ${cpus().length} cores, ${MiB(totalmem())} MiB RAM, backend ${backendName()}`);
    console.log(`bare process (library imported): peak RSS ${MiB(bare.peak_rss as number)} MiB`);
    console.log('| load | time s | peak RSS - bare MiB | expected MiB | measured / expected | 4-bit params | 4-bit held MiB | params*0.5 MiB | stats MiB | float32 params | float32 MiB |');
    console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of rows) {
      console.log(`| ${r.mode} | ${r.load_s} | ${MiB(r.measured_bytes as number)} | ${MiB(r.expected_bytes as number)} | ${r.ratio} | ` +
        `${r.quantized_params} | ${MiB(r.quantized_held_bytes as number)} | ${MiB((r.quantized_params as number) * 0.5)} | ` +
        `${MiB((r.quantized_held_bytes as number) - (r.quantized_packed_bytes as number))} | ${r.float_params} | ${MiB(r.float_bytes as number)} |`);
    }
    const outFile = flag('out', join(root, 'bench', 'results', `quant-memory-${new Date().toISOString().slice(0, 10)}.json`))!;
    mkdirSync(dirname(outFile), { recursive: true });
    writeFileSync(outFile, JSON.stringify({
      date: new Date().toISOString(), config: cfg, checkpoint_bytes: fileBytes, cpu: cpus()[0]?.model, cores: cpus().length,
      total_mem: totalmem(), native: nativeInfo(), bare, rows,
    }, null, 2));
    console.log(`wrote ${outFile}`);
  } finally {
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
}

function median(xs: number[]): number { const s = [...xs].sort((a, b) => a - b); return +s[Math.floor(s.length / 2)].toFixed(1); }

function speed(): void {
  const inF = 2048, outF = 8192, M = Number(flag('tokens', '512')), reps = Number(flag('reps', '9'));
  // --tiles a,b: Linear4bit rows for each tile size (elements dequantized per GEMM), default the library's.
  const tiles = (flag('tiles') ?? '').split(',').filter(Boolean).map(Number);
  const defaultTile = setLinear4bitTileElements(1);
  setLinear4bitTileElements(defaultTile);
  if (!tiles.length) tiles.push(defaultTile);
  const rng = new Rng(7);
  const lin = new Linear(inF, outF, false, rng);
  lin.weight.requiresGrad = false; // frozen base, as under LoRA: backward is the input gradient
  const q = Linear4bit.fromWeight(lin.weight.data, inF, outF);
  const x = randn([1, M, inF], 1, rng).setRequiresGrad(true);
  const gy = randn([1, M, outF], 1, rng);
  type Layer = { forward(t: typeof x): typeof x };
  const fwdBwd = (m: Layer) => () => tidy(() => { m.forward(x).backward(gy); x.grad?.dispose(); x.grad = null; return 0; });
  const fwd = (m: Layer) => () => tidy(() => { m.forward(x); return 0; });
  // The same backend without its dequantizeNF4 kernel: Linear4bit falls back to TypeScript.
  const be = getBackend();
  registerBackend('no-nf4-kernel', () => ({ ...be, dequantizeNF4: undefined, name: be.name + ' (TS dequant)' }));
  const w = new Float32Array(inF * outF), qs = q.quantized, n = inF * outF;
  const scales = new Float32Array(Math.ceil(n / qs.state.blocksize));
  const impls: { impl: string; backend: string; tile?: number; fwd: () => void; fwdBwd: () => void; dequant?: () => void }[] = [
    { impl: 'float32 Linear', backend: be.name, fwd: fwd(lin), fwdBwd: fwdBwd(lin) },
  ];
  const tileNote = (t: number) => tiles.length > 1 || t !== defaultTile ? ` (tile ${t} elements)` : '';
  for (const tile of tiles) {
    if (typeof be.dequantizeNF4 === 'function') {
      impls.push({ impl: `Linear4bit, ${be.name} dequantizeNF4 kernel${tileNote(tile)}`, backend: be.name, tile, fwd: fwd(q), fwdBwd: fwdBwd(q),
        dequant: () => be.dequantizeNF4!(qs.packed, blockScales(qs.state, 0, scales.length, scales), qs.state.blocksize, qs.state.code, 0, n, w) });
    }
    impls.push({ impl: `Linear4bit, TypeScript dequantization (the path before the kernel)${tileNote(tile)}`, backend: 'no-nf4-kernel', tile,
      fwd: fwd(q), fwdBwd: fwdBwd(q), dequant: () => { dequantizeNF4Range(qs.packed, qs.state, 0, n, w); } });
  }
  // Round-robin over the implementations so that drift on a shared machine hits all alike.
  const times = impls.map(() => ({ fwd: [] as number[], fwdBwd: [] as number[], dequant: [] as number[] }));
  for (let r = -1; r < reps; r++) {
    impls.forEach((im, i) => withBackend(im.backend, () => {
      setLinear4bitTileElements(im.tile ?? defaultTile);
      for (const k of ['fwd', 'fwdBwd', 'dequant'] as const) {
        const f = im[k];
        if (!f) continue;
        const t0 = performance.now(); f(); const dt = performance.now() - t0;
        if (r >= 0) times[i][k].push(dt); // r = -1 is the warm-up round
      }
    }));
  }
  setLinear4bitTileElements(defaultTile);
  const rows = impls.map((im, i) => ({
    impl: im.impl, tile_elements: im.tile ?? null, forward_ms: median(times[i].fwd), forward_backward_ms: median(times[i].fwdBwd),
    dequant_full_weight_ms: im.dequant ? median(times[i].dequant) : null,
  }));
  console.log(`\n${inF} -> ${outF} layer, x [1, ${M}, ${inF}], medians of ${reps} round-robin runs, ${cpus()[0]?.model ?? 'cpu'} ${cpus().length} cores, backend ${be.name}, native ${JSON.stringify(nativeInfo())}`);
  console.log('| layer | forward ms | forward + backward ms | dequantize whole weight ms |');
  console.log('|---|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.impl} | ${r.forward_ms} | ${r.forward_backward_ms} | ${r.dequant_full_weight_ms ?? '-'} |`);
  const outFile = flag('out', join(root, 'bench', 'results', `quant-speed-${new Date().toISOString().slice(0, 10)}.json`))!;
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, JSON.stringify({ date: new Date().toISOString(), layer: [inF, outF], tokens: M, reps, cpu: cpus()[0]?.model,
    cores: cpus().length, native: nativeInfo(), rows, raw_ms: impls.map((im, i) => ({ impl: im.impl, ...times[i] })) }, null, 2));
  console.log(`wrote ${outFile}`);
}

if (flag('child')) console.log(JSON.stringify(child(flag('child')!, flag('dir')!)));
else if (argv.includes('--speed')) speed();
else main();
