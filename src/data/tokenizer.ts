// What the data layer needs from a tokenizer. src/io's Tokenizer satisfies it; tests use
// small stand-ins. encode may return plain ids or an encoding object with ids.

export interface EncodeOptions {
  addSpecialTokens?: boolean;
  textPair?: string | null;
  truncation?: boolean;
  maxLength?: number;
}

export type EncodeResult = number[] | Int32Array | { ids: ArrayLike<number> } | { inputIds: ArrayLike<number> };

export interface TokenizerLike {
  encode(text: string, options?: EncodeOptions): EncodeResult;
  readonly padTokenId?: number | null;
  readonly eosTokenId?: number | null;
  readonly bosTokenId?: number | null;
  readonly padToken?: string | null;
  readonly eosToken?: string | null;
  readonly bosToken?: string | null;
  readonly modelMaxLength?: number;
  readonly chatTemplate?: string | null;
  readonly paddingSide?: 'left' | 'right';
  /** When present, used for truncation so special tokens survive it (transformers' way). */
  encodeBatch?(texts: string[], options: { truncation?: boolean; maxLength?: number; textPair?: string[]; addSpecialTokens?: boolean }): { inputIds: number[][] };
}

/**
 * Ids of text (and pair) cut to maxLength the way the tokenizer truncates when it can (content
 * cut, specials kept, longest-first for pairs); otherwise the ids are cut at the end.
 */
export function encodeTruncated(tok: TokenizerLike, text: string, o: { textPair?: string; maxLength: number; addSpecialTokens?: boolean }): number[] {
  const ids = encodeIds(tok, text, { textPair: o.textPair, addSpecialTokens: o.addSpecialTokens });
  if (ids.length <= o.maxLength) return ids;
  if (typeof tok.encodeBatch === 'function') {
    return tok.encodeBatch([text], { truncation: true, maxLength: o.maxLength, textPair: o.textPair !== undefined ? [o.textPair] : undefined, addSpecialTokens: o.addSpecialTokens }).inputIds[0];
  }
  return ids.slice(0, o.maxLength);
}

/** encode() as a plain number[] whatever shape the tokenizer returns. */
export function encodeIds(tok: TokenizerLike, text: string, options?: EncodeOptions): number[] {
  const r = tok.encode(text, options);
  if (Array.isArray(r)) return r;
  if (r instanceof Int32Array) return Array.from(r);
  if ('ids' in r) return Array.from(r.ids);
  if ('inputIds' in r) return Array.from(r.inputIds);
  throw new Error('tokenizer.encode returned neither ids nor an encoding');
}

/** The pad id to use: padTokenId, else eosTokenId (what people set for GPT-2 / Llama), else an error. */
export function padIdOf(tok: TokenizerLike | { padTokenId?: number | null; eosTokenId?: number | null }): number {
  if (tok.padTokenId !== undefined && tok.padTokenId !== null) return tok.padTokenId;
  if (tok.eosTokenId !== undefined && tok.eosTokenId !== null) return tok.eosTokenId;
  throw new Error('the tokenizer has no pad token and no eos token to pad with; set padTokenId');
}
