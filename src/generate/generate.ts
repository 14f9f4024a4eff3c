// Greedy and sampled decoding with a KV cache, following transformers' generate():
// processors in its order, eos/pad handling, left padding through the attention mask and
// position ids. Each step runs under noGrad and tidy(); only the cache survives a step.
import { Tensor, noGrad } from '../tensor/tensor.js';
import { tidy } from '../tensor/memory.js';
import { tensor } from '../tensor/ops/basic.js';
import { Rng } from '../tensor/random.js';
import type { KVCache, ModelInputs, ModelOutput } from '../models/types.js';
import { ProcessorOptions, applyProcessors, buildLogitsProcessors } from './processors.js';
import type { Streamer } from './streamer.js';
import { beamSearch, disposeCache, forwardStep, replaceCache } from './beam.js';
import { generateSeq2Seq, isEncoderDecoder } from './seq2seq.js';
import { throwIfAborted, yieldToEventLoop } from '../tensor/yield.js';
import { type AutocastDtype, autocast, autocastDtype } from '../tensor/autocast.js';

/** What generate() needs from a model: PreTrainedModel satisfies it. */
export interface CausalLM {
  forward(inputs: ModelInputs): ModelOutput;
  config?: { maxPositions?: number; modelType?: string };
  training?: boolean;
  train?(mode?: boolean): unknown;
}

export interface GenerateOptions extends ProcessorOptions {
  /** New tokens to add (wins over maxLength, as in transformers). */
  maxNewTokens?: number;
  /** Total length including the prompt; transformers' default 20 when neither is given. */
  maxLength?: number;
  /** Sample from the processed distribution instead of taking the argmax. Default false. */
  doSample?: boolean;
  /** Default 1. */
  temperature?: number;
  /** Default 50 when sampling (transformers' default); 0 turns it off. */
  topK?: number;
  /** Default 1 (off). */
  topP?: number;
  noRepeatNgramSize?: number;
  repetitionPenalty?: number;
  /** A row that produces one of these is finished and padded from then on. */
  eosTokenId?: number | number[] | null;
  /** Fills finished rows; defaults to the first eos id. */
  padTokenId?: number | null;
  /** int32 [B, T]: 1 for tokens, 0 for (left) padding. Default all ones. */
  attentionMask?: Tensor | null;
  seed?: number;
  /** Random source for sampling (wins over seed). */
  rng?: Rng;
  /** Default true; false recomputes the whole sequence every step. */
  useCache?: boolean;
  /** Beam search when > 1 (greedy, no sampling), as transformers' num_beams. Default 1. */
  numBeams?: number;
  /** Beam search: finished scores are divided by (new tokens) ** lengthPenalty. Default 1. */
  lengthPenalty?: number;
  /** Beam search: true stops once numBeams hypotheses finished, false uses transformers' heuristic, 'never' never stops early. Default false. */
  earlyStopping?: boolean | 'never';
  /** Sequences returned per prompt, best first (beam search: <= numBeams; sampling: independent draws). Default 1. */
  numReturnSequences?: number;
  /** Encoder-decoder models: the decoder's first token (default config.decoder_start_token_id). */
  decoderStartTokenId?: number;
  /** A Streamer (batch 1: gets the prompt, each new id, then end()), or a function called with each step's new ids (one per row). */
  streamer?: Streamer | ((tokenIds: number[]) => void);
  /**
   * Mixed precision for every decoding step, as a transformers user running under
   * torch.autocast('cpu', dtype=torch.bfloat16) or a bf16 model: the GEMMs take bf16-rounded
   * activations (and weights) with float32 accumulation; norms, softmax and the logits
   * processors stay float32. null: off. Default: the autocast setting in force when
   * generate / generateAsync / generateText is called.
   */
  autocast?: AutocastDtype | null;
}

/**
 * Returns int32 [B * numReturnSequences, T + n], n <= maxNewTokens (fewer when every row
 * has finished); a prompt's returned sequences are consecutive rows, best first for beams.
 * An encoder-decoder (task SEQ_2_SEQ_LM) encodes inputIds once and returns the decoder's ids
 * [B * numReturnSequences, 1 + n], starting with its decoder start token, as transformers.
 */
export function generate(model: CausalLM, inputIds: Tensor, opts: GenerateOptions = {}): Tensor {
  const step = stepper(decodeSteps(model, inputIds, opts), opts);
  for (;;) { const r = step(); if (r.done) return r.value; }
}

/**
 * it.next() under the autocast setting chosen at the call (opts.autocast, else the caller's):
 * each step sets it for its own synchronous run, so an async generate keeps it across its
 * awaits, and code running between the steps does not see it.
 */
function stepper(it: Generator<void, Tensor>, opts: GenerateOptions): () => IteratorResult<void, Tensor> {
  const ac = opts.autocast !== undefined ? opts.autocast : autocastDtype();
  if (ac !== null && ac !== 'bfloat16') throw new Error(`generate: autocast must be 'bfloat16' or null, got ${JSON.stringify(ac)}`);
  return () => autocast(ac, () => it.next());
}

/**
 * generate() that lets the event loop run between decoding steps (timers, I/O and other
 * requests go on while it decodes); signal stops it with an AbortError.
 */
export async function generateAsync(model: CausalLM, inputIds: Tensor, opts: GenerateOptions & { signal?: AbortSignal } = {}): Promise<Tensor> {
  const it = decodeSteps(model, inputIds, opts);
  const step = stepper(it, opts);
  try {
    for (;;) {
      throwIfAborted(opts.signal, 'generate');
      const r = step();
      if (r.done) return r.value;
      await yieldToEventLoop();
    }
  } finally {
    it.return(undefined as never); // runs the loop's finally: frees the KV cache, restores training mode
  }
}

/** The decoding loop, one yield per new token; generate / generateAsync drive it. */
function* decodeSteps(model: CausalLM, inputIds: Tensor, opts: GenerateOptions): Generator<void, Tensor> {
  if (inputIds.ndim !== 2 || inputIds.dtype !== 'int32') {
    throw new TypeError(`generate: inputIds must be int32 [B, T], got ${inputIds.dtype} ${inputIds.label()}`);
  }
  // An encoder-decoder: inputIds feed the encoder once; the decoder generates from its start token.
  if (isEncoderDecoder(model)) return generateSeq2Seq(model, inputIds, opts, generate);
  const numBeams = opts.numBeams ?? 1, numReturn = opts.numReturnSequences ?? 1;
  if (!Number.isInteger(numBeams) || numBeams < 1) throw new RangeError(`generate: numBeams must be a positive integer, got ${numBeams}`);
  if (!Number.isInteger(numReturn) || numReturn < 1) throw new RangeError(`generate: numReturnSequences must be a positive integer, got ${numReturn}`);
  if (numBeams === 1 && numReturn > 1) {
    // transformers: greedy search cannot return several sequences; sampling draws each row independently.
    if (!opts.doSample) throw new Error('generate: greedy decoding (numBeams 1, no doSample) cannot return numReturnSequences > 1');
    const [b0, t0] = inputIds.shape;
    const rep = (src: ArrayLike<number>) => Int32Array.from({ length: b0 * numReturn * t0 }, (_, i) => Number(src[Math.floor(i / (numReturn * t0)) * t0 + (i % t0)]));
    const ids = tensor(rep(inputIds.ints), [b0 * numReturn, t0], { dtype: 'int32' });
    const m = opts.attentionMask;
    const mask = m ? tensor(rep(m.dtype === 'int32' ? m.ints : m.toFloat32Array()), [b0 * numReturn, t0], { dtype: 'int32' }) : null;
    try { return yield* decodeSteps(model, ids, { ...opts, numReturnSequences: 1, attentionMask: mask }); } finally { ids.dispose(); mask?.dispose(); }
  }
  const [batch, promptLen] = inputIds.shape;
  if (promptLen === 0) throw new Error('generate: the prompt is empty (inputIds has no columns)');
  const maxNew = opts.maxNewTokens ?? Math.max(0, (opts.maxLength ?? 20) - promptLen);
  if (!Number.isInteger(maxNew) || maxNew < 0) throw new RangeError(`generate: maxNewTokens must be a non-negative integer, got ${maxNew}`);
  const maxPos = model.config?.maxPositions;
  if (maxPos && promptLen + maxNew > maxPos) {
    throw new RangeError(`generate: prompt (${promptLen}) + maxNewTokens (${maxNew}) exceeds the model's ${maxPos} positions`);
  }
  const eos = opts.eosTokenId == null ? [] : Array.isArray(opts.eosTokenId) ? opts.eosTokenId : [opts.eosTokenId];
  const pad = opts.padTokenId ?? (eos.length ? eos[0] : null);
  const doSample = opts.doSample ?? false;
  const processors = buildLogitsProcessors({
    doSample,
    temperature: opts.temperature ?? 1,
    topK: opts.topK ?? 50,
    topP: opts.topP ?? 1,
    repetitionPenalty: opts.repetitionPenalty ?? 1,
    noRepeatNgramSize: opts.noRepeatNgramSize ?? 0,
    minTokensToKeep: opts.minTokensToKeep,
  });
  const rng = opts.rng ?? new Rng(opts.seed ?? 0);
  const useCache = opts.useCache ?? true;
  // A Streamer object sees the prompt first (batch 1 only, as in transformers); a plain
  // function only sees each step's new ids, one per row.
  let streamer: Streamer | null = null;
  if (typeof opts.streamer === 'function') {
    const fn = opts.streamer;
    let prompt = true;
    streamer = { put: (ids) => { if (prompt) prompt = false; else fn(ids); }, end: () => {} };
  } else if (opts.streamer) {
    if (batch !== 1) throw new Error(`generate: a Streamer needs batch size 1, got ${batch} rows (pass a function to see every row)`);
    streamer = opts.streamer;
  }

  // Sequences and mask as growing JS arrays; tensors are made per step inside the scope.
  const seqs: number[][] = [];
  const mask: number[][] = [];
  const srcMask = opts.attentionMask ?? null;
  if (srcMask && (srcMask.ndim !== 2 || srcMask.shape[0] !== batch || srcMask.shape[1] !== promptLen)) {
    throw new Error(`generate: attentionMask ${srcMask.label()} must have the shape of inputIds [${batch}, ${promptLen}]`);
  }
  const maskVals = srcMask ? (srcMask.dtype === 'int32' ? srcMask.ints : srcMask.toFloat32Array()) : null;
  for (let b = 0; b < batch; b++) {
    seqs.push(Array.from(inputIds.ints.subarray(b * promptLen, (b + 1) * promptLen)));
    mask.push(maskVals ? Array.from(maskVals.subarray(b * promptLen, (b + 1) * promptLen), (x) => (x ? 1 : 0)) : new Array(promptLen).fill(1));
  }
  if (numBeams > 1) {
    if (doSample) throw new Error('generate: beam sampling (numBeams > 1 with doSample) is not supported');
    if (streamer) throw new Error('generate: a streamer cannot be used with beam search (numBeams > 1), as in transformers');
    const wasTr = model.training === true && typeof model.train === 'function';
    if (wasTr) model.train!(false);
    try {
      const rows = yield* beamSearch(model, seqs, mask, maxNew, eos, pad, processors, useCache, {
        numBeams, lengthPenalty: opts.lengthPenalty, earlyStopping: opts.earlyStopping, numReturnSequences: numReturn,
      });
      return tensor(Int32Array.from(rows.flat()), [rows.length, rows[0].length], { dtype: 'int32' });
    } finally {
      if (wasTr) model.train!(true);
    }
  }
  const unfinished = new Array(batch).fill(true);
  if (streamer) streamer.put(seqs[0].slice());

  let cache: KVCache | null = null;
  // Dropout must be off while decoding; the caller's mode is restored afterwards.
  const wasTraining = model.training === true && typeof model.train === 'function';
  if (wasTraining) model.train!(false);
  try {
    for (let step = 0; step < maxNew; step++) {
      const curLen = seqs[0].length;
      const step = forwardStep(model, seqs, mask, cache, useCache, promptLen + maxNew);
      const next = noGrad(() => tidy(() => {
        const scores = applyProcessors(processors, tensor(Int32Array.from(seqs.flat()), [batch, curLen], { dtype: 'int32' }),
          tensor(step.last, [batch, step.v]));
        return doSample ? sampleRows(scores.data, batch, step.v, rng) : argmaxRows(scores.data, batch, step.v);
      }));
      // Drop the previous cache's tensors unless the model handed the same ones back.
      replaceCache(cache, step.cache);
      cache = step.cache;

      for (let b = 0; b < batch; b++) {
        let tok = next[b];
        if (!unfinished[b]) {
          if (pad === null) throw new Error('generate: a row finished but no padTokenId or eosTokenId is set');
          tok = pad;
        }
        seqs[b].push(tok);
        mask[b].push(1);
        if (unfinished[b] && eos.includes(tok)) unfinished[b] = false;
      }
      if (streamer) streamer.put(seqs.map((s) => s[s.length - 1]));
      if (!unfinished.some(Boolean)) break;
      yield;
    }
  } finally {
    disposeCache(cache);
    if (wasTraining) model.train!(true);
  }
  if (streamer) streamer.end();
  const len = seqs[0].length;
  return tensor(Int32Array.from(seqs.flat()), [batch, len], { dtype: 'int32' });
}

/** First index of the maximum in each row (torch.argmax's tie rule). */
export function argmaxRows(s: Float32Array, b: number, v: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < b; r++) {
    let best = 0, bv = -Infinity;
    for (let i = 0; i < v; i++) { const x = s[r * v + i]; if (x > bv) { bv = x; best = i; } }
    out.push(best);
  }
  return out;
}

/** One draw per row from softmax(scores) (filtered tokens at -inf have probability 0). */
export function sampleRows(s: Float32Array, b: number, v: number, rng: Rng): number[] {
  const out: number[] = [];
  const p = new Float64Array(v);
  for (let r = 0; r < b; r++) {
    let max = -Infinity;
    for (let i = 0; i < v; i++) max = Math.max(max, s[r * v + i]);
    if (max === -Infinity) throw new Error('generate: every token was filtered out (all scores are -inf)');
    let z = 0;
    for (let i = 0; i < v; i++) { p[i] = Math.exp(s[r * v + i] - max); z += p[i]; }
    let u = rng.next() * z, pick = -1;
    for (let i = 0; i < v; i++) {
      if (p[i] === 0) continue;
      pick = i;
      u -= p[i];
      if (u < 0) break;
    }
    out.push(pick);
  }
  return out;
}
