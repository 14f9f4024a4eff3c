// RoPE inverse frequencies from a config, as transformers' modeling_rope_utils computes them:
// "default", "linear", "llama3", "dynamic", "yarn" and "longrope" types, read from
// rope_parameters (transformers 5) or rope_theta + rope_scaling (transformers 4).
import type { Tensor } from '../tensor/tensor.js';
import { ropeTables } from '../tensor/ops/nn.js';
import { keepAll, type RawConfig } from './common.js';

export interface RopeSpec {
  type: string;
  theta: number;
  invFreq: Float64Array;
  attentionScaling: number;
}

function obj(v: unknown): Record<string, unknown> | null {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}

const f32 = Math.fround;

/**
 * Inverse frequencies and cos/sin scaling for a config. seqLen matters only for the
 * length-dependent types (dynamic, longrope), as transformers' rope_init_fn(config, seq_len).
 * Arithmetic is rounded to float32 where torch computes in float32.
 */
export function ropeSpec(raw: RawConfig, headDim: number, maxPositions: number, seqLen?: number): RopeSpec {
  const params = obj(raw.rope_parameters) ?? {};
  const scaling = obj(raw.rope_scaling) ?? {};
  const p: Record<string, unknown> = { ...scaling, ...params };
  const type = String(p.rope_type ?? p.type ?? 'default');
  const theta = Number(p.rope_theta ?? raw.rope_theta ?? 10000);
  const partial = Number(p.partial_rotary_factor ?? raw.partial_rotary_factor ?? 1);
  if (partial !== 1) throw new Error(`partial_rotary_factor ${partial} is not supported`);
  const half = headDim / 2;
  // torch: 1 / base ** (arange(0, dim, 2).float() / dim), in float32
  const powers = (base: number) => Float64Array.from({ length: half }, (_, i) => f32(Math.pow(base, f32((2 * i) / headDim))));
  const inv = powers(theta).map((x) => f32(1 / x));
  const need = (k: string): number => {
    if (typeof p[k] !== 'number') throw new Error(`rope type '${type}' needs '${k}' in rope_parameters/rope_scaling`);
    return p[k] as number;
  };
  const opt = (k: string): number | undefined => (typeof p[k] === 'number' ? (p[k] as number) : undefined);
  // transformers' standardize_rope_params: a top-level original_max_position_embeddings (Phi-3)
  // wins, then the rope dict's, then max_position_embeddings.
  const originalMax = (): number => Number(raw.original_max_position_embeddings ?? p.original_max_position_embeddings ?? maxPositions);
  if (type === 'default') return { type, theta, invFreq: inv, attentionScaling: 1 };
  if (type === 'linear') {
    const f = need('factor');
    return { type, theta, invFreq: inv.map((x) => x / f), attentionScaling: 1 };
  }
  if (type === 'llama3') {
    const factor = need('factor'), lowF = need('low_freq_factor'), highF = need('high_freq_factor');
    const oldCtx = originalMax();
    const lowWave = oldCtx / lowF, highWave = oldCtx / highF;
    const out = inv.map((f) => {
      const wave = (2 * Math.PI) / f;
      if (wave < highWave) return f;
      if (wave > lowWave) return f / factor;
      const smooth = (oldCtx / wave - lowF) / (highF - lowF);
      return (1 - smooth) * (f / factor) + smooth * f;
    });
    return { type, theta, invFreq: out, attentionScaling: 1 };
  }
  if (type === 'dynamic') {
    // NTK-aware: a larger base once the sequence outgrows max_position_embeddings.
    const factor = need('factor');
    const len = Math.max(seqLen ?? maxPositions, maxPositions);
    const base = theta * Math.pow(factor * len / maxPositions - (factor - 1), headDim / (headDim - 2));
    return { type, theta, invFreq: powers(base).map((x) => f32(1 / x)), attentionScaling: 1 };
  }
  if (type === 'yarn') return yarn(type, theta, headDim, powers(theta), p, need('factor'), originalMax(), opt);
  if (type === 'longrope') {
    const orig = originalMax();
    const factor = opt('factor') ?? maxPositions / orig;
    const attn = opt('attention_factor') ?? (factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(orig)));
    const key = seqLen !== undefined && seqLen > orig ? 'long_factor' : 'short_factor';
    const ext = p[key];
    if (!Array.isArray(ext) || ext.length !== half) throw new Error(`rope type 'longrope' needs '${key}' with ${half} numbers`);
    const pw = powers(theta);
    return { type, theta, invFreq: pw.map((x, i) => f32(1 / f32(f32(Number(ext[i])) * x))), attentionScaling: attn };
  }
  throw new Error(`rope type '${type}' is not supported (supported: default, linear, llama3, dynamic, yarn, longrope)`);
}

/** YaRN: interpolate low frequencies, keep high ones, ramp between; scale cos/sin by mscale. */
function yarn(type: string, theta: number, dim: number, pos: Float64Array, p: Record<string, unknown>, factor: number,
  orig: number, opt: (k: string) => number | undefined): RopeSpec {
  const mscale = (scale: number, m = 1) => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1);
  const ms = opt('mscale'), msAll = opt('mscale_all_dim');
  const attn = opt('attention_factor') ?? (ms && msAll ? mscale(factor, ms) / mscale(factor, msAll) : mscale(factor));
  const betaFast = opt('beta_fast') || 32, betaSlow = opt('beta_slow') || 1;
  const corrDim = (rot: number) => (dim * Math.log(orig / (rot * 2 * Math.PI))) / (2 * Math.log(theta));
  let low = corrDim(betaFast), high = corrDim(betaSlow);
  if (p.truncate !== false) { low = Math.floor(low); high = Math.ceil(high); }
  low = Math.max(low, 0); high = Math.min(high, dim - 1);
  if (low === high) high += 0.001; // as transformers: avoid a zero-width ramp
  const invFreq = pos.map((x, i) => {
    const ramp = Math.min(1, Math.max(0, f32(f32(i - low) / f32(high - low))));
    const extra = f32(1 - ramp);
    const inter = f32(1 / f32(factor * x)), extrap = f32(1 / x);
    return f32(f32(inter * f32(1 - extra)) + f32(extrap * extra));
  });
  return { type, theta, invFreq, attentionScaling: attn };
}

/**
 * cos/sin tables grown on demand to cover every position asked for. For dynamic and longrope
 * the frequencies follow the sequence length seen, with transformers' dynamic_rope_update
 * rules (including its state: dynamic keeps the largest length until it drops back under
 * the original context).
 */
export class RopeCache {
  private cos: Tensor | null = null;
  private sin: Tensor | null = null;
  private n = 0;
  private cachedLen: number;
  spec: RopeSpec;
  private readonly original: RopeSpec;

  constructor(private readonly raw: RawConfig, private readonly headDim: number, private readonly maxPositions: number,
    private readonly initial: number) {
    this.original = this.spec = ropeSpec(raw, headDim, maxPositions);
    this.cachedLen = maxPositions;
  }

  private setSpec(s: RopeSpec): void {
    if (s === this.spec) return;
    this.spec = s;
    this.cos = this.sin = null; // old tables are dropped, not disposed: a graph may still read them
  }

  /** transformers: seq_len = max(position_ids) + 1, checked before every forward. */
  private update(seqLen: number): void {
    if (this.spec.type === 'dynamic') {
      if (seqLen > this.cachedLen) {
        this.setSpec(ropeSpec(this.raw, this.headDim, this.maxPositions, seqLen));
        this.cachedLen = seqLen;
      }
      if (seqLen < this.maxPositions && this.cachedLen > this.maxPositions) {
        this.setSpec(this.original);
        this.cachedLen = this.maxPositions;
      }
    } else if (this.spec.type === 'longrope') {
      const orig = Number(this.raw.original_max_position_embeddings ?? (obj(this.raw.rope_parameters) ?? obj(this.raw.rope_scaling) ?? {}).original_max_position_embeddings ?? this.maxPositions);
      this.setSpec(seqLen > orig ? ropeSpec(this.raw, this.headDim, this.maxPositions, seqLen) : this.original);
    }
  }

  /** Releases the tables (the model is being disposed). */
  dispose(): void {
    this.cos?.dispose(); this.sin?.dispose();
    this.cos = this.sin = null;
    this.n = 0;
  }

  tables(maxPos: number): { cos: Tensor; sin: Tensor } {
    this.update(maxPos + 1);
    if (!this.cos || maxPos >= this.n) {
      this.n = Math.max(this.initial, maxPos + 1, 2 * this.n);
      const t = ropeTables(this.spec.invFreq, this.n, this.spec.attentionScaling);
      keepAll(t.cos, t.sin);
      this.cos = t.cos; this.sin = t.sin;
    }
    return { cos: this.cos, sin: this.sin! };
  }
}
