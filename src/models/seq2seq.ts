// What T5 and BART share as transformers' *ForConditionalGeneration: labels shifted right
// into decoder inputs, the encoder run once (or given), the decoder with a self-attention
// cache that grows and cross-attention keys/values computed once per generation, and the
// token-level cross-entropy over the labels as they are (no causal shift).
import type { Tensor } from '../tensor/tensor.js';
import { empty } from '../tensor/tensor.js';
import { reshape } from '../tensor/ops/basic.js';
import { crossEntropy } from '../tensor/ops/nn.js';
import type { KVCache, ModelInputs, ModelOutput } from './types.js';
import { HFModel } from './base.js';
import { splitHeads } from './common.js';

/**
 * transformers' shift_tokens_right: decoder inputs [B, T] = decoderStartTokenId then labels
 * [:, :-1], with -100 replaced by the pad id.
 */
export function shiftTokensRight(labels: Tensor, padTokenId: number | null, decoderStartTokenId: number): Tensor {
  if (labels.dtype !== 'int32' || labels.ndim !== 2) throw new Error(`labels must be int32 [B, T], got ${labels.dtype} [${labels.shape.join(', ')}]`);
  const [b, t] = labels.shape;
  const out = empty([b, t], 'int32', false);
  const l = labels.ints, o = out.ints;
  for (let bi = 0; bi < b; bi++) {
    o[bi * t] = decoderStartTokenId;
    for (let j = 1; j < t; j++) {
      const v = l[bi * t + j - 1];
      if (v === -100) {
        if (padTokenId === null) throw new Error('labels hold -100 but the config has no pad_token_id to replace it with in the decoder inputs');
        o[bi * t + j] = padTokenId;
      } else o[bi * t + j] = v;
    }
  }
  return out;
}

/** Cross-entropy of logits [B, T, V] against labels [B, T] at the same positions, -100 ignored. */
export function seq2seqLmLoss(logits: Tensor, labels: Tensor): Tensor {
  const [b, t, v] = logits.shape;
  if (labels.dtype !== 'int32' || labels.size !== b * t) throw new Error(`labels must be int32 [${b}, ${t}] (like the decoder inputs), got ${labels.dtype} [${labels.shape.join(', ')}]`);
  return crossEntropy(reshape(logits, [b * t, v]), labels.shareAs([b * t]));
}

/**
 * The cross-attention k/v of decoder layer i: from the cache when a previous step computed
 * them, else computed now (and put in the next cache).
 */
export function crossKv(past: KVCache | null | undefined, next: KVCache | null, i: number, heads: number, dim: number,
  compute: () => { k: Tensor; v: Tensor }): { k: Tensor; v: Tensor } {
  let kv = past?.cross?.[i];
  if (!kv) {
    const { k, v } = compute();
    kv = { k: splitHeads(k, heads, dim), v: splitHeads(v, heads, dim) };
  }
  if (next) (next.cross ??= [])[i] = kv;
  return kv;
}

export interface DecodeInputs {
  decoderInputIds: Tensor;
  decoderAttentionMask: Tensor | null;
  encoderHidden: Tensor;
  encoderAttentionMask: Tensor | null;
  pastKeyValues: KVCache | null;
  useCache: boolean;
}

/** An encoder-decoder LM: forward as transformers' *ForConditionalGeneration.forward. */
export abstract class Seq2SeqLMBase extends HFModel {
  readonly task = 'SEQ_2_SEQ_LM' as const;
  /** Decoder positions (BART's learned table); null when unlimited (T5's relative buckets). */
  abstract readonly decoderMaxPositions: number | null;

  /** The encoder's last hidden states [B, S, H]. */
  abstract encode(inputIds: Tensor, attentionMask?: Tensor | null): Tensor;
  /** The decoder's last hidden states [B, T, H] and the new cache (when useCache). */
  protected abstract decode(d: DecodeInputs): { hidden: Tensor; cache?: KVCache };
  /** Decoder hidden states -> vocabulary logits. */
  protected abstract lmLogits(hidden: Tensor): Tensor;

  get decoderStartTokenId(): number {
    const s = this.config.raw.decoder_start_token_id;
    if (typeof s !== 'number') throw new Error(`${this.architecture}: config has no decoder_start_token_id (T5 uses the pad id, BART the eos id)`);
    return s;
  }

  forward(inputs: ModelInputs): ModelOutput {
    const { inputIds, attentionMask, labels } = inputs;
    let dec = inputs.decoderInputIds ?? null;
    if (!dec) {
      if (!labels) throw new Error(`${this.architecture}.forward needs decoderInputIds or labels (shifted right into decoder inputs)`);
      dec = shiftTokensRight(labels, this.padTokenId, this.decoderStartTokenId);
    }
    if (dec.dtype !== 'int32' || dec.ndim !== 2) throw new Error('decoderInputIds must be an int32 [B, T] tensor');
    const enc = inputs.encoderOutputs ?? this.encode(inputIds, attentionMask);
    if (enc.ndim !== 3 || enc.shape[0] !== dec.shape[0]) {
      throw new Error(`encoder output ${enc.label()} and decoder inputs [${dec.shape.join(', ')}] differ in batch size`);
    }
    const { hidden, cache } = this.decode({
      decoderInputIds: dec, decoderAttentionMask: inputs.decoderAttentionMask ?? null, encoderHidden: enc,
      encoderAttentionMask: attentionMask ?? null, pastKeyValues: inputs.pastKeyValues ?? null, useCache: inputs.useCache ?? false,
    });
    const logits = this.lmLogits(hidden);
    const loss = labels ? seq2seqLmLoss(logits, labels) : undefined;
    return { logits, loss, pastKeyValues: cache, encoderLastHiddenState: enc };
  }
}

/** Checks the encoder's inputs. */
export function checkEncoderInputs(inputIds: Tensor, attentionMask: Tensor | null | undefined): [number, number] {
  if (!inputIds || inputIds.dtype !== 'int32' || inputIds.ndim !== 2) throw new Error('inputIds must be an int32 [B, S] tensor');
  const [b, s] = inputIds.shape;
  if (attentionMask && (attentionMask.ndim !== 2 || attentionMask.shape[0] !== b || attentionMask.shape[1] !== s)) {
    throw new Error(`attentionMask must be [${b}, ${s}] like inputIds, got [${attentionMask.shape.join(', ')}]`);
  }
  return [b, s];
}
