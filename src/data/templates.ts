// Prompt templates: Stanford Alpaca's instruction prompts (verbatim) and Hugging Face chat
// templates rendered with @huggingface/jinja, as tokenizer.apply_chat_template(tokenize=False).
import { Template } from '@huggingface/jinja';
import type { TokenizerLike } from './tokenizer.js';

export const ALPACA_PROMPT_INPUT =
  'Below is an instruction that describes a task, paired with an input that provides further context. ' +
  'Write a response that appropriately completes the request.\n\n' +
  '### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:';
export const ALPACA_PROMPT_NO_INPUT =
  'Below is an instruction that describes a task. ' +
  'Write a response that appropriately completes the request.\n\n' +
  '### Instruction:\n{instruction}\n\n### Response:';

export interface AlpacaExample { instruction: string; input?: string | null; output?: string }

/** The Alpaca prompt for one example (the no-input form when input is empty). */
export function alpacaPrompt(ex: AlpacaExample): string {
  if (typeof ex.instruction !== 'string') throw new Error("alpaca template: 'instruction' must be text");
  const tpl = ex.input ? ALPACA_PROMPT_INPUT : ALPACA_PROMPT_NO_INPUT;
  // A function replacer, so "$&" etc. in the data stay literal.
  return tpl.replace('{instruction}', () => ex.instruction).replace('{input}', () => ex.input ?? '');
}

/** {prompt, response} for tokenizeCausalLM(promptColumn: 'prompt', responseColumn: 'response'). */
export function formatAlpaca(ex: AlpacaExample): { prompt: string; response: string } {
  return { prompt: alpacaPrompt(ex), response: ex.output ?? '' };
}

export interface ChatMessage { role: string; content: string; [k: string]: unknown }

export interface ChatTemplateOptions {
  chatTemplate?: string;
  tokenizer?: TokenizerLike;
  addGenerationPrompt?: boolean;
  bosToken?: string;
  eosToken?: string;
  /** Extra variables for the template (tools, documents, ...). */
  extra?: Record<string, unknown>;
}

const cache = new Map<string, Template>();

/** Renders a chat template over messages; template and special tokens from the tokenizer unless given. */
export function applyChatTemplate(messages: ChatMessage[], o: ChatTemplateOptions = {}): string {
  const src = o.chatTemplate ?? o.tokenizer?.chatTemplate;
  if (!src) throw new Error('applyChatTemplate: the tokenizer has no chat_template; pass chatTemplate');
  for (const [i, m] of messages.entries()) {
    if (!m || typeof m.role !== 'string' || typeof m.content !== 'string') throw new Error(`applyChatTemplate: message ${i} needs a string role and content`);
  }
  let t = cache.get(src);
  if (!t) { t = new Template(src); cache.set(src, t); }
  return t.render({
    messages,
    add_generation_prompt: o.addGenerationPrompt ?? false,
    bos_token: o.bosToken ?? o.tokenizer?.bosToken ?? '',
    eos_token: o.eosToken ?? o.tokenizer?.eosToken ?? '',
    ...o.extra,
  });
}

// Private-use sentinels that stand for {% generation %} / {% endgeneration %} in the output.
const GEN_OPEN = '\uE000', GEN_CLOSE = '\uE001';
const GEN_TAG = /\{%(-?)\s*(end)?generation\s*(-?)%\}/g;

/** Does the template mark assistant output with {% generation %} (TRL's has_generation_markers)? */
export function hasGenerationMarkers(template: string): boolean {
  return /\{%-?\s*generation\s*-?%\}/.test(template);
}

export interface RenderedChat {
  text: string;
  /** [start, end) character ranges of text rendered inside {% generation %} blocks. */
  generationSpans: [number, number][];
}

const genCache = new Map<string, Template>();

/**
 * Renders a chat template as transformers' apply_chat_template does with
 * return_assistant_tokens_mask: the text, and where each {% generation %} block's output lies
 * in it. @huggingface/jinja drops the generation tags, so they are rewritten first into a
 * block tag that prints a sentinel (a block tag, so lstrip_blocks / trim_blocks and the `-`
 * whitespace control act as they did on the original tag); the sentinels are then cut out.
 */
export function renderChatWithGenerationSpans(template: string, vars: Record<string, unknown>): RenderedChat {
  let t = genCache.get(template);
  if (!t) {
    const src = template.replace(GEN_TAG, (_m, l: string, end: string | undefined, r: string) =>
      `{%${l} if true %}{{ '${end ? GEN_CLOSE : GEN_OPEN}' }}{% endif ${r}%}`);
    t = new Template(src);
    genCache.set(template, t);
  }
  const raw = t.render(vars);
  let text = '';
  const spans: [number, number][] = [];
  let open = -1;
  for (const ch of raw) {
    if (ch === GEN_OPEN) {
      if (open >= 0) throw new Error('chat template: nested {% generation %} blocks');
      open = text.length;
    } else if (ch === GEN_CLOSE) {
      if (open < 0) throw new Error('chat template: {% endgeneration %} without {% generation %}');
      spans.push([open, text.length]); open = -1;
    } else text += ch;
  }
  if (open >= 0) throw new Error('chat template: {% generation %} is never closed');
  return { text, generationSpans: spans };
}

/** Refuses messages that hold the sentinels (they would corrupt the spans). */
export function checkNoSentinels(messages: unknown): void {
  const s = JSON.stringify(messages);
  if (s.includes(GEN_OPEN) || s.includes(GEN_CLOSE)) throw new Error('chat messages contain the private-use characters U+E000 / U+E001 used to track {% generation %} blocks');
}
