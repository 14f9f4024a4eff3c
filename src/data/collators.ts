// Collators: a list of feature rows -> one padded batch of int32 tensors.
import { Tensor } from '../tensor/tensor.js';
import { tensor } from '../tensor/ops/basic.js';
import type { Row } from './dataset.js';
import { IGNORE_INDEX } from './tokenize.js';
import { TokenizerLike, padIdOf } from './tokenizer.js';

export interface Batch { inputIds: Tensor; attentionMask: Tensor; labels?: Tensor; [k: string]: Tensor | undefined }
export type DataCollator = (rows: Row[]) => Batch;

export interface PaddingOptions {
  tokenizer?: TokenizerLike;
  padTokenId?: number;
  /** Round the padded length up to a multiple of this. */
  padToMultipleOf?: number;
  /** 'right' (default; training) or 'left' (generation). */
  paddingSide?: 'left' | 'right';
}

function ints(rows: Row[], key: string, i: number): number[] {
  const v = rows[i][key];
  if (!Array.isArray(v) && !(v instanceof Int32Array)) throw new Error(`collator: feature ${i} has no '${key}' sequence`);
  return Array.from(v as ArrayLike<number>);
}

function padTo(rows: number[][], len: number, value: number, side: 'left' | 'right'): Tensor {
  const out = new Int32Array(rows.length * len).fill(value);
  rows.forEach((r, b) => out.set(r, b * len + (side === 'left' ? len - r.length : 0)));
  return tensor(out, [rows.length, len], { dtype: 'int32' });
}

function batchLength(lengths: number[], multiple?: number): number {
  let L = Math.max(...lengths);
  if (multiple && multiple > 1) L = Math.ceil(L / multiple) * multiple;
  return L;
}

function resolvePad(o: PaddingOptions): number {
  if (o.padTokenId !== undefined) return o.padTokenId;
  if (o.tokenizer) return padIdOf(o.tokenizer);
  throw new Error('collator: give a tokenizer or padTokenId');
}

/** What every collator starts with: the rows' ids, the batch length, padded ids and mask. */
function padInputs(rows: Row[], padToMultipleOf: number | undefined, pad: number, side: 'left' | 'right') {
  if (!rows.length) throw new Error('collator: empty batch');
  const ids = rows.map((_, i) => ints(rows, 'inputIds', i));
  const L = batchLength(ids.map((r) => r.length), padToMultipleOf);
  return {
    ids, L,
    inputIds: padTo(ids, L, pad, side),
    attentionMask: padTo(ids.map((r) => r.map(() => 1)), L, 0, side),
  };
}

/** Dynamic padding for sequence classification; labels stay [B]. */
export function DataCollatorWithPadding(o: PaddingOptions): DataCollator {
  const pad = resolvePad(o);
  const side = o.paddingSide ?? o.tokenizer?.paddingSide ?? 'right';
  return (rows) => {
    const { ids, L, inputIds, attentionMask } = padInputs(rows, o.padToMultipleOf, pad, side);
    const batch: Batch = { inputIds, attentionMask };
    if (rows[0].tokenTypeIds !== undefined) batch.tokenTypeIds = padTo(rows.map((_, i) => ints(rows, 'tokenTypeIds', i)), L, 0, side);
    if (rows[0].labels !== undefined) {
      const labels = rows.map((r, i) => {
        const l = r.labels;
        if (typeof l !== 'number' || !Number.isInteger(l)) throw new Error(`collator: feature ${i} label must be an integer class id, got ${JSON.stringify(l)}`);
        return l;
      });
      batch.labels = tensor(Int32Array.from(labels), [rows.length], { dtype: 'int32' });
    }
    return batch;
  };
}

/**
 * Causal LM batches (mlm=false). Labels come from the features when present (prompt masking
 * kept), else copy inputIds; padding positions get -100 by the attention mask, so an eos used
 * as pad token is still learned where it is real.
 */
export function DataCollatorForLanguageModeling(o: PaddingOptions & { mlm?: boolean }): DataCollator {
  if (o.mlm) throw new Error('DataCollatorForLanguageModeling: masked LM (mlm=true) is not supported; use mlm=false for causal LM');
  const pad = resolvePad(o);
  const side = o.paddingSide ?? 'right';
  return (rows) => {
    const { ids, L, inputIds, attentionMask } = padInputs(rows, o.padToMultipleOf, pad, side);
    const labels = rows.map((r, i) => {
      const l = r.labels !== undefined ? ints(rows, 'labels', i) : ids[i];
      if (l.length !== ids[i].length) throw new Error(`collator: feature ${i} has ${ids[i].length} inputIds but ${l.length} labels`);
      return l;
    });
    return { inputIds, attentionMask, labels: padTo(labels, L, IGNORE_INDEX, side) };
  };
}

/** Token classification: per-token labels padded with -100. */
export function DataCollatorForTokenClassification(o: PaddingOptions): DataCollator {
  const pad = resolvePad(o);
  const side = o.paddingSide ?? 'right';
  return (rows) => {
    const { ids, L, inputIds, attentionMask } = padInputs(rows, o.padToMultipleOf, pad, side);
    const batch: Batch = { inputIds, attentionMask };
    if (rows[0].labels !== undefined) {
      const labels = rows.map((_, i) => ints(rows, 'labels', i));
      labels.forEach((l, i) => { if (l.length !== ids[i].length) throw new Error(`collator: feature ${i} has ${ids[i].length} inputIds but ${l.length} labels`); });
      batch.labels = padTo(labels, L, IGNORE_INDEX, side);
    }
    return batch;
  };
}

export interface Seq2SeqCollatorOptions extends PaddingOptions {
  /** Fills the labels' padding (default -100: ignored by the loss). */
  labelPadTokenId?: number;
}

/**
 * transformers' DataCollatorForSeq2Seq: inputIds / attentionMask padded with the pad id, and
 * labels padded (on the same side) to the longest labels of the batch with -100. The model
 * shifts the labels right into its decoder inputs.
 */
export function DataCollatorForSeq2Seq(o: Seq2SeqCollatorOptions): DataCollator {
  const pad = resolvePad(o);
  const side = o.paddingSide ?? o.tokenizer?.paddingSide ?? 'right';
  const labelPad = o.labelPadTokenId ?? IGNORE_INDEX;
  return (rows) => {
    const { inputIds, attentionMask } = padInputs(rows, o.padToMultipleOf, pad, side);
    const batch: Batch = { inputIds, attentionMask };
    if (rows[0].labels !== undefined) {
      const labels = rows.map((_, i) => ints(rows, 'labels', i));
      if (labels.some((l) => l.length === 0)) throw new Error('DataCollatorForSeq2Seq: a feature has empty labels');
      batch.labels = padTo(labels, batchLength(labels.map((l) => l.length), o.padToMultipleOf), labelPad, side);
    }
    return batch;
  };
}
