// Beam search as transformers' _beam_search does it (the vectorised version of 4.50+):
// per step, log-softmax of the last logits, then the logits processors, plus each running
// beam's score; the best max(2, 1 + #eos) * numBeams continuations of each prompt are
// kept; those hitting eos (or the length limit) among the first numBeams become finished
// hypotheses scored with the length penalty, the best numBeams others keep running. The
// stopping rule (earlyStopping true / false / 'never') and its heuristic are transformers'.
// Scores are float32 operations in torch's order, so near ties resolve the same way.
import { Tensor, noGrad } from '../tensor/tensor.js';
import { tidy, keep } from '../tensor/memory.js';
import { tensor } from '../tensor/ops/basic.js';
import { indexSelect, logSoftmax } from '../tensor/ops/nn.js';
import type { KVCache } from '../models/types.js';
import { LogitsProcessor, applyProcessors } from './processors.js';
import type { CausalLM } from './generate.js';

export interface BeamSearchOptions {
  numBeams: number;
  /** Finished scores are divided by (generated length) ** lengthPenalty. Default 1. */
  lengthPenalty?: number;
  /** true: stop once numBeams hypotheses finished; false: transformers' heuristic; 'never': canonical beam search. Default false. */
  earlyStopping?: boolean | 'never';
  /** Best hypotheses returned per prompt (<= numBeams). Default 1. */
  numReturnSequences?: number;
}

interface Hyp { seq: number[]; score: number; done: boolean; genLen: number }

const f32 = Math.fround;
const NEG = -1e9;

/**
 * Runs beam search from prompts (rows of ids and their 0/1 masks, all the same length).
 * Returns numReturnSequences rows per prompt, best first, padded to a common length with
 * transformers' fill value (pad, else the first eos).
 */
export function* beamSearch(model: CausalLM, prompts: number[][], promptMask: number[][], maxNew: number, eos: number[],
  pad: number | null, processors: LogitsProcessor[], useCache: boolean, opts: BeamSearchOptions): Generator<void, number[][]> {
  const K = opts.numBeams, lp = opts.lengthPenalty ?? 1, es = opts.earlyStopping ?? false;
  const R = opts.numReturnSequences ?? 1;
  if (!Number.isInteger(K) || K < 1) throw new RangeError(`numBeams must be a positive integer, got ${K}`);
  if (!Number.isInteger(R) || R < 1 || R > K) throw new RangeError(`numReturnSequences must be an integer in [1, numBeams = ${K}], got ${R}`);
  if (es !== true && es !== false && es !== 'never') throw new TypeError(`earlyStopping must be true, false or 'never', got ${String(es)}`);
  const B = prompts.length, T = prompts[0].length, maxLength = T + maxNew;
  // transformers: `pad_token_id or eos_token_id[0] if eos_token_id is not None else -1`.
  const fill = eos.length ? (pad ? pad : eos[0]) : -1;
  if (maxNew === 0) return prompts.flatMap((p) => Array.from({ length: R }, () => p.slice()));

  // Rows b*K + k; every beam starts as the prompt, only beam 0 with a live score.
  let running: number[][] = [];
  const mask: number[][] = [];
  let runScore = new Float32Array(B * K);
  for (let b = 0; b < B; b++) {
    for (let k = 0; k < K; k++) {
      running.push(prompts[b].slice());
      mask.push(promptMask[b].slice());
      runScore[b * K + k] = k === 0 ? 0 : NEG;
    }
  }
  const fin: Hyp[][] = prompts.map((p) => Array.from({ length: K }, () => ({ seq: p.slice(), score: NEG, done: false, genLen: 0 })));
  const unsatisfied = new Array(B).fill(true);
  const keepN = Math.max(2, 1 + eos.length) * K;

  let cache: KVCache | null = null;
  try {
    for (let curLen = T; ; curLen++) {
      const step = forwardStep(model, running, mask, cache, useCache, maxLength);
      const v = step.v;
      replaceCache(cache, step.cache);
      cache = step.cache;
      // log-softmax, then the processors on the running sequences (transformers' order).
      const logp = noGrad(() => tidy(() => {
        const ls = logSoftmax(tensor(step.last, [B * K, v]));
        const ids = tensor(Int32Array.from(running.flat()), [B * K, curLen], { dtype: 'int32' });
        return Float32Array.from(applyProcessors(processors, ids, tensor(Float32Array.from(ls.data), [B * K, v])).data);
      }));

      const nextRunning: number[][] = [], nextScore = new Float32Array(B * K), src = new Int32Array(B * K);
      let allHit = true;
      for (let b = 0; b < B; b++) {
        const cand = topCandidates(logp, runScore, b, K, v, keepN);
        const hits = cand.map((c) => curLen + 1 >= maxLength || eos.includes(c.idx % v));
        if (hits.some((h) => !h)) allHit = false;
        // Running beams: the best numBeams continuations that did not stop.
        const runOrder = topIndices(cand.map((c, i) => (hits[i] ? f32(c.score + NEG) : c.score)), K);
        runOrder.forEach((ci, j) => {
          const c = cand[ci], row = b * K + Math.floor(c.idx / v);
          nextRunning.push([...running[row], c.idx % v]);
          nextScore[b * K + j] = hits[ci] ? f32(c.score + NEG) : c.score;
          src[b * K + j] = row;
        });
        // Finished hypotheses: stopped continuations among the first numBeams, merged with the old ones.
        const genLen = curLen + 1 - T;
        const denom = f32(genLen ** lp);
        const full = es === true && fin[b].every((h) => h.done);
        const merged: Hyp[] = fin[b].slice();
        cand.forEach((c, i) => {
          let s = f32(c.score / denom);
          if (full) s = f32(s + NEG);
          if (!unsatisfied[b]) s = f32(s + NEG);
          const did = hits[i] && i < K;
          if (!did) s = f32(s + NEG);
          merged.push({ seq: [...running[b * K + Math.floor(c.idx / v)], c.idx % v], score: s, done: did, genLen });
        });
        fin[b] = topIndices(merged.map((h) => h.score), K).map((i) => merged[i]);
      }
      running = nextRunning;
      runScore = nextScore;
      for (const m of mask) m.push(1);
      if (useCache && cache) {
        const reordered = reorderCache(cache, src);
        if (reordered !== cache) { replaceCache(cache, reordered); cache = reordered; }
      }

      const len = curLen + 1;
      for (let b = 0; b < B; b++) {
        if (!unsatisfied[b]) continue;
        const bestLen = es === 'never' && lp > 0 ? maxLength - T : len - T;
        const best = f32(runScore[b * K] / f32(bestLen ** lp));
        const minFin = Math.min(...fin[b].map((h) => h.score));
        unsatisfied[b] = fin[b].some((h) => best > (h.done ? minFin : NEG));
      }
      const allDone = fin.every((hs) => hs.every((h) => h.done));
      const goOn = unsatisfied.some(Boolean) && !(allDone && es === true) && !allHit;
      if (!goOn) break;
      yield; // a step boundary: the async driver lets the event loop run here
    }
  } finally {
    disposeCache(cache);
  }

  const out: Hyp[] = fin.flatMap((hs) => hs.slice(0, R));
  const width = T + Math.max(...out.map((h) => h.genLen));
  return out.map((h) => {
    const row = h.seq.slice(0, width);
    while (row.length < width) row.push(fill);
    return row;
  });
}

/** The keepN best (score, flat index over beams * vocab) of prompt b, best first, lower index first on ties. */
function topCandidates(logp: Float32Array, runScore: Float32Array, b: number, K: number, v: number, keepN: number): { score: number; idx: number }[] {
  const best: { score: number; idx: number }[] = [];
  for (let k = 0; k < K; k++) {
    const row = (b * K + k) * v, base = runScore[b * K + k];
    for (let i = 0; i < v; i++) {
      const s = f32(logp[row + i] + base);
      if (best.length === keepN && !(s > best[keepN - 1].score)) continue;
      let j = best.length;
      while (j > 0 && s > best[j - 1].score) j--;
      best.splice(j, 0, { score: s, idx: k * v + i });
      if (best.length > keepN) best.pop();
    }
  }
  return best;
}

/** Indices of the n largest values, largest first, earlier index first on ties (torch.topk on these small rows). */
function topIndices(xs: number[], n: number): number[] {
  return xs.map((_, i) => i).sort((a, b) => xs[b] - xs[a] || a - b).slice(0, n);
}

/** One forward over the new positions; returns the last position's logits [N, V] and the cache. */
export function forwardStep(model: CausalLM, rows: number[][], mask: number[][], cache: KVCache | null, useCache: boolean, maxLength: number):
  { last: Float32Array; v: number; cache: KVCache | null } {
  const n = rows.length, curLen = rows[0].length;
  const feedFrom = useCache && cache ? cache.length : 0;
  return noGrad(() => tidy(() => {
    const t = curLen - feedFrom;
    const ids = tensor(Int32Array.from(rows.flatMap((s) => s.slice(feedFrom))), [n, t], { dtype: 'int32' });
    const am = tensor(Int32Array.from(mask.flat()), [n, curLen], { dtype: 'int32' });
    // Positions count real tokens only (transformers: cumsum(mask) - 1, pads at 1).
    const pos = new Int32Array(n * t);
    for (let b = 0; b < n; b++) {
      let c = 0;
      for (let j = 0; j < curLen; j++) {
        c += mask[b][j];
        if (j >= feedFrom) pos[b * t + j - feedFrom] = mask[b][j] ? c - 1 : 1;
      }
    }
    const out = model.forward({
      inputIds: ids, attentionMask: am, positionIds: tensor(pos, [n, t], { dtype: 'int32' }),
      pastKeyValues: useCache ? cache : null, useCache, maxCacheLength: maxLength, logitsToKeep: 1,
    });
    const logits = out.logits;
    const v = logits.shape[logits.ndim - 1];
    // [n, 1, V] from a model that honours logitsToKeep, else every position [n, t, V].
    const kept = logits.ndim === 3 ? logits.shape[1] : -1;
    if (logits.ndim !== 3 || logits.shape[0] !== n || (kept !== t && kept !== 1)) {
      throw new Error(`generate: model returned logits ${logits.label()}, expected [${n}, 1 or ${t}, V]`);
    }
    const lv = logits.dtype === 'float32' ? logits.data : logits.toFloat32Array();
    const last = new Float32Array(n * v);
    for (let b = 0; b < n; b++) last.set(lv.subarray((b * kept + kept - 1) * v, (b * kept + kept) * v), b * v);
    if (useCache && !out.pastKeyValues) throw new Error('generate: useCache is on but the model returned no pastKeyValues');
    const nc = useCache ? out.pastKeyValues! : null;
    if (nc) for (const l of [...nc.layers, ...(nc.cross ?? [])]) { keep(l.k); keep(l.v); }
    return { last, v, cache: nc };
  }));
}

const cacheEntries = (c: KVCache) => [...c.layers, ...(c.cross ?? [])];

/** Disposes the tensors of old that next does not reuse (an encoder-decoder's cross-attention k/v usually are). */
export function replaceCache(old: KVCache | null, next: KVCache | null): void {
  if (!old || old === next) return;
  const live = new Set<Tensor>();
  if (next) for (const l of cacheEntries(next)) { live.add(l.k); live.add(l.v); }
  for (const l of cacheEntries(old)) { if (!live.has(l.k)) l.k.dispose(); if (!live.has(l.v)) l.v.dispose(); }
}

/** Disposes every tensor of a cache. */
export function disposeCache(cache: KVCache | null): void {
  if (cache) for (const l of cacheEntries(cache)) { l.k.dispose(); l.v.dispose(); }
}

/** Rows of every layer's k/v picked by src (transformers' reorder_cache); the same cache when src is the identity. */
function reorderCache(cache: KVCache, src: Int32Array): KVCache {
  if (src.every((s, i) => s === i)) return cache;
  return noGrad(() => tidy(() => {
    const idx = tensor(src, [src.length], { dtype: 'int32' });
    const layers = cache.layers.map((l) => ({ k: keep(indexSelect(l.k, idx)), v: keep(indexSelect(l.v, idx)) }));
    // Cross-attention k/v stay: beams only move within their prompt, whose encoder rows are equal.
    return { layers, length: cache.length, cross: cache.cross };
  }));
}
