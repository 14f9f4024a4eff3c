// SFT data preparation as TRL's SFTTrainer (trl 1.13) does it, step for step, so that the
// same rows give the same input ids and the same -100 labels: formatting function -> ChatML
// conversion of from/value conversations -> eos appended (non-conversational) -> tokenize
// (text, prompt-completion, chat messages with assistant masks) -> labels from the masks ->
// keep_start truncation and dropping rows with no label left -> packing (bfd, bfd_split,
// wrapped). The collator is TRL's DataCollatorForLanguageModeling (padding-free for bfd).
import { Dataset, Row } from './dataset.js';
import { TokenizerLike, encodeIds, padIdOf } from './tokenizer.js';
import { IGNORE_INDEX } from './tokenize.js';
import { ChatMessage, checkNoSentinels, hasGenerationMarkers, renderChatWithGenerationSpans } from './templates.js';
import { Tensor } from '../tensor/tensor.js';
import { tensor } from '../tensor/ops/basic.js';
import type { Batch, DataCollator } from './collators.js';

export type PackingStrategy = 'bfd' | 'bfd_split' | 'wrapped';
export type TruncationMode = 'keep_start' | 'keep_end';

/** A prepared SFT row: ids, labels (-100 where no loss) and, when packed by bfd, the documents' lengths. */
export interface SFTFeatures extends Row {
  inputIds: number[];
  labels: number[];
  seqLengths?: number[];
}

/** What SFT preparation needs from a tokenizer (src/io's Tokenizer has it all). */
export interface SFTTokenizer extends TokenizerLike {
  decode(ids: ArrayLike<number>, opts?: { skipSpecialTokens?: boolean }): string;
  readonly unkToken?: string | null;
}

const SUPPORTED_KEYS = ['prompt', 'chosen', 'rejected', 'completion', 'messages'];

/** TRL's is_conversational: the last supported key present holds a list of {role, ...} messages. */
export function isConversational(example: Row): boolean {
  const keys = Object.keys(example).filter((k) => SUPPORTED_KEYS.includes(k));
  if (!keys.length) return false;
  // Python pops an arbitrary element of a set; for the keys SFT data has (prompt/completion or
  // messages) they agree on being conversational, so any one will do.
  const v = example[keys[keys.length - 1]];
  return Array.isArray(v) && v.length > 0 && typeof v[0] === 'object' && v[0] !== null && 'role' in (v[0] as object);
}

/** TRL's is_conversational_from_value: {"conversations": [{"from", "value"}, ...]}. */
export function isConversationalFromValue(example: Row): boolean {
  const v = example.conversations;
  return Array.isArray(v) && v.length > 0 && typeof v[0] === 'object' && v[0] !== null && 'from' in (v[0] as object) && 'value' in (v[0] as object);
}

/** TRL's maybe_convert_to_chatml: from/value -> role/content, "conversations" -> "messages". */
export function convertToChatML(example: Row): Row {
  const out: Row = { ...example };
  for (const key of ['prompt', 'completion', 'chosen', 'rejected', 'messages', 'conversations']) {
    if (!Array.isArray(out[key])) continue;
    out[key] = (out[key] as unknown[]).map((m) => {
      if (!m || typeof m !== 'object') return m;
      const msg: Record<string, unknown> = { ...(m as Record<string, unknown>) };
      if ('from' in msg) { msg.role = msg.from; delete msg.from; }
      if ('value' in msg) { msg.content = msg.value; delete msg.value; }
      return msg;
    });
  }
  if ('conversations' in out) { out.messages = out.conversations; delete out.conversations; }
  return out;
}

/** Character offsets of every token, found by decoding (the JS tokenizers give no offsets). */
function tokenEnds(tok: SFTTokenizer, ids: number[]): number[] {
  // decode(ids[s..k+1]) - decode(ids[s..k]) is token k's length; a few tokens of left context
  // keep decoders that strip a leading space (Metaspace) from shortening it.
  const ends: number[] = [];
  let at = 0;
  for (let k = 0; k < ids.length; k++) {
    const s = Math.max(0, k - 4);
    const before = k > s ? tok.decode(ids.slice(s, k)).length : 0;
    at += tok.decode(ids.slice(s, k + 1)).length - before;
    ends.push(at);
  }
  return ends;
}

/**
 * transformers' assistant_masks: 1 on every token from the one holding a generation block's
 * first character to the one holding its last (char_to_token), 0 elsewhere.
 */
function assistantMask(tok: SFTTokenizer, ids: number[], text: string, spans: [number, number][]): number[] {
  const ends = tokenEnds(tok, ids);
  if (ends.length && ends[ends.length - 1] !== text.length) {
    throw new Error(`assistant-only loss: the tokenizer does not decode back to the rendered chat (${ends[ends.length - 1]} vs ${text.length} characters), so the assistant spans cannot be mapped to tokens`);
  }
  const charToToken = (c: number): number | null => {
    if (c < 0 || c >= text.length) return null;
    let lo = 0, hi = ends.length - 1;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (ends[mid] > c) hi = mid; else lo = mid + 1; }
    return ends[lo] > c ? lo : null;
  };
  const mask = ids.map(() => 0);
  for (const [a, b] of spans) {
    const start = charToToken(a), end = charToToken(b - 1);
    if (start === null) break; // as transformers: out of bounds (truncation)
    const stop = end ? end + 1 : ids.length; // transformers' `end_token + 1 if end_token else len`
    for (let t = start; t < stop; t++) mask[t] = 1;
  }
  return mask;
}

export interface ChatTokenizeOptions {
  chatTemplate?: string | null;
  addGenerationPrompt?: boolean;
  returnAssistantTokensMask?: boolean;
  tools?: unknown;
  extra?: Record<string, unknown>;
}

/** apply_chat_template(messages, tokenize=True, return_dict=True[, return_assistant_tokens_mask]). */
export function tokenizeChat(tok: SFTTokenizer, messages: ChatMessage[], o: ChatTokenizeOptions = {}): { inputIds: number[]; assistantMasks?: number[] } {
  const template = o.chatTemplate ?? tok.chatTemplate;
  if (!template) throw new Error('chat data needs a chat template: the tokenizer has none (set chatTemplatePath or the tokenizer\'s chat_template)');
  if (!Array.isArray(messages)) throw new Error('chat messages must be a list of {role, content}');
  checkNoSentinels(messages);
  const t = tok as SFTTokenizer & { padToken?: string | null; unkToken?: string | null };
  const { text, generationSpans } = renderChatWithGenerationSpans(template, {
    messages, add_generation_prompt: o.addGenerationPrompt ?? false, tools: o.tools ?? null,
    bos_token: t.bosToken ?? '', eos_token: t.eosToken ?? '', pad_token: t.padToken ?? '', unk_token: t.unkToken ?? '',
    ...o.extra,
  });
  const inputIds = encodeIds(tok, text, { addSpecialTokens: false });
  if (!o.returnAssistantTokensMask) return { inputIds };
  return { inputIds, assistantMasks: assistantMask(tok, inputIds, text, generationSpans) };
}

// ---------------------------------------------------------------------------------------
// Packing

/** TRL's _SegmentTree: finds the smallest free space >= a length among 1..maxval. */
class SegmentTree {
  private readonly size: number;
  private readonly tree: Int32Array;
  constructor(readonly maxval: number) {
    this.size = 1 << Math.ceil(Math.log2(Math.max(maxval, 1)));
    while (this.size < maxval) this.size <<= 1;
    this.tree = new Int32Array(2 * this.size);
  }
  private set(val: number, v: number): void {
    let i = this.size + val - 1;
    this.tree[i] = v;
    while (i > 1) { i >>= 1; const l = this.tree[i << 1], r = this.tree[(i << 1) + 1]; this.tree[i] = l >= r ? l : r; }
  }
  add(val: number): void { this.set(val, val); }
  remove(val: number): void { this.set(val, 0); }
  search(val: number): number {
    let i = 1;
    while (i < this.size) i = this.tree[i << 1] >= val ? i << 1 : (i << 1) + 1;
    return this.tree[i];
  }
}

interface PackRow { inputIds: number[]; labels: number[] }

function packBfd(rows: PackRow[], seqLength: number, overflow: 'truncate' | 'split'): SFTFeatures[] {
  let seqs = rows.filter((r) => r.inputIds.length > 0);
  if (overflow === 'truncate') seqs = seqs.map((r) => ({ inputIds: r.inputIds.slice(0, seqLength), labels: r.labels.slice(0, seqLength) }));
  else {
    seqs = seqs.flatMap((r) => {
      const out: PackRow[] = [];
      for (let s = 0; s < r.inputIds.length; s += seqLength) out.push({ inputIds: r.inputIds.slice(s, s + seqLength), labels: r.labels.slice(s, s + seqLength) });
      return out;
    });
  }
  // Longest first; a stable sort keeps equal lengths in data order, as Arrow's sort does.
  const order = seqs.map((_, i) => i).sort((a, b) => seqs[b].inputIds.length - seqs[a].inputIds.length);
  const tree = new SegmentTree(seqLength);
  tree.add(seqLength);
  const spaceToBin = new Map<number, { ids: number[]; length: number }[]>();
  const bins: { ids: number[]; length: number }[] = [];
  for (const idx of order) {
    const length = seqs[idx].inputIds.length;
    let space = tree.search(length);
    let bin: { ids: number[]; length: number };
    if (space < seqLength) bin = spaceToBin.get(space)!.shift()!;
    else { bin = { ids: [], length: 0 }; bins.push(bin); }
    bin.ids.push(idx);
    bin.length += length;
    if (space < seqLength && !spaceToBin.get(space)!.length) tree.remove(space);
    space -= length;
    if (!spaceToBin.has(space)) spaceToBin.set(space, []);
    spaceToBin.get(space)!.push(bin);
    if (space > 0) tree.add(space);
  }
  return bins.map((b) => ({
    inputIds: b.ids.flatMap((i) => seqs[i].inputIds),
    labels: b.ids.flatMap((i) => seqs[i].labels),
    seqLengths: b.ids.map((i) => seqs[i].inputIds.length),
  }));
}

function packWrapped(rows: PackRow[], seqLength: number): SFTFeatures[] {
  const ids = rows.flatMap((r) => r.inputIds), labels = rows.flatMap((r) => r.labels);
  const out: SFTFeatures[] = [];
  for (let s = 0; s < ids.length; s += seqLength) out.push({ inputIds: ids.slice(s, s + seqLength), labels: labels.slice(s, s + seqLength) });
  return out;
}

/**
 * TRL's pack_dataset over {inputIds, labels} rows. 'bfd' (best-fit decreasing; sequences cut to
 * seqLength) and 'bfd_split' (over-long sequences split into seqLength pieces) keep documents
 * whole and record their lengths (seqLengths, for position ids); 'wrapped' concatenates and
 * cuts every seqLength tokens, the last block shorter. Like datasets.map(batched=True) it packs
 * 1000 rows at a time.
 */
export function packDataset(ds: Dataset<PackRow & Row> | (PackRow & Row)[], seqLength: number, strategy: PackingStrategy = 'bfd'): Dataset<SFTFeatures> {
  if (!Number.isInteger(seqLength) || seqLength < 1) throw new Error(`packDataset: seqLength must be a positive integer, got ${seqLength}`);
  if (!['bfd', 'bfd_split', 'wrapped'].includes(strategy)) throw new Error(`packDataset: invalid packing strategy '${strategy}', must be one of bfd, bfd_split, wrapped`);
  const rows = Array.isArray(ds) ? ds : ds.rows;
  rows.forEach((r, i) => {
    if (!Array.isArray(r.inputIds) || !Array.isArray(r.labels)) throw new Error(`packDataset: row ${i} needs inputIds and labels lists`);
    if (r.inputIds.length !== r.labels.length) throw new Error(`packDataset: row ${i} has ${r.inputIds.length} inputIds but ${r.labels.length} labels`);
  });
  const out: SFTFeatures[] = [];
  for (let s = 0; s < rows.length; s += 1000) {
    const chunk = rows.slice(s, s + 1000);
    out.push(...(strategy === 'wrapped' ? packWrapped(chunk, seqLength) : packBfd(chunk, seqLength, strategy === 'bfd' ? 'truncate' : 'split')));
  }
  return new Dataset(out, out.map((_, i) => `packed row ${i}`));
}

// ---------------------------------------------------------------------------------------
// Preparation

export interface PrepareSFTOptions {
  /** Column with the text of language-modeling rows (TRL's dataset_text_field; default 'text'). */
  datasetTextField?: string;
  /** Truncation length, and the block length when packing; null: no truncation. Default 1024. */
  maxLength?: number | null;
  truncationMode?: TruncationMode;
  packing?: boolean;
  packingStrategy?: PackingStrategy;
  /** Loss on the completion only (prompt-completion rows). Default: true when rows have prompt and completion. */
  completionOnlyLoss?: boolean | null;
  /** Loss on the assistant turns only (chat rows; the template needs {% generation %} markers). */
  assistantOnlyLoss?: boolean;
  /** Turns a row into its training text (TRL's formatting_func; the result goes to column "text"). */
  formattingFunc?: ((example: Row) => string) | null;
  /** End-of-sequence token appended to text / completion (default the tokenizer's). */
  eosToken?: string | null;
  /** Template used instead of the tokenizer's. */
  chatTemplate?: string | null;
  /** Shuffle the (tokenized) rows before packing and at the end, with this library's Rng. */
  shuffleDataset?: boolean;
  seed?: number;
}

function textOf(ex: Row, col: string): string {
  const v = ex[col];
  if (typeof v !== 'string') throw new Error(`column '${col}' must be text, got ${v === undefined || v === null ? 'nothing' : typeof v} (set datasetTextField, or give prompt/completion or messages columns)`);
  return v;
}

/** Whether the prompt-completion mask applies: TRL's completion_only_loss resolution. */
export function resolveCompletionOnlyLoss(first: Row | undefined, flag: boolean | null | undefined): boolean {
  if (flag === null || flag === undefined) return !!first && 'prompt' in first && 'completion' in first;
  return flag;
}

/**
 * Rows -> SFT features as TRL's SFTTrainer._prepare_dataset makes them. Rows that already
 * have inputIds are taken as tokenized (labels built from completionMask / assistantMasks if
 * present).
 */
export function prepareSFTDataset(data: Dataset | Row[], tok: SFTTokenizer, o: PrepareSFTOptions = {}): Dataset<SFTFeatures> {
  let ds = data instanceof Dataset ? data : new Dataset(data);
  if (!ds.length) throw new Error('SFT: the dataset is empty');
  const field = o.datasetTextField ?? 'text';
  const maxLength = o.maxLength === undefined ? 1024 : o.maxLength;
  const truncationMode = o.truncationMode ?? 'keep_start';
  if (!['keep_start', 'keep_end'].includes(truncationMode)) throw new Error(`SFT: unsupported truncationMode '${truncationMode}', expected 'keep_start' or 'keep_end'`);
  if (maxLength !== null && !(Number.isInteger(maxLength) && maxLength > 0)) throw new Error(`SFT: maxLength must be a positive integer or null, got ${maxLength}`);
  const completionOnly = resolveCompletionOnlyLoss(ds.rows[0], o.completionOnlyLoss);
  const assistantOnly = o.assistantOnlyLoss ?? false;
  const template = o.chatTemplate ?? tok.chatTemplate ?? null;
  const first = ds.rows[0];
  const processed = 'inputIds' in first;

  if (assistantOnly && !isConversational(first)) throw new Error('SFT: assistantOnlyLoss is only supported for conversational datasets (messages, or prompt/completion as message lists)');
  if (assistantOnly && (!template || !hasGenerationMarkers(template))) {
    throw new Error('SFT: assistantOnlyLoss needs a chat template with {% generation %} / {% endgeneration %} around the assistant output (TRL patches a few known templates; give one with chatTemplatePath)');
  }
  if (completionOnly && o.formattingFunc && !processed) {
    throw new Error('SFT: a formattingFunc was given while completionOnlyLoss is true, which is incompatible: formatting turns rows into plain text. Format the data beforehand, or set completionOnlyLoss false.');
  }

  if (!processed) {
    if (o.formattingFunc) {
      const f = o.formattingFunc;
      ds = ds.map((r) => {
        const text = f(r);
        if (typeof text !== 'string') throw new Error(`formattingFunc must return a string, got ${typeof text}`);
        return { ...r, text };
      });
    }
    if (isConversationalFromValue(ds.rows[0])) ds = ds.map(convertToChatML);
    if (!isConversational(ds.rows[0])) {
      const eos = o.eosToken ?? tok.eosToken;
      if (!eos) throw new Error('SFT: the tokenizer has no eos token to end each example with; set eosToken');
      ds = ds.map((r) => {
        const out: Row = { ...r };
        if ('text' in out && typeof out.text === 'string') { if (!out.text.endsWith(eos)) out.text += eos; }
        else if ('completion' in out && typeof out.completion === 'string' && !out.completion.endsWith(eos)) out.completion += eos;
        return out;
      });
    }
    ds = ds.map((ex) => {
      const tools = typeof ex.tools === 'string' ? JSON.parse(ex.tools) : ex.tools;
      const chat = { chatTemplate: template, tools, extra: (ex.chat_template_kwargs as Record<string, unknown>) ?? {} };
      const out: Row = {};
      if ('prompt' in ex) {
        let promptIds: number[], fullIds: number[];
        if (isConversational(ex)) {
          if (!Array.isArray(ex.completion)) throw new Error("conversational 'prompt' needs 'completion' as a message list too");
          promptIds = tokenizeChat(tok, ex.prompt as ChatMessage[], { ...chat, addGenerationPrompt: true }).inputIds;
          const full = tokenizeChat(tok, [...(ex.prompt as ChatMessage[]), ...(ex.completion as ChatMessage[])], { ...chat, returnAssistantTokensMask: assistantOnly });
          fullIds = full.inputIds;
          if (full.assistantMasks) out.assistantMasks = full.assistantMasks;
        } else {
          const p = textOf(ex, 'prompt'), c = textOf(ex, 'completion');
          promptIds = encodeIds(tok, p);
          fullIds = encodeIds(tok, p + c);
        }
        if (!promptIds.every((t, i) => fullIds[i] === t)) {
          process.emitWarning('SFT: the tokenized prompt is not a prefix of the tokenized prompt + completion (tokenizer merges across the boundary); the completion mask starts after len(prompt) tokens, as in TRL');
        }
        out.inputIds = fullIds;
        out.completionMask = [...promptIds.map(() => 0), ...fullIds.slice(promptIds.length).map(() => 1)].slice(0, fullIds.length);
      } else if (isConversational(ex)) {
        const r = tokenizeChat(tok, ex.messages as ChatMessage[], { ...chat, returnAssistantTokensMask: assistantOnly });
        out.inputIds = r.inputIds;
        if (r.assistantMasks) out.assistantMasks = r.assistantMasks;
      } else {
        out.inputIds = encodeIds(tok, textOf(ex, field));
      }
      const am = out.assistantMasks as number[] | undefined;
      if (am && !am.includes(1)) {
        throw new Error("assistantOnlyLoss is on but this example has no assistant tokens: the chat template's {% generation %} blocks rendered nothing here");
      }
      return out;
    });
  }

  // Labels: -100 wherever an applicable mask is 0 (TRL's build_labels).
  let feats: Dataset<SFTFeatures>;
  if (ds.rows.every((r) => Array.isArray(r.labels))) {
    feats = ds.map((r) => ({ inputIds: Array.from(r.inputIds as number[]), labels: Array.from(r.labels as number[]) }));
  } else {
    feats = ds.map((r) => {
      const ids = r.inputIds as number[];
      if (!Array.isArray(ids)) throw new Error('inputIds must be a list of token ids');
      const masks: number[][] = [];
      if (completionOnly && Array.isArray(r.completionMask)) masks.push(r.completionMask as number[]);
      if (Array.isArray(r.assistantMasks)) masks.push(r.assistantMasks as number[]);
      const labels = ids.map((t, i) => (masks.every((m) => m[i]) ? t : IGNORE_INDEX));
      return { inputIds: Array.from(ids), labels };
    });
  }

  if (maxLength !== null && !o.packing) {
    feats = feats.map((r) => truncationMode === 'keep_start'
      ? { inputIds: r.inputIds.slice(0, maxLength), labels: r.labels.slice(0, maxLength) }
      : { inputIds: r.inputIds.slice(-maxLength), labels: r.labels.slice(-maxLength) });
    // Rows left without any label (a prompt filling maxLength) teach nothing: TRL drops them.
    feats = feats.filter((r) => r.labels.some((l) => l !== IGNORE_INDEX));
    if (!feats.length) throw new Error(`SFT: no example keeps a trainable token after truncation to maxLength ${maxLength}`);
  }
  if (o.packing) {
    if (maxLength === null) throw new Error('SFT: when packing is enabled, maxLength cannot be null');
    if (o.shuffleDataset) feats = feats.shuffle(o.seed ?? 42);
    feats = packDataset(feats, maxLength, o.packingStrategy ?? 'bfd');
  }
  if (o.shuffleDataset) feats = feats.shuffle(o.seed ?? 42);
  return feats;
}

// ---------------------------------------------------------------------------------------
// Collation

export interface SFTCollatorOptions {
  padTokenId?: number;
  tokenizer?: TokenizerLike;
  /** Flatten the batch into one row with position ids restarting per document (TRL's padding_free). */
  paddingFree?: boolean;
  padToMultipleOf?: number | null;
}

function pad(rows: number[][], value: number, multiple: number | null | undefined): { data: Int32Array; len: number } {
  let len = Math.max(...rows.map((r) => r.length));
  if (multiple && multiple > 1) len = Math.ceil(len / multiple) * multiple;
  const data = new Int32Array(rows.length * len).fill(value);
  rows.forEach((r, b) => data.set(r, b * len));
  return { data, len };
}

/**
 * TRL's DataCollatorForLanguageModeling: right padding (ids with the pad id, labels with
 * -100) and an attention mask; padding-free mode concatenates the batch into one row whose
 * position ids restart at every document (from seqLengths when packed) and whose label at
 * each document start is -100. The batch keeps an all-ones attention mask there (the same
 * as none).
 */
export function DataCollatorForSFT(o: SFTCollatorOptions): DataCollator {
  const padId = o.padTokenId ?? (o.tokenizer ? padIdOf(o.tokenizer) : undefined);
  if (padId === undefined) throw new Error('DataCollatorForSFT: give padTokenId or a tokenizer');
  return (rows) => {
    if (!rows.length) throw new Error('collator: empty batch');
    const ids = rows.map((r, i) => {
      if (!Array.isArray(r.inputIds)) throw new Error(`collator: feature ${i} has no 'inputIds'`);
      return r.inputIds as number[];
    });
    const labels = rows.map((r, i) => {
      const l = (r.labels as number[] | undefined) ?? ids[i];
      if (l.length !== ids[i].length) throw new Error(`collator: feature ${i} has ${ids[i].length} inputIds but ${l.length} labels`);
      return l;
    });
    const B = rows.length;
    const asTensor = (p: { data: Int32Array; len: number }, b: number): Tensor => tensor(p.data, [b, p.len], { dtype: 'int32' });
    if (!o.paddingFree) {
      const inp = pad(ids, padId, o.padToMultipleOf);
      const batch: Batch = {
        inputIds: asTensor(inp, B),
        labels: asTensor(pad(labels, IGNORE_INDEX, o.padToMultipleOf), B),
        attentionMask: asTensor(pad(ids.map((r) => r.map(() => 1)), 0, o.padToMultipleOf), B),
      };
      return batch;
    }
    const positions = rows.map((r, i) => {
      const sl = r.seqLengths as number[] | undefined;
      if (!sl) return ids[i].map((_, k) => k);
      const p: number[] = [];
      for (const n of sl) for (let k = 0; k < n; k++) p.push(k);
      if (p.length !== ids[i].length) throw new Error(`collator: feature ${i} seqLengths sum to ${p.length}, not ${ids[i].length}`);
      return p;
    });
    const flatPos = pad([positions.flat()], 0, o.padToMultipleOf);
    const flatLab = pad([labels.flat()], IGNORE_INDEX, o.padToMultipleOf);
    for (let k = 0; k < flatPos.len; k++) if (flatPos.data[k] === 0) flatLab.data[k] = IGNORE_INDEX;
    const flatIds = pad([ids.flat()], padId, o.padToMultipleOf);
    const batch: Batch = {
      inputIds: asTensor(flatIds, 1),
      labels: asTensor(flatLab, 1),
      positionIds: asTensor(flatPos, 1),
      // All ones, also over the pad_to_multiple_of tail: TRL passes no mask there.
      attentionMask: tensor(new Int32Array(flatIds.len).fill(1), [1, flatIds.len], { dtype: 'int32' }),
    };
    return batch;
  };
}
