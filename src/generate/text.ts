// Text in, text out: tokenises prompts, left-pads a batch, runs generate() and decodes the
// new tokens (like transformers' text-generation pipeline with return_full_text=False).
import type { Tensor } from '../tensor/tensor.js';
import { tensor } from '../tensor/ops/basic.js';
import { generate, generateAsync, CausalLM, GenerateOptions } from './generate.js';

/** What generateText needs from a tokenizer (src/io's Tokenizer fits). */
export interface TextTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: ArrayLike<number>, opts?: { skipSpecialTokens?: boolean }): string;
  readonly eosTokenId: number | null;
  readonly padTokenId: number | null;
}

export interface GenerateTextOptions extends GenerateOptions {
  /** Default true. */
  skipSpecialTokens?: boolean;
  /** Return prompt + continuation instead of the continuation only. Default false. */
  returnFullText?: boolean;
  /** generateText only: stops decoding with an AbortError. */
  signal?: AbortSignal;
}

/** Left-pads token lists into int32 inputIds / attentionMask [B, maxLen]. */
export function leftPad(batch: number[][], padId: number): { inputIds: Tensor; attentionMask: Tensor } {
  const n = Math.max(...batch.map((r) => r.length));
  const ids = new Int32Array(batch.length * n).fill(padId), mask = new Int32Array(batch.length * n);
  batch.forEach((r, b) => {
    ids.set(r, b * n + n - r.length);
    mask.fill(1, b * n + n - r.length, (b + 1) * n);
  });
  return {
    inputIds: tensor(ids, [batch.length, n], { dtype: 'int32' }),
    attentionMask: tensor(mask, [batch.length, n], { dtype: 'int32' }),
  };
}

export function generateText(model: CausalLM, tokenizer: TextTokenizer, prompts: string, opts?: GenerateTextOptions): Promise<string>;
export function generateText(model: CausalLM, tokenizer: TextTokenizer, prompts: string[], opts?: GenerateTextOptions): Promise<string[]>;
/**
 * Text in, text out, as a Promise: the event loop runs between decoding steps, and
 * opts.signal stops it (AbortError). With numReturnSequences R, an array of prompts gives R
 * texts per prompt (consecutive, best first for beam search); a single prompt string gives
 * the first one only.
 */
export async function generateText(model: CausalLM, tokenizer: TextTokenizer, prompts: string | string[], opts: GenerateTextOptions = {}): Promise<string | string[]> {
  const job = prepare(tokenizer, prompts, opts);
  if (!job) return [];
  return finish(job, tokenizer, prompts, opts, await generateAsync(model, job.inputIds, job.genOpts));
}

export function generateTextSync(model: CausalLM, tokenizer: TextTokenizer, prompts: string, opts?: GenerateTextOptions): string;
export function generateTextSync(model: CausalLM, tokenizer: TextTokenizer, prompts: string[], opts?: GenerateTextOptions): string[];
/** generateText without the Promise (holds the thread until every token is decoded). */
export function generateTextSync(model: CausalLM, tokenizer: TextTokenizer, prompts: string | string[], opts: GenerateTextOptions = {}): string | string[] {
  const job = prepare(tokenizer, prompts, opts);
  if (!job) return [];
  return finish(job, tokenizer, prompts, opts, generate(model, job.inputIds, job.genOpts));
}

interface TextJob { encoded: number[][]; eos: number | number[] | null | undefined; inputIds: Tensor; attentionMask: Tensor; genOpts: GenerateOptions }

function prepare(tokenizer: TextTokenizer, prompts: string | string[], opts: GenerateTextOptions): TextJob | null {
  const list = Array.isArray(prompts) ? prompts : [prompts];
  if (list.length === 0) return null;
  const encoded = list.map((p) => tokenizer.encode(p));
  const empty = encoded.findIndex((e) => e.length === 0);
  if (empty >= 0) throw new Error(`generateText: prompt ${empty} encodes to no tokens; give it some text`);
  const eos = opts.eosTokenId !== undefined ? opts.eosTokenId : tokenizer.eosTokenId;
  const pad = opts.padTokenId ?? tokenizer.padTokenId ?? (Array.isArray(eos) ? eos[0] : eos) ?? 0;
  const { inputIds, attentionMask } = leftPad(encoded, pad);
  return { encoded, eos, inputIds, attentionMask, genOpts: { ...opts, eosTokenId: eos, padTokenId: pad, attentionMask } };
}

function finish(job: TextJob, tokenizer: TextTokenizer, prompts: string | string[], opts: GenerateTextOptions, out: Tensor): string | string[] {
  const { encoded, eos, inputIds, attentionMask } = job;
  const [b, n] = out.shape, t = inputIds.shape[1];
  // numReturnSequences R gives R consecutive rows per prompt.
  const per = b / encoded.length;
  const texts: string[] = [];
  for (let r = 0; r < b; r++) {
    const i = Math.floor(r / per);
    let row = Array.from(out.ints.subarray(r * n + (opts.returnFullText ? t - encoded[i].length : t), (r + 1) * n));
    // Drop the padding that follows a finished row (it may not be a special token).
    const eosIds = eos == null ? [] : Array.isArray(eos) ? eos : [eos];
    const stop = row.findIndex((x, j) => eosIds.includes(x) && (opts.returnFullText ? j >= encoded[i].length : true));
    if (stop >= 0) row = row.slice(0, stop + 1);
    texts.push(tokenizer.decode(row, { skipSpecialTokens: opts.skipSpecialTokens ?? true }));
  }
  inputIds.dispose(); attentionMask.dispose(); out.dispose();
  return Array.isArray(prompts) ? texts : texts[0];
}
