// Pieces every architecture shares: config field lookup, attention masks, head splitting,
// pooling, the losses transformers computes, the KV cache append and weight init.
import { Tensor, empty, isGradEnabled } from '../tensor/tensor.js';
import { keep } from '../tensor/memory.js';
import { getBackend } from '../tensor/registry.js';
import {
  abs, add, affine, concat, exp, log, mean, mul, permute, relu, reshape, slice, square, sub, tensor, toFloat32,
} from '../tensor/ops/basic.js';
import { crossEntropy, indexSelect } from '../tensor/ops/nn.js';
import { linearCrossEntropy } from '../tensor/ops/loss.js';
import { checkpoint } from '../tensor/ops/checkpoint.js';
import type { Rng } from '../tensor/random.js';
import { Module } from '../nn/module.js';
import { Conv1D, Embedding, LayerNorm, Linear, RMSNorm, type LinearLike } from '../nn/layers.js';
import type { KVCache, ModelConfig } from './types.js';
import { parseConfig, withNumLabels } from '../io/config.js';
import { f32ToBf16 } from '../io/half.js';

export type RawConfig = Record<string, unknown>;

/** First numeric field among keys, else def (throws when required and absent). */
export function num(raw: RawConfig, keys: string[], def?: number): number {
  for (const k of keys) {
    const v = raw[k];
    if (typeof v === 'number') return v;
  }
  if (def === undefined) throw new Error(`config.json is missing '${keys.join("' / '")}'`);
  return def;
}

export function optNum(raw: RawConfig, key: string): number | null {
  const v = raw[key];
  return typeof v === 'number' ? v : null;
}

export function str(raw: RawConfig, keys: string[], def: string): string {
  for (const k of keys) if (typeof raw[k] === 'string') return raw[k] as string;
  return def;
}

export function bool(raw: RawConfig, key: string, def: boolean): boolean {
  return typeof raw[key] === 'boolean' ? (raw[key] as boolean) : def;
}

/** The common ModelConfig view of a raw config.json object (the one parser: io/config.ts). */
export function toModelConfig(raw: RawConfig): ModelConfig { return parseConfig(raw); }

/**
 * Accepts a parsed ModelConfig or a raw config.json object. A parsed one is re-read from its
 * raw object but keeps its resolved labels (a numLabels override may have set them).
 */
export function asModelConfig(c: ModelConfig | RawConfig): ModelConfig {
  if ('raw' in c && 'modelType' in c && typeof c.raw === 'object') {
    const mc = c as ModelConfig, p = parseConfig(mc.raw);
    if (mc.numLabels !== undefined && mc.id2label) return { ...p, numLabels: mc.numLabels, id2label: mc.id2label, label2id: mc.label2id ?? p.label2id };
    if (mc.numLabels !== undefined && mc.numLabels !== p.numLabels) return withNumLabels(p, mc.numLabels);
    return p;
  }
  return parseConfig(c as RawConfig);
}

// ---------- module plumbing ----------

/** A parameterless container, so that children get Hugging Face's dotted names. */
export class Container extends Module {}

/** Calls the linear-like module at `path` (looked up each time: peft may have replaced it). */
export function lin(m: Module, path: string, x: Tensor): Tensor {
  return (m.getSubmodule(path) as LinearLike).forward(x);
}

export function norm(m: Module, path: string, x: Tensor): Tensor {
  return (m.getSubmodule(path) as LayerNorm | RMSNorm).forward(x);
}

export function emb(m: Module, path: string, ids: Tensor): Tensor {
  return (m.getSubmodule(path) as Embedding).forward(ids);
}

/**
 * transformers' _init_weights: normal(0, std) for linear and embedding weights, zero biases,
 * zero padding row; norms stay ones/zeros.
 */
export function initWeights(root: Module, std: number, rng: Rng, paddingIdxOf: (name: string) => number | null = () => null,
  onlyModules?: Set<string>): void {
  for (const [name, m] of root.namedModules()) {
    if (onlyModules && !onlyModules.has(name)) continue;
    const paddingIdx = paddingIdxOf(name);
    if (m instanceof Linear || m instanceof Conv1D || m instanceof Embedding) {
      const wt = m.weight;
      // A bf16 weight (loaded with dtype 'bfloat16') is drawn in float32, then rounded.
      const w = wt.dtype === 'float32' ? wt.data : new Float32Array(wt.size);
      for (let i = 0; i < w.length; i++) w[i] = rng.normal() * std;
      const b = m.getParameter('bias');
      if (b) b.data.fill(0);
      if (m instanceof Embedding && paddingIdx !== null && paddingIdx >= 0 && paddingIdx < m.numEmbeddings) {
        w.fill(0, paddingIdx * m.embeddingDim, (paddingIdx + 1) * m.embeddingDim);
      }
      if (wt.dtype === 'bfloat16') f32ToBf16(w, wt.halfBits);
    }
  }
}

/** Runs one layer, recomputed in backward when checkpointing is on and a graph is recorded. */
export function maybeCheckpoint(on: boolean, fn: (h: Tensor) => Tensor, h: Tensor, rng: Rng): Tensor {
  return on && isGradEnabled() ? checkpoint(fn, [h], [rng]) : fn(h);
}

// ---------- heads ----------

/** [B, T, H*D] -> [B, H, T, D] */
export function splitHeads(x: Tensor, heads: number, dim: number): Tensor {
  const [b, t] = x.shape;
  return permute(reshape(x, [b, t, heads, dim]), [0, 2, 1, 3]);
}

/** [B, H, T, D] -> [B, T, H*D] */
export function mergeHeads(x: Tensor): Tensor {
  const [b, h, t, d] = x.shape;
  return reshape(permute(x, [0, 2, 1, 3]), [b, t, h * d]);
}

// ---------- masks ----------

/** torch.finfo(float32).min: what transformers' eager attention adds for masked keys. */
export const MASK_MIN = -3.4028234663852886e38;

/**
 * Additive attention bias [B or 1, 1, T or 1, C] for T new queries after `past` cached
 * positions (C = capacity, the KV buffers' length, at least S = past + T; keys S..C-1 are
 * -inf). Key j is visible to query i when attentionMask[b, j] is 1, and, if causal,
 * j <= past + i and (with a sliding window w) j > past + i - w. Masked entries get the
 * finite float32 minimum, so a fully masked row (a left pad) turns into uniform attention
 * as in transformers' eager path instead of NaN. Null when nothing is masked.
 */
export function attentionBias(b: number, t: number, past: number, attentionMask: Tensor | null | undefined,
  opts: { causal: boolean; slidingWindow?: number | null; capacity?: number }): Tensor | null {
  const s = past + t;
  // Keys s..cap-1 are empty KV cache slots: -inf, so that a fully masked row stays uniform
  // over the real keys as before.
  const cap = Math.max(s, opts.capacity ?? s);
  let am: Int32Array | Float32Array | null = null;
  if (attentionMask) {
    if (attentionMask.ndim !== 2 || attentionMask.shape[0] !== b || attentionMask.shape[1] !== s) {
      throw new Error(`attentionMask must be [${b}, ${s}] (batch, cached + new positions), got [${attentionMask.shape.join(', ')}]`);
    }
    am = attentionMask.dtype === 'int32' ? attentionMask.ints : attentionMask.data;
    let all = true;
    for (let i = 0; i < am.length && all; i++) if (!am[i]) all = false;
    if (all) am = null;
  }
  const w = opts.slidingWindow ?? null;
  const windowed = opts.causal && w !== null && w > 0 && s > w;
  if (!am && !opts.causal && cap === s) return null;
  if (!am && opts.causal && t === 1 && !windowed && cap === s) return null; // one query sees everything
  const bb = am ? b : 1, tt = opts.causal ? t : 1;
  const out = empty([bb, 1, tt, cap], 'float32', false);
  const d = out.data;
  for (let bi = 0; bi < bb; bi++) {
    for (let i = 0; i < tt; i++) {
      const qpos = past + i, row = (bi * tt + i) * cap;
      for (let j = 0; j < s; j++) {
        let ok = !am || am[bi * s + j] !== 0;
        if (ok && opts.causal) ok = j <= qpos && (!windowed || j > qpos - (w as number));
        d[row + j] = ok ? 0 : MASK_MIN;
      }
      for (let j = s; j < cap; j++) d[row + j] = -Infinity;
    }
  }
  return out;
}

/** Position ids as rope/embedding indices: [T] when shared by the batch, else [B*T]. */
export function positionsFor(b: number, t: number, past: number, positionIds: Tensor | null | undefined): Tensor {
  if (positionIds) {
    if (positionIds.dtype !== 'int32') throw new TypeError('positionIds must be int32');
    const n = positionIds.size;
    if (n !== t && n !== b * t) throw new Error(`positionIds must be [${b}, ${t}] or [1, ${t}], got [${positionIds.shape.join(', ')}]`);
    return positionIds.shareAs([n]);
  }
  const p = empty([t], 'int32', false);
  for (let i = 0; i < t; i++) p.ints[i] = past + i;
  return p;
}

// ---------- KV cache ----------

export function cacheLength(past: KVCache | null | undefined): number {
  return past ? past.length : 0;
}

/**
 * Key positions (the k/v buffers' third dim) once t more are appended to past. Under
 * noGrad the buffers grow by doubling and new positions are written in place, so decoding
 * T tokens copies O(T) cache bytes instead of O(T^2); a cache made by a first forward, or
 * while a graph is recorded (the differentiable concat path), is exactly as long as its
 * content.
 */
export function kvCapacity(past: KVCache | null | undefined, t: number, maxLength?: number | null): number {
  const len = cacheLength(past);
  if (!past || !past.layers.length || isGradEnabled()) return len + t;
  const cap = past.layers[0].k.shape[2];
  if (len + t <= cap) return cap;
  // Doubling, but never past the length the caller says the cache will reach.
  const grown = maxLength ? Math.min(2 * cap, maxLength) : 2 * cap;
  return Math.max(len + t, grown);
}

/**
 * Appends this step's k/v [B, Hkv, T, D] to layer i of the cache; returns the k/v buffers
 * [B, Hkv, C, D] with C = capacity (default kvCapacity(past, T)): positions past.length..past.length+T-1 hold
 * the new entries and positions from there to C are zeros (the attention bias masks them).
 * Under noGrad the past buffers are written in place when they have room (so a cache is
 * consumed by the forward that extends it: branching from it needs a copy).
 */
export function appendKv(past: KVCache | null | undefined, next: KVCache | null, i: number, k: Tensor, v: Tensor,
  capacity?: number): { k: Tensor; v: Tensor } {
  const prev = past?.layers[i];
  let kk: Tensor, vv: Tensor;
  if (!prev) {
    kk = k; vv = v;
  } else if (isGradEnabled()) {
    const len = past!.length;
    const upto = (x: Tensor) => x.shape[2] === len ? x : slice(x, 2, 0, len);
    kk = concat([upto(prev.k), k], 2);
    vv = concat([upto(prev.v), v], 2);
  } else {
    const cap = capacity ?? kvCapacity(past, k.shape[2]);
    kk = writeKv(prev.k, k, past!.length, cap);
    vv = writeKv(prev.v, v, past!.length, cap);
  }
  if (next) next.layers[i] = { k: kk, v: vv };
  return { k: kk, v: vv };
}

/** Writes x [B, H, T, D] at position `at` of buf [B, H, C, D] (a new zeroed buffer of capacity cap when buf is smaller). */
function writeKv(buf: Tensor, x: Tensor, at: number, cap: number): Tensor {
  const [b, h, c, d] = buf.shape;
  if (x.shape[0] !== b || x.shape[1] !== h || x.shape[3] !== d) {
    throw new Error(`KV cache ${buf.label()} cannot take new entries ${x.label()}`);
  }
  const be = getBackend();
  let out = buf;
  if (cap > c) {
    out = empty([b, h, cap, d], 'float32', true);
    be.stridedAdd(buf.buf, buf.shape, out.buf, 0, [h * cap * d, cap * d, d, 1]);
  }
  // Adding onto zeros is an exact copy into the strided slot.
  be.stridedAdd(x.buf, x.shape, out.buf, at * d, [h * cap * d, cap * d, d, 1]);
  return out;
}

// ---------- pooling ----------

/**
 * Rows x[b, idx[b]] of x [B, T, ...] -> [B, ...]. The index is the rightmost token that is
 * not padTokenId (transformers' sequence-classification pooling; works for left and right
 * padding), or the last token when there is no pad token.
 */
export function poolLastNonPad(x: Tensor, inputIds: Tensor, padTokenId: number | null): Tensor {
  const [b, t] = inputIds.shape;
  if (padTokenId === null && b !== 1) {
    throw new Error('cannot pool a batch of more than one sequence: config has no pad_token_id (set model.config.raw.pad_token_id)');
  }
  const idx = empty([b], 'int32', false);
  const ids = inputIds.ints;
  for (let bi = 0; bi < b; bi++) {
    let last = t - 1;
    if (padTokenId !== null) {
      last = 0; // argmax of all-zero picks index 0, as torch does
      for (let j = t - 1; j >= 0; j--) if (ids[bi * t + j] !== padTokenId) { last = j; break; }
    }
    idx.ints[bi] = bi * t + last;
  }
  return poolAt(x, idx);
}

/** x[b, 0] of x [B, T, H] -> [B, H] (the [CLS] token). */
export function poolFirst(x: Tensor): Tensor {
  const b = x.shape[0], t = x.shape[1];
  const idx = empty([b], 'int32', false);
  for (let bi = 0; bi < b; bi++) idx.ints[bi] = bi * t;
  return poolAt(x, idx);
}

function poolAt(x: Tensor, flatIdx: Tensor): Tensor {
  const [b, t] = x.shape;
  return indexSelect(reshape(x, [b * t, ...x.shape.slice(2)]), flatIdx);
}

// ---------- losses ----------

/** Labels [B, T] shifted left for causal LM: target at t is labels[t + 1], -100 at the end. */
function shiftLabels(labels: Tensor, b: number, t: number): Tensor {
  if (labels.dtype !== 'int32' || labels.size !== b * t) throw new Error(`labels must be int32 [${b}, ${t}], got ${labels.dtype} [${labels.shape.join(', ')}]`);
  const shifted = empty([b * t], 'int32', false);
  const l = labels.ints, s = shifted.ints;
  for (let bi = 0; bi < b; bi++) {
    for (let j = 0; j < t; j++) s[bi * t + j] = j + 1 < t ? l[bi * t + j + 1] : -100;
  }
  return shifted;
}

/** Causal LM loss: logits at t predict labels at t+1 (shifted here), -100 ignored. */
export function causalLmLoss(logits: Tensor, labels: Tensor): Tensor {
  const [b, t, v] = logits.shape;
  return crossEntropy(reshape(logits, [b * t, v]), shiftLabels(labels, b, t));
}

/**
 * hidden [B, T, H] cut to its last logitsToKeep positions (all when 0 or >= T): the head is
 * the largest GEMM of a decoding step, so only the kept rows go through it.
 */
export function keptPositions(hidden: Tensor, logitsToKeep = 0, labels?: Tensor | null): Tensor {
  if (!logitsToKeep) return hidden;
  if (!Number.isInteger(logitsToKeep) || logitsToKeep < 0) throw new RangeError(`logitsToKeep must be a non-negative integer, got ${logitsToKeep}`);
  if (labels) throw new Error('logitsToKeep cannot be combined with labels (the loss needs the logits of every position)');
  const t = hidden.shape[1];
  return logitsToKeep < t ? slice(hidden, 1, t - logitsToKeep, t) : hidden;
}

/**
 * The lm head and its loss. With labels and returnLogits false, and a plain Linear head
 * with a float32 (or frozen bfloat16) weight and no bias (LoRA or 4-bit heads take the full path), the loss
 * comes from linearCrossEntropy and logits is an empty [B, 0, V]: no [B, T, V] tensor.
 */
export function causalLmHead(m: Module, hidden: Tensor, labels: Tensor | null | undefined, returnLogits = true,
  logitsToKeep = 0): { logits: Tensor; loss?: Tensor } {
  hidden = keptPositions(hidden, logitsToKeep, labels);
  const head = m.getSubmodule('lm_head');
  const w = head instanceof Linear ? head.getParameter('weight') : null;
  if (labels && !returnLogits && w && (w.dtype === 'float32' || w.dtype === 'bfloat16') && !head.getParameter('bias')) {
    const [b, t, hd] = hidden.shape;
    const loss = linearCrossEntropy(reshape(hidden, [b * t, hd]), w, shiftLabels(labels, b, t));
    return { logits: tensor(new Float32Array(0), [b, 0, w.shape[0]]), loss };
  }
  const logits = lin(m, 'lm_head', hidden);
  return { logits, loss: labels ? causalLmLoss(logits, labels) : undefined };
}

/** Token classification: cross-entropy over every position, -100 ignored. */
export function tokenClsLoss(logits: Tensor, labels: Tensor): Tensor {
  const n = logits.shape[logits.ndim - 1];
  if (labels.dtype !== 'int32' || labels.size * n !== logits.size) throw new Error(`labels must be int32 [${logits.shape.slice(0, -1).join(', ')}], got ${labels.dtype} [${labels.shape.join(', ')}]`);
  return crossEntropy(reshape(logits, [labels.size, n]), labels.shareAs([labels.size]));
}

export type ProblemType = 'regression' | 'single_label_classification' | 'multi_label_classification';

/**
 * The decoder classifiers' head (GPT-2, Llama family, parallel decoders, OPT ...ForSequenceClassification):
 * the `score` Linear on each row's last non-pad token, and seqClsLoss when labels are given.
 */
export function lastTokenClassifierHead(m: Module, hidden: Tensor, inputIds: Tensor, labels: Tensor | null | undefined,
  o: { padTokenId: number | null; numLabels: number; problemType?: unknown }): { logits: Tensor; loss: Tensor | undefined } {
  const logits = lin(m, 'score', poolLastNonPad(hidden, inputIds, o.padTokenId));
  const loss = labels ? seqClsLoss(logits, labels, o.numLabels, o.problemType as string | undefined) : undefined;
  return { logits, loss };
}

/**
 * Sequence classification loss as transformers picks it: MSE when numLabels is 1,
 * cross-entropy for integer labels, BCE-with-logits for float multi-hot labels
 * (config.problem_type overrides).
 */
export function seqClsLoss(logits: Tensor, labels: Tensor, numLabels: number, problemType?: string | null): Tensor {
  const b = logits.shape[0];
  let pt = problemType as ProblemType | null | undefined;
  if (!pt) pt = numLabels === 1 ? 'regression' : labels.dtype === 'int32' ? 'single_label_classification' : 'multi_label_classification';
  if (pt === 'regression') {
    const y = toFloat32(labels);
    const target = numLabels === 1 ? y.shareAs([y.size]) : y;
    const pred = numLabels === 1 ? reshape(logits, [b]) : logits;
    if (target.size !== pred.size) throw new Error(`regression labels must have ${pred.size} values, got ${target.size}`);
    return mean(square(sub(pred, target.shareAs(pred.shape))));
  }
  if (pt === 'single_label_classification') {
    if (labels.dtype !== 'int32' || labels.size !== b) throw new Error(`labels must be int32 [${b}] class ids, got ${labels.dtype} [${labels.shape.join(', ')}]`);
    return crossEntropy(reshape(logits, [b, numLabels]), labels.shareAs([b]));
  }
  if (pt === 'multi_label_classification') {
    const y = toFloat32(labels);
    if (y.size !== logits.size) throw new Error(`multi-label labels must be [${logits.shape.join(', ')}], got [${labels.shape.join(', ')}]`);
    return bceWithLogits(logits, y.shareAs(logits.shape));
  }
  throw new Error(`unknown problem_type '${String(pt)}'`);
}

/** mean(max(x,0) - x*y + log(1 + exp(-|x|))), the stable form torch uses. */
export function bceWithLogits(x: Tensor, y: Tensor): Tensor {
  const softplusNegAbs = log(affine(exp(affine(abs(x), -1, 0)), 1, 1));
  return mean(add(sub(relu(x), mul(x, y)), softplusNegAbs));
}

/** Keeps lazily built tables (RoPE) alive past any tidy() scope they were made in. */
export function keepAll(...ts: Tensor[]): void { for (const t of ts) keep(t); }
