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

/** What token classification needs from a tokenizer: ids of pre-split words and their word ids. */
export interface WordTokenizer { encodeWords(words: string[], opts?: { addSpecialTokens?: boolean; maxLength?: number }): { ids: number[]; wordIds: (number | null)[] } }

export interface TokenizeTokenClassificationOptions {
  /** Column of word lists (datasets' NER layout: "tokens"). */
  tokensColumn?: string;
  /** Column of per-word tags, names or ids (datasets' "ner_tags"). */
  tagsColumn?: string;
  /** Tag name -> id; string tags must be in it. Integer tags are ids already. */
  label2id: Record<string, number>;
  maxLength?: number;
  /** Label every sub-token of a word, not only the first (the example's --label_all_tokens). */
  labelAllTokens?: boolean;
}

/** Per-word tag ids of a row (names through label2id, ids checked against the label count). */
export function wordTagIds(tags: unknown, words: number, label2id: Record<string, number>, where: string): number[] {
  if (!Array.isArray(tags)) throw new Error(`${where}: tags must be a list, got ${typeof tags}`);
  if (tags.length !== words) throw new Error(`${where}: ${words} words but ${tags.length} tags`);
  const n = Object.keys(label2id).length;
  return tags.map((t) => {
    if (typeof t === 'number' && Number.isInteger(t)) {
      if (t < 0 || t >= n) throw new Error(`${where}: tag id ${t} is outside the ${n} labels`);
      return t;
    }
    const id = label2id[String(t)];
    if (id === undefined) throw new Error(`${where}: tag ${JSON.stringify(t)} is not one of the labels (${Object.keys(label2id).join(', ')})`);
    return id;
  });
}

/**
 * Word-level NER rows -> token features, aligned as transformers' token-classification example
 * does: the first sub-token of each word gets the word's label, the other sub-tokens and the
 * special tokens -100 (ignored by the loss and the metrics). Rows without the tags column get
 * all -100 labels (inputs for prediction).
 */
export function tokenizeTokenClassification(ds: Dataset, tok: WordTokenizer, o: TokenizeTokenClassificationOptions): Dataset<TokenClassificationFeatures> {
  const tokensColumn = o.tokensColumn ?? 'tokens', tagsColumn = o.tagsColumn ?? 'ner_tags';
  ds.requireColumns([tokensColumn]);
  const hasTags = ds.columnNames.includes(tagsColumn);
  return ds.map((r, i) => {
    const words = r[tokensColumn];
    if (!Array.isArray(words) || words.some((w) => typeof w !== 'string')) throw new Error(`${ds.where(i)}: column '${tokensColumn}' must be a list of words`);
    const tags = hasTags ? wordTagIds(r[tagsColumn], words.length, o.label2id, ds.where(i)) : null;
    const { ids, wordIds } = tok.encodeWords(words as string[], { maxLength: o.maxLength });
    let prev: number | null = null;
    const labels = wordIds.map((w) => {
      const first = w !== prev;
      prev = w;
      if (w === null || !tags) return IGNORE_INDEX;
      return first || o.labelAllTokens ? tags[w] : IGNORE_INDEX;
    });
    return { inputIds: ids, attentionMask: ids.map(() => 1), labels };
  }) as Dataset<TokenClassificationFeatures>;
}

export interface Seq2SeqFeatures extends Row {
  inputIds: number[];
  attentionMask: number[];
  /** Absent when the data has no target column. */
  labels?: number[];
}

export interface TokenizeSeq2SeqOptions {
  /** Column of encoder texts (default 'source'). */
  sourceColumn?: string;
  /** Column of target texts (default 'target'); rows without it get no labels (inputs for generation). */
  targetColumn?: string;
  /** Source tokens per example (default model_max_length). */
  maxLength?: number;
  /** Target tokens per example (default maxLength). */
  maxTargetLength?: number;
  /** Cut sequences to their limit (default true); false makes an over-long row an error. */
  truncation?: boolean;
}

/**
 * Encoder-decoder features as transformers' run_summarization / run_translation build them:
 * inputIds = tokenizer(source), labels = tokenizer(text_target=target), each with the
 * tokenizer's special tokens (T5's closing </s>, BART's <s> ... </s>) and truncated to its
 * limit. The model shifts the labels right into decoder inputs.
 */
export function tokenizeSeq2Seq(ds: Dataset, tok: TokenizerLike, o: TokenizeSeq2SeqOptions = {}): Dataset<Seq2SeqFeatures> {
  const src = o.sourceColumn ?? 'source', tgt = o.targetColumn ?? 'target';
  ds.requireColumns([src]);
  const hasTargets = ds.columnNames.includes(tgt);
  const limit = limitOf(tok, o.maxLength), tlimit = o.maxTargetLength ?? limit;
  const truncation = o.truncation ?? true;
  // Truncation keeps the closing special tokens, as the fast tokenizers' truncation does.
  const enc = (t: string, lim: number, what: string): number[] => {
    const ids = encodeIds(tok, t, { addSpecialTokens: true });
    if (ids.length <= lim) return ids;
    if (!truncation) throw new Error(`${what} is ${ids.length} tokens, longer than its limit ${lim} (enable truncation or raise the limit)`);
    return encodeTruncated(tok, t, { maxLength: lim, addSpecialTokens: true });
  };
  return ds.map((r, i) => {
    const ids = enc(text(r, src), limit, `${ds.where(i)}: source`);
    const f: Seq2SeqFeatures = { inputIds: ids, attentionMask: ids.map(() => 1) };
    if (hasTargets) f.labels = enc(text(r, tgt), tlimit, `${ds.where(i)}: target`);
    return f;
  }) as Dataset<Seq2SeqFeatures>;
}
