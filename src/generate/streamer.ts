// Streaming output during generate(), like transformers' TextStreamer: token ids arrive one
// step at a time and decoded text is written as soon as it forms whole words.

/** Receives the prompt once (put), then each step's new token ids (one per row), then end(). */
export interface Streamer {
  put(tokenIds: number[]): void;
  end(): void;
}

/** What TextStreamer needs from a tokenizer. */
export interface Decoder {
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
}

export interface TextStreamerOptions {
  /** Do not echo the prompt (transformers' skip_prompt). Default false. */
  skipPrompt?: boolean;
  skipSpecialTokens?: boolean;
  /** Where text goes; default process.stdout.write. */
  write?: (text: string) => void;
}

/**
 * Decodes the growing token list and writes only text that can no longer change: up to
 * the last space, or everything at a newline. Batch size 1 only, as in transformers.
 */
export class TextStreamer implements Streamer {
  private cache: number[] = [];
  private printed = 0;
  private sawPrompt = false;
  private readonly write: (text: string) => void;

  constructor(private readonly tokenizer: Decoder, private readonly opts: TextStreamerOptions = {}) {
    this.write = opts.write ?? ((s) => { process.stdout.write(s); });
  }

  put(tokenIds: number[]): void {
    if (!this.sawPrompt) {
      this.sawPrompt = true;
      if (this.opts.skipPrompt) return;
    } else if (tokenIds.length !== 1) {
      throw new Error(`TextStreamer only supports batch size 1, got ${tokenIds.length} tokens in one step`);
    }
    this.cache.push(...tokenIds);
    const text = this.tokenizer.decode(this.cache, { skipSpecialTokens: this.opts.skipSpecialTokens });
    let out: string;
    if (text.endsWith('\n')) {
      out = text.slice(this.printed);
      this.cache = [];
      this.printed = 0;
    } else {
      // The last word may still grow (or be half a multi-byte character): hold it back.
      const safe = text.slice(0, text.lastIndexOf(' ') + 1);
      out = safe.length > this.printed ? safe.slice(this.printed) : '';
      this.printed += out.length;
    }
    if (out) this.write(out);
  }

  end(): void {
    if (this.cache.length) {
      const text = this.tokenizer.decode(this.cache, { skipSpecialTokens: this.opts.skipSpecialTokens });
      const rest = text.slice(this.printed);
      if (rest) this.write(rest);
    }
    this.cache = [];
    this.printed = 0;
    this.write('\n');
  }
}
