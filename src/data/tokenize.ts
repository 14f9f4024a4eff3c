// Dataset rows -> token ids for classification and causal LM training.
import { Dataset, Row, encodeLabels, LabelMapping } from './dataset.js';
import { TokenizerLike, encodeIds, encodeTruncated } from './tokenizer.js';

export const IGNORE_INDEX = -100;

export interface ClassificationFeatures extends Row {
  inputIds: number[];
  attentionMask: number[];
  labels: number;
}

export interface TokenizeClassificationOptions {
  textColumn: string;
  textPairColumn?: string;
  labelColumn?: string;
  maxLength?: number;
  /** Cut sequences to maxLength (default true); false makes an over-long row an error. */
  truncation?: boolean;
  label2id?: Record<string, number>;
  numLabels?: number;
}

function limitOf(tok: TokenizerLike, maxLength?: number): number {
  const m = maxLength ?? tok.modelMaxLength;
  return m && m > 0 && Number.isFinite(m) ? m : Infinity;
}

function fit(ids: number[], limit: number, truncation: boolean, what: string): number[] {
  if (ids.length <= limit) return ids;
  if (!truncation) throw new Error(`${what} is ${ids.length} tokens, longer than maxLength ${limit} (enable truncation or raise maxLength)`);
  return ids.slice(0, limit);
}

function text(r: Row, col: string): string {
  const v = r[col];
  if (typeof v !== 'string') throw new Error(`column '${col}' must be text, got ${v === undefined || v === null ? 'nothing' : typeof v}`);
  return v;
}

/** Tokenizes a text (or text pair) classification dataset; labels mapped through label2id. */
export function tokenizeClassification(ds: Dataset, tok: TokenizerLike, o: TokenizeClassificationOptions):
  Dataset<ClassificationFeatures> & { labelMapping?: LabelMapping } {
  const labelColumn = o.labelColumn ?? 'label';
  const cols = [o.textColumn, ...(o.textPairColumn ? [o.textPairColumn] : [])];
  ds.requireColumns(cols);
  const hasLabels = ds.columnNames.includes(labelColumn);
  let mapping: LabelMapping | undefined;
  let src: Dataset = ds;
  if (hasLabels) ({ dataset: src, mapping } = encodeLabels(ds, labelColumn, { label2id: o.label2id, numLabels: o.numLabels }));
  const limit = limitOf(tok, o.maxLength);
  const truncation = o.truncation ?? true;
  const out = src.map((r) => {
    const t = text(r, o.textColumn), pair = o.textPairColumn ? text(r, o.textPairColumn) : undefined;
    let ids = encodeIds(tok, t, { addSpecialTokens: true, textPair: pair });
    if (ids.length > limit) {
      if (!truncation) throw new Error(`text is ${ids.length} tokens, longer than maxLength ${limit} (enable truncation or raise maxLength)`);
      ids = encodeTruncated(tok, t, { textPair: pair, maxLength: limit, addSpecialTokens: true });
    }
    const f: ClassificationFeatures = { inputIds: ids, attentionMask: ids.map(() => 1), labels: hasLabels ? (r[labelColumn] as number) : -1 };
    return f;
  }) as Dataset<ClassificationFeatures> & { labelMapping?: LabelMapping };
  out.labelMapping = mapping;
  return out;
}

export interface CausalLMFeatures extends Row {
  inputIds: number[];
  attentionMask: number[];
  labels: number[];
}

export interface TokenizeCausalLMOptions {
  /** Plain text rows... */
  textColumn?: string;
  /** ...or prompt / response pairs. */
  promptColumn?: string;
  responseColumn?: string;
  maxLength?: number;
  truncation?: boolean;
  /** false (default): prompt tokens get label -100, only the response is learned. */
  trainOnPrompt?: boolean;
  /** Concatenate all examples (each ending in eos) and cut into maxLength blocks. */
  packing?: boolean;
  /** Append the eos token (default true). */
  addEos?: boolean;
}

/**
 * Causal LM features. For prompt/response rows the whole text prompt + response is tokenized
 * and the first len(tokenize(prompt)) labels are masked, as Stanford Alpaca's train.py does.
 */
export function tokenizeCausalLM(ds: Dataset, tok: TokenizerLike, o: TokenizeCausalLMOptions): Dataset<CausalLMFeatures> {
  const pairMode = o.promptColumn !== undefined || o.responseColumn !== undefined;
  if (pairMode && (!o.promptColumn || !o.responseColumn)) throw new Error('tokenizeCausalLM: give both promptColumn and responseColumn');
  if (!pairMode && !o.textColumn) throw new Error('tokenizeCausalLM: give textColumn, or promptColumn and responseColumn');
  ds.requireColumns(pairMode ? [o.promptColumn!, o.responseColumn!] : [o.textColumn!]);
  const addEos = o.addEos ?? true;
  const eos = tok.eosTokenId;
  if (addEos && (eos === undefined || eos === null)) throw new Error('tokenizeCausalLM: addEos needs a tokenizer with an eos token');
  const limit = limitOf(tok, o.maxLength);
  const truncation = o.truncation ?? true;
  if (o.packing && !Number.isFinite(limit)) throw new Error('tokenizeCausalLM: packing needs maxLength');
  const perRow = ds.map((r) => {
    let ids: number[], nMasked = 0;
    if (pairMode) {
      const prompt = text(r, o.promptColumn!), response = text(r, o.responseColumn!);
      ids = encodeIds(tok, prompt + response);
      if (!o.trainOnPrompt) nMasked = Math.min(encodeIds(tok, prompt).length, ids.length);
    } else ids = encodeIds(tok, text(r, o.textColumn!));
    if (addEos && ids[ids.length - 1] !== eos) ids.push(eos!);
    const labels = ids.map((t, i) => (i < nMasked ? IGNORE_INDEX : t));
    if (!o.packing) {
      const cut = fit(ids, limit, truncation, 'example');
      ids = cut; labels.length = cut.length;
    }
    return { inputIds: ids, attentionMask: ids.map(() => 1), labels } as CausalLMFeatures;
  });
  if (!o.packing) return perRow;
  // Packing: one token stream, cut into full blocks; the tail shorter than a block is dropped
  // (as the run_clm group_texts does).
  const allIds: number[] = [], allLabels: number[] = [], origins: string[] = [];
  perRow.rows.forEach((r, i) => { for (let k = 0; k < r.inputIds.length; k++) { allIds.push(r.inputIds[k]); allLabels.push(r.labels[k]); origins.push(perRow.where(i)); } });
  const n = Math.floor(allIds.length / limit);
  if (n === 0) throw new Error(`tokenizeCausalLM: packing ${allIds.length} tokens gives no full block of maxLength ${limit}`);
  const rows: CausalLMFeatures[] = [], blockOrigins: string[] = [];
  for (let b = 0; b < n; b++) {
    const ids = allIds.slice(b * limit, (b + 1) * limit);
    rows.push({ inputIds: ids, attentionMask: ids.map(() => 1), labels: allLabels.slice(b * limit, (b + 1) * limit) });
    blockOrigins.push(`block ${b} (from ${origins[b * limit]})`);
  }
  return new Dataset(rows, blockOrigins);
}

export interface TokenClassificationFeatures extends Row {
  inputIds: number[];
  attentionMask: number[];
  labels: number[];
}
