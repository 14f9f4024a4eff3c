// RoPE inverse frequencies from a config, as transformers' modeling_rope_utils computes them:
// "default", "linear" and "llama3" types, read from rope_parameters (transformers 5) or
// rope_theta + rope_scaling (transformers 4).
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

export function ropeSpec(raw: RawConfig, headDim: number, maxPositions: number): RopeSpec {
  const params = obj(raw.rope_parameters) ?? {};
  const scaling = obj(raw.rope_scaling) ?? {};
  const p: Record<string, unknown> = { ...scaling, ...params };
  const type = String(p.rope_type ?? p.type ?? 'default');
  const theta = Number(p.rope_theta ?? raw.rope_theta ?? 10000);
  const partial = Number(p.partial_rotary_factor ?? raw.partial_rotary_factor ?? 1);
  if (partial !== 1) throw new Error(`partial_rotary_factor ${partial} is not supported`);
  const half = headDim / 2;
  const inv = new Float64Array(half);
  // torch: 1 / base ** (arange(0, dim, 2).float() / dim), in float32
  for (let i = 0; i < half; i++) inv[i] = Math.fround(1 / Math.fround(Math.pow(theta, Math.fround((2 * i) / headDim))));
  const need = (k: string): number => {
    if (typeof p[k] !== 'number') throw new Error(`rope type '${type}' needs '${k}' in rope_parameters/rope_scaling`);
    return p[k] as number;
  };
  if (type === 'default') return { type, theta, invFreq: inv, attentionScaling: 1 };
  if (type === 'linear') {
    const f = need('factor');
    return { type, theta, invFreq: inv.map((x) => x / f), attentionScaling: 1 };
  }
  if (type === 'llama3') {
    const factor = need('factor'), lowF = need('low_freq_factor'), highF = need('high_freq_factor');
    const oldCtx = typeof p.original_max_position_embeddings === 'number' ? p.original_max_position_embeddings : maxPositions;
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
  throw new Error(`rope type '${type}' is not supported (supported: default, linear, llama3)`);
}

/** cos/sin tables grown on demand to cover every position asked for. */
export class RopeCache {
  private cos: Tensor | null = null;
  private sin: Tensor | null = null;
  private n = 0;
  constructor(readonly spec: RopeSpec, private readonly initial: number) {}

  tables(maxPos: number): { cos: Tensor; sin: Tensor } {
    if (!this.cos || maxPos >= this.n) {
      // Old tables are dropped, not disposed: a graph being built may still read them.
      this.n = Math.max(this.initial, maxPos + 1, 2 * this.n);
      const t = ropeTables(this.spec.invFreq, this.n, this.spec.attentionScaling);
      keepAll(t.cos, t.sin);
      this.cos = t.cos; this.sin = t.sin;
    }
    return { cos: this.cos, sin: this.sin! };
  }
}
