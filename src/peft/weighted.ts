// peft's LoraModel.add_weighted_adapter: a new adapter made from existing ones. 'cat' stacks
// the (weighted, scaled) A rows and B columns; 'linear' / 'ties' / 'dare_*' / 'magnitude_prune'
// combine A's and B's separately with sqrt(|w * scaling|) weights (the sign on A); the *svd
// types combine the delta weights B A * scaling and factor the result back to rank r by SVD.
// The new adapter has r = lora_alpha = the new rank (scaling 1, or sqrt(r) under rsLoRA),
// targets the union of the sources' targets, and is added frozen and inactive.
import type { Tensor } from '../tensor/tensor.js';
import type { Rng } from '../tensor/random.js';
import { LoraConfig } from './config.js';
import type { LoraLayer } from './embedding.js';
import { LoraEmbedding } from './embedding.js';
import { LoraLinear } from './layer.js';
import {
  MajoritySignMethod, Svd, dareLinear, dareTies, magnitudePrune, quantile, svd, svdOfProduct, taskArithmetic, ties,
} from './merge-utils.js';

export type CombinationType =
  | 'svd' | 'linear' | 'cat' | 'ties' | 'ties_svd' | 'dare_ties' | 'dare_linear' | 'dare_ties_svd' | 'dare_linear_svd'
  | 'magnitude_prune' | 'magnitude_prune_svd';

export const COMBINATION_TYPES: CombinationType[] = [
  'svd', 'linear', 'cat', 'ties', 'ties_svd', 'dare_ties', 'dare_linear', 'dare_ties_svd', 'dare_linear_svd', 'magnitude_prune', 'magnitude_prune_svd',
];

export interface AddWeightedAdapterOptions {
  /** Rank of the result for the *svd types (default: the largest source rank). */
  svdRank?: number | null;
  /** Quantile at which the SVD factors are clamped (none by default). */
  svdClamp?: number | null;
  /** Fraction of values kept by the pruning types (ties, dare, magnitude_prune), in [0, 1]. */
  density?: number | null;
  majoritySignMethod?: MajoritySignMethod;
  /** Draws the DARE masks (default: the global generator). */
  rng?: Rng;
}

/** What addWeightedAdapter needs from a PeftModel. */
export interface WeightedHost {
  readonly peftConfig: Map<string, LoraConfig>;
  loraLayers(): [string, LoraLayer][];
  modulesToSaveWrappers(): [string, { adapterNames(): string[] }][];
  addAdapter(name: string, config: LoraConfig): void;
}

const A_OF = (l: LoraLayer, n: string): Tensor | undefined => l instanceof LoraEmbedding ? l.loraEmbeddingA.getParameter(n) ?? undefined : (l as LoraLinear).loraA.get(n)?.weight;
const B_OF = (l: LoraLayer, n: string): Tensor | undefined => l instanceof LoraEmbedding ? l.loraEmbeddingB.getParameter(n) ?? undefined : (l as LoraLinear).loraB.get(n)?.weight;
const has = (l: LoraLayer, n: string) => A_OF(l, n) !== undefined;

function maxRank(cfg: LoraConfig): number {
  const pattern = Object.values(cfg.rankPattern ?? {});
  return pattern.length ? Math.max(cfg.r, ...pattern) : cfg.r;
}

/** peft's _check_add_weighted_adapter: the effective combination type, new rank and targets. */
function check(host: WeightedHost, adapters: string[], weights: number[], type: CombinationType, svdRank: number | null | undefined) {
  if (!Array.isArray(adapters) || !adapters.length) throw new Error('addWeightedAdapter: give at least one adapter');
  if (!Array.isArray(weights) || weights.length !== adapters.length || weights.some((w) => typeof w !== 'number' || !Number.isFinite(w))) {
    throw new Error(`addWeightedAdapter: give one finite weight per adapter (${adapters.length} adapters, weights ${JSON.stringify(weights)})`);
  }
  for (const a of adapters) if (!host.peftConfig.has(a)) throw new Error(`Adapter ${a} does not exist`);
  if (!COMBINATION_TYPES.includes(type)) throw new Error(`Invalid combination_type: ${type} (one of ${COMBINATION_TYPES.join(', ')})`);
  const wrappers = host.modulesToSaveWrappers().filter(([, w]) => adapters.filter((a) => w.adapterNames().includes(a)).length > 1);
  if (wrappers.length) throw new Error(`Cannot add weighted adapters if they target the same module with modules_to_save, but found ${wrappers.length} such instance(s).`);
  for (const a of adapters) if (host.peftConfig.get(a)!.useDora) throw new Error(`addWeightedAdapter: adapter '${a}' uses DoRA, whose magnitude vectors cannot be combined this way`);
  const combination: CombinationType = adapters.length === 1 ? 'linear' : type;
  const ranks = adapters.map((a) => maxRank(host.peftConfig.get(a)!));
  let newRank: number;
  if (['linear', 'ties', 'dare_ties', 'dare_linear', 'magnitude_prune'].includes(combination)) {
    if (new Set(ranks).size !== 1) throw new Error('All adapters must have the same r value when using combination_type linear, ties, dare_ties or dare_linear.');
    newRank = ranks[0];
  } else if (combination === 'cat') newRank = ranks.reduce((x, y) => x + y, 0);
  else {
    if (svdRank !== null && svdRank !== undefined && !(Number.isInteger(svdRank) && svdRank > 0)) throw new Error(`svdRank must be a positive integer, got ${svdRank}`);
    newRank = svdRank || Math.max(...ranks);
  }
  const tms = adapters.map((a) => host.peftConfig.get(a)!.targetModules);
  const isList = (t: unknown) => Array.isArray(t);
  let targetModules: string[] | string;
  if (tms.every(isList)) targetModules = [...new Set((tms as string[][]).flat())].sort();
  else if (tms.every((t) => typeof t === 'string')) targetModules = (tms as string[]).map((t) => `(${t})`).join('|');
  else throw new Error('all adapter configs should follow the same target modules type. Combining adapters with `target_modules` type being a mix of list/set and string is not supported.');
  return { combination, newRank, targetModules };
}

function floatCopy(t: Tensor): Float32Array { return Float32Array.from(t.data); }

/** Delta weight laid out [out, in] (transposed from Conv1D / embedding layout), as a flat float32 copy. */
function deltaOutIn(l: LoraLayer, name: string): { data: Float32Array; rows: number; cols: number } {
  const t = l.getDeltaWeight(name);
  const [d0, d1] = t.shape, src = t.data;
  const transposed = l instanceof LoraEmbedding || (l as LoraLinear).fanInFanOut;
  let data: Float32Array, rows: number, cols: number;
  if (!transposed) { data = Float32Array.from(src); rows = d0; cols = d1; }
  else {
    rows = d1; cols = d0; data = new Float32Array(src.length);
    for (let i = 0; i < d0; i++) for (let j = 0; j < d1; j++) data[j * d0 + i] = src[i * d1 + j];
  }
  t.dispose();
  return { data, rows, cols };
}

function svdFactors(combination: CombinationType, l: LoraLayer, valid: string[], weights: number[], newRank: number, o: AddWeightedAdapterOptions): { A: Float32Array; B: Float32Array } {
  let f: Svd, rows: number, cols: number;
  if (combination === 'svd') {
    // sum_i w_i delta_i = [w_i s_i B_i] @ [A_i] ([out, in]; for embeddings peft's transposed
    // delta [d, V] is B @ A too): factored through its rank sum(r_i) without the full matrix.
    const parts = valid.map((n, i) => ({ A: A_OF(l, n)!, B: B_OF(l, n)!, w: Math.fround(weights[i]) }));
    rows = parts[0].B.shape[0]; cols = parts[0].A.shape[1];
    const R = parts.reduce((s, p) => s + p.A.shape[0], 0);
    const bc = new Float64Array(rows * R), ac = new Float64Array(R * cols);
    let off = 0;
    for (const [i, p] of parts.entries()) {
      const r = p.A.shape[0], sc = valid[i] ? l.scaling[valid[i]] : 1;
      for (let a = 0; a < rows; a++) for (let j = 0; j < r; j++) bc[a * R + off + j] = p.B.data[a * r + j] * sc * p.w;
      for (let j = 0; j < r; j++) for (let c = 0; c < cols; c++) ac[(off + j) * cols + c] = p.A.data[j * cols + c];
      off += r;
    }
    if (R >= Math.min(rows, cols)) {
      const full = new Float64Array(rows * cols);
      for (let a = 0; a < rows; a++) for (let c = 0; c < cols; c++) { let s = 0; for (let j = 0; j < R; j++) s += bc[a * R + j] * ac[j * cols + c]; full[a * cols + c] = s; }
      f = svd(full, rows, cols);
    } else
      f = svdOfProduct(bc, ac, rows, R, cols);
  } else {
    const deltas = valid.map((n) => deltaOutIn(l, n));
    rows = deltas[0].rows; cols = deltas[0].cols;
    const ts = deltas.map((d) => d.data);
    const density = o.density as number;
    let merged: Float32Array;
    if (combination === 'ties_svd') merged = ties(ts, weights, density, o.majoritySignMethod ?? 'total');
    else if (combination === 'dare_linear_svd') merged = dareLinear(ts, weights, density, o.rng);
    else if (combination === 'dare_ties_svd') merged = dareTies(ts, weights, density, o.majoritySignMethod ?? 'total', o.rng);
    else merged = magnitudePrune(ts, weights, density);
    f = svd(merged, rows, cols);
  }
  const k = Math.min(newRank, f.k);
  if (newRank > Math.min(rows, cols)) throw new Error(`addWeightedAdapter: svd rank ${newRank} is larger than the layer allows (${rows} x ${cols})`);
  // U[:, :r] @ diag(S[:r]) -> B [rows, r]; Vh[:r] -> A [r, cols]
  const B = new Float32Array(rows * newRank), A = new Float32Array(newRank * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < k; j++) B[i * newRank + j] = f.u[i * f.k + j] * f.s[j];
  for (let j = 0; j < k; j++) for (let c = 0; c < cols; c++) A[j * cols + c] = f.vt[j * cols + c];
  if (o.svdClamp !== null && o.svdClamp !== undefined) {
    const hi = quantile([...B, ...A], o.svdClamp), lo = -hi;
    for (const x of [A, B]) for (let i = 0; i < x.length; i++) x[i] = Math.min(Math.max(x[i], lo), hi);
  }
  return { A, B };
}

/**
 * Adds `adapterName` as a weighted combination of `adapters` (peft's add_weighted_adapter).
 * Does nothing when the name exists already, as peft. DARE types draw their masks from
 * opts.rng, so they match peft in distribution, not bit for bit.
 */
export function addWeightedAdapter(host: WeightedHost, adapters: string[], weights: number[], adapterName: string,
  combinationType: CombinationType = 'svd', o: AddWeightedAdapterOptions = {}): void {
  if (host.peftConfig.has(adapterName)) return;
  const { combination, newRank, targetModules } = check(host, adapters, weights, combinationType, o.svdRank);
  if (/ties|dare|magnitude_prune/.test(combination) && (o.density === null || o.density === undefined)) {
    throw new Error(`addWeightedAdapter: combination type '${combination}' needs density (the fraction of values kept, in [0, 1])`);
  }
  const src = host.peftConfig.get(adapters[0])!;
  const cfg = src.clone();
  Object.assign(cfg, { r: newRank, loraAlpha: newRank, targetModules, alphaPattern: {}, rankPattern: {} });
  host.addAdapter(adapterName, cfg);
  for (const [path, l] of host.loraLayers()) {
    const tA = A_OF(l, adapterName), tB = B_OF(l, adapterName);
    if (!tA || !tB) continue;
    tA.data.fill(0); tB.data.fill(0);
    for (const p of [tA, tB]) p.requiresGrad = false; // peft's _freeze_adapter
    const valid = adapters.filter((a) => has(l, a));
    const w = adapters.map((a, i) => [a, weights[i]] as const).filter(([a]) => has(l, a)).map(([, x]) => x);
    if (!valid.length) throw new Error(`No matching LoRAs found for ${path}`);
    if (combination === 'cat') {
      let row = 0, col = 0;
      const rTot = tA.shape[0];
      for (const [i, a] of valid.entries()) {
        const A = A_OF(l, a)!, B = B_OF(l, a)!, r = A.shape[0];
        const cols = A.shape[1], outs = B.shape[0];
        for (let j = 0; j < r; j++) for (let c = 0; c < cols; c++) tA.data[(row + j) * cols + c] = Math.fround(A.data[j * cols + c] * w[i]) * l.scaling[a];
        for (let o2 = 0; o2 < outs; o2++) for (let j = 0; j < r; j++) tB.data[o2 * rTot + col + j] = B.data[o2 * r + j];
        row += r; col += r;
      }
    } else if (combination.endsWith('svd')) {
      const { A, B } = svdFactors(combination, l, valid, w, newRank, o);
      tA.data.set(A); tB.data.set(B);
    } else {
      const wA: number[] = [], wB: number[] = [];
      for (const [i, a] of valid.entries()) {
        const ws = w[i] * l.scaling[a];
        wA.push(Math.sqrt(Math.abs(ws)) * (ws >= 0 ? 1 : -1));
        wB.push(Math.sqrt(Math.abs(ws)));
      }
      const As = valid.map((a) => floatCopy(A_OF(l, a)!)), Bs = valid.map((a) => floatCopy(B_OF(l, a)!));
      const combine = (ts: Float32Array[], ws: number[]): Float32Array => {
        const d = o.density as number, m = o.majoritySignMethod ?? 'total';
        switch (combination) {
          case 'linear': return taskArithmetic(ts, ws);
          case 'ties': return ties(ts, ws, d, m);
          case 'dare_linear': return dareLinear(ts, ws, d, o.rng);
          case 'dare_ties': return dareTies(ts, ws, d, m, o.rng);
          case 'magnitude_prune': return magnitudePrune(ts, ws, d);
          default: throw new Error(`Invalid combination type ${combination}`);
        }
      };
      tA.data.set(combine(As, wA));
      tB.data.set(combine(Bs, wB));
    }
  }
}
