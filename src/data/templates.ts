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
