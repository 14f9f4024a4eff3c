// A transformers-like tokenizer over @huggingface/tokenizers (pure JS): loads tokenizer.json
// plus tokenizer_config.json (special tokens, chat template, model_max_length, padding side)
// and adds what training needs: batch encoding with padding / truncation as transformers'
// fast tokenizers do it, and int32 tensors [B, T].
import { pushFolder, type PushResult, type PushToHubOptions } from './hub-upload.js';
import * as fs from 'node:fs';
import { MAX_CONFIG_BYTES, MAX_TOKENIZER_BYTES, readJsonObject, readTextFile } from './files.js';
import * as path from 'node:path';
import { Tokenizer as HFTokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { Tensor } from '../tensor/tensor.js';
import { tensor } from '../tensor/ops/basic.js';
import { yieldToEventLoop } from '../tensor/yield.js';
import { resolveLocalModelPath, resolveModelPath, type ResolveOptions } from './hub.js';

export type PaddingStrategy = 'longest' | 'max_length' | false;
export type Side = 'left' | 'right';

export interface EncodeOptions { addSpecialTokens?: boolean; textPair?: string | null; }
export interface DecodeOptions { skipSpecialTokens?: boolean; }

export interface BatchEncodeOptions {
  padding?: PaddingStrategy | boolean;
  truncation?: boolean;
  /** For truncation and padding='max_length'; default model_max_length. */
  maxLength?: number;
  /** Second sequences (sentence pairs), one per text. */
  textPair?: string[];
  addSpecialTokens?: boolean;
  /** Overrides the tokenizer's padding side for this call. */
  paddingSide?: Side;
  padToMultipleOf?: number;
}

export interface ChatMessage { role: string; content: string; [k: string]: unknown }

/** Result of encodeBatch: plain arrays plus a conversion to tensors. */
export class BatchEncoding {
  constructor(readonly inputIds: number[][], readonly attentionMask: number[][], readonly tokenTypeIds: number[][]) {}

  /** int32 tensors [B, T]; every row must have the same length (use padding). */
  toTensors(): { inputIds: Tensor; attentionMask: Tensor; tokenTypeIds: Tensor } {
    const B = this.inputIds.length;
    const T = B ? this.inputIds[0].length : 0;
    if (this.inputIds.some((r) => r.length !== T)) {
      throw new Error(`toTensors(): rows have different lengths (${this.inputIds.map((r) => r.length).join(', ')}); encode with padding: 'longest' or 'max_length'`);
    }
    const flat = (rows: number[][]) => tensor(Int32Array.from(rows.flat()), [B, T], { dtype: 'int32' });
    return { inputIds: flat(this.inputIds), attentionMask: flat(this.attentionMask), tokenTypeIds: flat(this.tokenTypeIds) };
  }
}

// The parts of the JS tokenizer we use that its typings mark private.
interface HFInternals {
  encode_text(text: string | null): string[] | null;
  post_processor: ((a: string[], b: string[] | null, addSpecial: boolean) =>
    { tokens: string[]; tokens_pair?: string[] | null; token_type_ids?: number[] }) | null;
  added_tokens_map: Map<string, { id: number }>;
  model: { tokens_to_ids: Map<string, number>; unk_token_id?: number };
}

function readJson(file: string): Record<string, unknown> {
  // tokenizer.json of large vocabularies is tens of MB; a link to /dev/zero must not be read.
  return readJsonObject(file, { maxBytes: MAX_TOKENIZER_BYTES });
}

/** Special tokens are either a string or an AddedToken-like {content: ...}. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

/** transformers uses int(1e30) for "no limit". */
const NO_LIMIT = 1e18;

export class Tokenizer {
  readonly config: Record<string, unknown>;
  readonly chatTemplate: string | null;
  readonly modelMaxLength: number;
  paddingSide: Side;
  truncationSide: Side;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly unkToken: string | null;
  readonly padToken: string | null;
  /** Set when pad was missing and eos is used instead (as GPT-2 users do in transformers). */
  readonly padIsEos: boolean;
  private readonly inner: HFTokenizer;
  /** tokenizer.json as read, for savePretrained. */
  private readonly json: Record<string, unknown>;

  constructor(tokenizerJson: Record<string, unknown>, tokenizerConfig: Record<string, unknown> = {}, chatTemplate?: string | null) {
    this.config = tokenizerConfig;
    this.json = tokenizerJson;
    try {
      this.inner = new HFTokenizer(tokenizerJson, tokenizerConfig);
    } catch (e) {
      throw new Error(`cannot build tokenizer from tokenizer.json: ${(e as Error).message}`);
    }
    const cfg = tokenizerConfig;
    this.bosToken = tokenText(cfg.bos_token) ?? null;
    this.eosToken = tokenText(cfg.eos_token) ?? null;
    this.unkToken = tokenText(cfg.unk_token) ?? null;
    let pad = tokenText(cfg.pad_token) ?? null;
    this.padIsEos = pad === null && this.eosToken !== null;
    if (this.padIsEos) pad = this.eosToken;
    this.padToken = pad;
    const mml = typeof cfg.model_max_length === 'number' ? cfg.model_max_length : Infinity;
    this.modelMaxLength = mml >= NO_LIMIT ? Infinity : mml;
    this.paddingSide = cfg.padding_side === 'left' ? 'left' : 'right';
    this.truncationSide = cfg.truncation_side === 'left' ? 'left' : 'right';
    this.chatTemplate = chatTemplate ?? pickTemplate(cfg.chat_template);
  }

  /**
   * Loads tokenizer.json from a folder, with tokenizer_config.json, special_tokens_map.json
   * and chat_template.jinja when present (as AutoTokenizer.from_pretrained does).
   */
  static fromFile(dir: string): Tokenizer {
    const tj = path.join(dir, 'tokenizer.json');
    if (!fs.existsSync(tj)) {
      const has = (f: string) => fs.existsSync(path.join(dir, f));
      const slow = ['vocab.txt', 'vocab.json', 'tokenizer.model', 'merges.txt'].filter(has);
      throw new Error(`no tokenizer.json in ${dir}` + (slow.length
        ? ` (found ${slow.join(', ')}: only fast tokenizers are supported; in Python run AutoTokenizer.from_pretrained(...).save_pretrained(dir) to write tokenizer.json)`
        : ''));
    }
    const cfgPath = path.join(dir, 'tokenizer_config.json');
    const cfg = fs.existsSync(cfgPath) ? readJson(cfgPath) : {};
    const stm = path.join(dir, 'special_tokens_map.json');
    if (fs.existsSync(stm)) {
      for (const [k, v] of Object.entries(readJson(stm))) if (cfg[k] === undefined) cfg[k] = v;
    }
    const jinja = path.join(dir, 'chat_template.jinja');
    const tpl = fs.existsSync(jinja) ? readTextFile(jinja, { maxBytes: MAX_CONFIG_BYTES }) : null;
    return new Tokenizer(readJson(tj), cfg, tpl);
  }

  /**
   * AutoTokenizer.from_pretrained: a model folder or a Hub id (downloaded into the cache when
   * missing, unless offline), as a Promise (transformers.js).
   */
  static async fromPretrained(dirOrId: string, opts: ResolveOptions = {}): Promise<Tokenizer> {
    const dir = await resolveModelPath(dirOrId, opts);
    await yieldToEventLoop();
    return Tokenizer.fromFile(dir);
  }

  /** fromPretrained without the Promise: a local folder, or a Hub id already in the cache. */
  static fromPretrainedSync(dirOrId: string, opts: ResolveOptions = {}): Tokenizer {
    return Tokenizer.fromFile(resolveLocalModelPath(dirOrId, opts));
  }

  /**
   * Writes tokenizer.json, tokenizer_config.json (special tokens included, as transformers 5
   * keeps them there) and chat_template.jinja when there is a template: Tokenizer.fromFile and
   * AutoTokenizer.from_pretrained read the folder back.
   */
  savePretrained(dir: string): string[] {
    fs.mkdirSync(dir, { recursive: true });
    const files: [string, string][] = [
      ['tokenizer.json', JSON.stringify(this.json)],
      ['tokenizer_config.json', JSON.stringify({ ...this.config, chat_template: undefined }, null, 2) + '\n'],
    ];
    if (this.chatTemplate) files.push(['chat_template.jinja', this.chatTemplate]);
    for (const [f, text] of files) {
      const tmp = path.join(dir, `.${f}.tmp-${process.pid}`);
      fs.writeFileSync(tmp, text);
      fs.renameSync(tmp, path.join(dir, f));
    }
    return files.map(([f]) => f);
  }

  /** Uploads the saved tokenizer files to a Hub model repo (created when missing). */
  async pushToHub(repoId: string, opts: PushToHubOptions = {}): Promise<PushResult> {
    return pushFolder(repoId, (d) => { this.savePretrained(d); }, { what: 'tokenizer', ...opts });
  }

  /** Number of tokens including added ones (len(tokenizer) in transformers). */
  get vocabSize(): number { return this.inner.get_vocab(true).size; }

  tokenToId(token: string): number | undefined { return this.inner.token_to_id(token); }
  idToToken(id: number): string | undefined { return this.inner.id_to_token(id); }

  get bosTokenId(): number | null { return this.idOf(this.bosToken); }
  get eosTokenId(): number | null { return this.idOf(this.eosToken); }
  get unkTokenId(): number | null { return this.idOf(this.unkToken); }
  get padTokenId(): number | null { return this.idOf(this.padToken); }

  private idOf(tok: string | null): number | null {
    if (tok === null) return null;
    return this.inner.token_to_id(tok) ?? null;
  }

  private get internals(): HFInternals { return this.inner as unknown as HFInternals; }

  /** Token strings of one text, without special tokens. */
  private pieces(text: string): string[] {
    if (typeof text !== 'string') throw new TypeError(`tokenizer: expected a string, got ${typeof text}`);
    return this.internals.encode_text(text) ?? [];
  }

  private toIds(tokens: string[]): number[] {
    const it = this.internals;
    return tokens.map((t) => {
      const id = it.added_tokens_map.get(t)?.id ?? it.model.tokens_to_ids.get(t) ?? it.model.unk_token_id;
      if (id === undefined) throw new Error(`tokenizer: token ${JSON.stringify(t)} is not in the vocabulary and there is no unk token`);
      return id;
    });
  }

  /** Adds special tokens per the post-processor; returns tokens and token type ids. */
  private finish(a: string[], b: string[] | null, addSpecial: boolean): { tokens: string[]; types: number[] } {
    const pp = this.internals.post_processor;
    if (!pp) {
      return { tokens: b ? [...a, ...b] : a, types: b ? [...a.map(() => 0), ...b.map(() => 1)] : a.map(() => 0) };
    }
    const r = pp(a, b, addSpecial);
    // Some processors (ByteLevel) hand the pair back unmerged; the Rust library concatenates it.
    const tokens = r.tokens_pair ? [...r.tokens, ...r.tokens_pair] : r.tokens;
    const types = r.token_type_ids && r.token_type_ids.length === tokens.length ? r.token_type_ids
      : r.tokens_pair ? [...r.tokens.map(() => 0), ...r.tokens_pair.map(() => 1)] : tokens.map(() => 0);
    return { tokens, types };
  }

  /** How many special tokens encoding adds (transformers' num_special_tokens_to_add). */
  numSpecialTokensToAdd(pair = false): number {
    return this.finish([], pair ? [] : null, true).tokens.length;
  }

  private encodeOne(text: string, pair: string | null, addSpecial: boolean, maxLen: number | null): { ids: number[]; types: number[] } {
    let a = this.pieces(text);
    let b = pair === null ? null : this.pieces(pair);
    if (maxLen !== null) {
      const budget = Math.max(0, maxLen - (addSpecial ? this.numSpecialTokensToAdd(b !== null) : 0));
      if (b === null) a = this.cut(a, budget);
      else [a, b] = this.cutPair(a, b, budget);
    }
    const { tokens, types } = this.finish(a, b, addSpecial);
    return { ids: this.toIds(tokens), types };
  }

  private cut(x: string[], n: number): string[] {
    if (x.length <= n) return x;
    return this.truncationSide === 'left' ? x.slice(x.length - n) : x.slice(0, n);
  }

  /** 'longest_first' as the Rust library does it: the shorter keeps up to half, the rest goes to the longer. */
  private cutPair(a: string[], b: string[], budget: number): [string[], string[]] {
    if (a.length + b.length <= budget) return [a, b];
    const half = Math.floor(budget / 2);
    let na: number, nb: number;
    if (a.length > b.length) { nb = Math.min(b.length, half); na = Math.min(a.length, budget - nb); }
    else { na = Math.min(a.length, half); nb = Math.min(b.length, budget - na); }
    return [this.cut(a, na), this.cut(b, nb)];
  }

  /** Token ids of one text (special tokens added by default, as transformers does). */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    return this.encodeOne(text, opts.textPair ?? null, opts.addSpecialTokens ?? true, null).ids;
  }

  /**
   * Ids of a text already split into words, with the word each id came from (null for special
   * tokens): transformers' tokenizer(words, is_split_into_words=True) and .word_ids(), as the
   * token-classification example uses them. Words after the first get a leading space, so the
   * ids are those of the words joined by single spaces (for byte-level BPE, what GPT-2 style
   * text looks like; WordPiece ignores the space). maxLength truncates words' pieces, keeping
   * the special tokens.
   */
  encodeWords(words: string[], opts: { addSpecialTokens?: boolean; maxLength?: number } = {}): { ids: number[]; wordIds: (number | null)[] } {
    if (!Array.isArray(words)) throw new TypeError('encodeWords: expected an array of words');
    let pieces: string[] = [], owner: number[] = [];
    words.forEach((w, i) => {
      if (typeof w !== 'string') throw new TypeError(`encodeWords: word ${i} is not a string`);
      const p = this.pieces(i === 0 ? w : ' ' + w);
      pieces.push(...p);
      for (let k = 0; k < p.length; k++) owner.push(i);
    });
    const addSpecial = opts.addSpecialTokens ?? true;
    if (opts.maxLength !== undefined) {
      const budget = Math.max(0, opts.maxLength - (addSpecial ? this.numSpecialTokensToAdd(false) : 0));
      pieces = pieces.slice(0, budget); owner = owner.slice(0, budget);
    }
    // Where the content sits among the special tokens: find it through a sentinel piece.
    const SENTINEL = '\u0000peft-ts-content\u0000';
    const layout = this.finish([SENTINEL], null, addSpecial).tokens;
    const at = layout.indexOf(SENTINEL);
    const tokens = [...layout.slice(0, at), ...pieces, ...layout.slice(at + 1)];
    const wordIds: (number | null)[] = [...layout.slice(0, at).map(() => null), ...owner, ...layout.slice(at + 1).map(() => null)];
    return { ids: this.toIds(tokens), wordIds };
  }

  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    const arr = Array.from(ids);
    if (arr.length === 0) return '';
    for (const id of arr) {
      if (!Number.isInteger(id) || id < 0) throw new Error(`decode: invalid token id ${id}`);
    }
    return this.inner.decode(arr, { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  batchDecode(rows: ArrayLike<number>[], opts: DecodeOptions = {}): string[] { return rows.map((r) => this.decode(r, opts)); }

  /** Encodes several texts (optionally pairs), truncating and padding like tokenizer(texts, ...). */
  encodeBatch(texts: string[], opts: BatchEncodeOptions = {}): BatchEncoding {
    if (!Array.isArray(texts)) throw new TypeError('encodeBatch: texts must be an array of strings');
    if (opts.textPair && opts.textPair.length !== texts.length) {
      throw new Error(`encodeBatch: ${texts.length} texts but ${opts.textPair.length} textPair entries`);
    }
    const padding: PaddingStrategy = opts.padding === true ? 'longest' : (opts.padding ?? false);
    const maxLength = opts.maxLength ?? (Number.isFinite(this.modelMaxLength) ? this.modelMaxLength : undefined);
    if ((opts.truncation || padding === 'max_length') && maxLength === undefined) {
      throw new Error("encodeBatch: truncation / padding='max_length' need maxLength (this tokenizer has no model_max_length)");
    }
    const addSpecial = opts.addSpecialTokens ?? true;
    const enc = texts.map((t, i) => this.encodeOne(t, opts.textPair ? opts.textPair[i] : null, addSpecial, opts.truncation ? maxLength! : null));
    let target = 0;
    if (padding === 'longest') target = Math.max(0, ...enc.map((e) => e.ids.length));
    else if (padding === 'max_length') target = maxLength!;
    if (padding && opts.padToMultipleOf) target = Math.ceil(target / opts.padToMultipleOf) * opts.padToMultipleOf;
    const side = opts.paddingSide ?? this.paddingSide;
    const inputIds: number[][] = [], attentionMask: number[][] = [], tokenTypeIds: number[][] = [];
    let padId = 0;
    if (padding && enc.some((e) => e.ids.length < target)) {
      const p = this.padTokenId;
      if (p === null) throw new Error('encodeBatch: padding needs a pad token, and this tokenizer has neither pad_token nor eos_token');
      padId = p;
    }
    for (const e of enc) {
      const n = Math.max(0, target - e.ids.length);
      const pad = (v: number) => new Array<number>(n).fill(v);
      const mask = e.ids.map(() => 1);
      if (side === 'left') {
        inputIds.push([...pad(padId), ...e.ids]); attentionMask.push([...pad(0), ...mask]); tokenTypeIds.push([...pad(0), ...e.types]);
      } else {
        inputIds.push([...e.ids, ...pad(padId)]); attentionMask.push([...mask, ...pad(0)]); tokenTypeIds.push([...e.types, ...pad(0)]);
      }
    }
    return new BatchEncoding(inputIds, attentionMask, tokenTypeIds);
  }

  /** Renders the chat template (transformers' apply_chat_template with tokenize=False). */
  applyChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean; template?: string; extra?: Record<string, unknown> } = {}): string {
    const tpl = opts.template ?? this.chatTemplate;
    if (!tpl) throw new Error('applyChatTemplate: this tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja); pass opts.template');
    return new Template(tpl).render({
      messages, add_generation_prompt: opts.addGenerationPrompt ?? false,
      bos_token: this.bosToken ?? '', eos_token: this.eosToken ?? '', pad_token: this.padToken ?? '', unk_token: this.unkToken ?? '',
      ...opts.extra,
    });
  }
}

function pickTemplate(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) { // [{name, template}], "default" first as transformers picks it
    const named = v as { name?: string; template?: string }[];
    return (named.find((x) => x.name === 'default') ?? named[0])?.template ?? null;
  }
  return null;
}
