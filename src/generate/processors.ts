// Logits processors and warpers, each the same rule as the transformers class of the same
// name. Each takes the ids so far (int32 [B, T]) and next-token scores (float32 [B, V]),
// changes the scores in place and returns them, so they chain like a LogitsProcessorList.
import type { Tensor } from '../tensor/tensor.js';

export type LogitsProcessor = (inputIds: Tensor, scores: Tensor) => Tensor;

function dims(inputIds: Tensor, scores: Tensor): { b: number; t: number; v: number } {
  if (inputIds.ndim !== 2 || inputIds.dtype !== 'int32') {
    throw new TypeError(`logits processor: inputIds must be int32 [B, T], got ${inputIds.dtype} ${inputIds.label()}`);
  }
  if (scores.ndim !== 2 || scores.dtype !== 'float32' || scores.shape[0] !== inputIds.shape[0]) {
    throw new TypeError(`logits processor: scores must be float32 [B, V] with B = ${inputIds.shape[0]}, got ${scores.dtype} ${scores.label()}`);
  }
  return { b: inputIds.shape[0], t: inputIds.shape[1], v: scores.shape[1] };
}

/** RepetitionPenaltyLogitsProcessor: every token already in the row is made less likely. */
export function repetitionPenaltyProcessor(penalty: number): LogitsProcessor {
  if (!(penalty > 0)) throw new RangeError(`repetitionPenalty must be a positive number, got ${penalty}`);
  return (inputIds, scores) => {
    const { b, t, v } = dims(inputIds, scores);
    const ids = inputIds.ints, s = scores.data;
    for (let r = 0; r < b; r++) {
      const seen = new Set<number>();
      for (let j = 0; j < t; j++) seen.add(ids[r * t + j]);
      for (const id of seen) {
        if (id < 0 || id >= v) continue;
        const x = s[r * v + id];
        s[r * v + id] = x < 0 ? x * penalty : x / penalty;
      }
    }
    return scores;
  };
}

/** NoRepeatNGramLogitsProcessor: bans any token that would repeat an n-gram of the row. */
export function noRepeatNgramProcessor(ngramSize: number): LogitsProcessor {
  if (!Number.isInteger(ngramSize) || ngramSize <= 0) throw new RangeError(`noRepeatNgramSize must be a positive integer, got ${ngramSize}`);
  return (inputIds, scores) => {
    const { b, t, v } = dims(inputIds, scores);
    if (t + 1 < ngramSize) return scores;
    const ids = inputIds.ints, s = scores.data, n = ngramSize;
    for (let r = 0; r < b; r++) {
      const row = ids.subarray(r * t, (r + 1) * t);
      // Every earlier n-gram whose first n-1 tokens equal the row's last n-1 tokens bans its last token.
      for (let i = 0; i + n <= t; i++) {
        let match = true;
        for (let k = 0; k < n - 1 && match; k++) match = row[i + k] === row[t - n + 1 + k];
        const banned = row[i + n - 1];
        if (match && banned >= 0 && banned < v) s[r * v + banned] = -Infinity;
      }
    }
    return scores;
  };
}

/** TemperatureLogitsWarper: scores / temperature. */
export function temperatureWarper(temperature: number): LogitsProcessor {
  if (!(temperature > 0) || !Number.isFinite(temperature)) throw new RangeError(`temperature must be a strictly positive number, got ${temperature}`);
  return (inputIds, scores) => {
    dims(inputIds, scores);
    const s = scores.data;
    for (let i = 0; i < s.length; i++) s[i] = s[i] / temperature;
    return scores;
  };
}

/** TopKLogitsWarper: keeps the tokens scoring at least the k-th best score (ties kept). */
export function topKWarper(topK: number, minTokensToKeep = 1, filterValue = -Infinity): LogitsProcessor {
  if (!Number.isInteger(topK) || topK <= 0) throw new RangeError(`topK must be a positive integer, got ${topK}`);
  return (inputIds, scores) => {
    const { b, v } = dims(inputIds, scores);
    const k = Math.min(Math.max(topK, minTokensToKeep), v);
    const s = scores.data;
    for (let r = 0; r < b; r++) {
      const row = s.subarray(r * v, (r + 1) * v);
      const kth = Float32Array.from(row).sort((x, y) => y - x)[k - 1];
      for (let i = 0; i < v; i++) if (row[i] < kth) row[i] = filterValue;
    }
    return scores;
  };
}

/** TopPLogitsWarper: keeps the smallest set of best tokens whose probability reaches topP. */
export function topPWarper(topP: number, minTokensToKeep = 1, filterValue = -Infinity): LogitsProcessor {
  if (!(topP >= 0 && topP <= 1)) throw new RangeError(`topP must be a number in [0, 1], got ${topP}`);
  if (!Number.isInteger(minTokensToKeep) || minTokensToKeep < 1) throw new RangeError(`minTokensToKeep must be a positive integer, got ${minTokensToKeep}`);
  return (inputIds, scores) => {
    const { b, v } = dims(inputIds, scores);
    const s = scores.data;
    const order = new Int32Array(v);
    for (let r = 0; r < b; r++) {
      const row = s.subarray(r * v, (r + 1) * v);
      for (let i = 0; i < v; i++) order[i] = i;
      // Ascending like transformers (sort descending=False), stable for ties.
      order.sort((x, y) => row[x] - row[y] || x - y);
      let max = -Infinity;
      for (let i = 0; i < v; i++) if (row[i] > max) max = row[i];
      let z = 0;
      for (let i = 0; i < v; i++) z += Math.exp(row[i] - max);
      // Remove from the low end while the cumulative probability stays <= 1 - topP.
      // float32 accumulation as torch's softmax + cumsum, so borderline cases agree.
      let cum = 0;
      for (let j = 0; j < v - minTokensToKeep; j++) {
        const i = order[j];
        cum = Math.fround(cum + Math.fround(Math.exp(row[i] - max) / z));
        if (cum <= Math.fround(1 - topP)) row[i] = filterValue; else break;
      }
    }
    return scores;
  };
}

export interface ProcessorOptions {
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  repetitionPenalty?: number;
  noRepeatNgramSize?: number;
  minTokensToKeep?: number;
}

/**
 * The list generate() applies, in transformers' order: repetition penalty, no-repeat n-gram,
 * then (only when sampling) temperature, top-k, top-p. Neutral settings add nothing.
 */
export function buildLogitsProcessors(opts: ProcessorOptions): LogitsProcessor[] {
  const list: LogitsProcessor[] = [];
  const keepN = opts.minTokensToKeep ?? 1;
  if (opts.repetitionPenalty !== undefined && opts.repetitionPenalty !== 1) list.push(repetitionPenaltyProcessor(opts.repetitionPenalty));
  if (opts.noRepeatNgramSize) list.push(noRepeatNgramProcessor(opts.noRepeatNgramSize));
  if (opts.doSample) {
    if (opts.temperature !== undefined && opts.temperature !== 1) list.push(temperatureWarper(opts.temperature));
    if (opts.topK !== undefined && opts.topK !== 0) list.push(topKWarper(opts.topK, keepN));
    if (opts.topP !== undefined && opts.topP < 1) list.push(topPWarper(opts.topP, keepN));
  }
  return list;
}

export function applyProcessors(list: LogitsProcessor[], inputIds: Tensor, scores: Tensor): Tensor {
  for (const p of list) scores = p(inputIds, scores);
  return scores;
}
