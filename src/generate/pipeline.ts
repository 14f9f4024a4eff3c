// pipeline(): transformers.js's task pipelines over this library's models, with its call shapes:
//   const clf = await pipeline('text-classification', dir);   await clf('text')  -> [{ label, score }]
//   const ner = await pipeline('token-classification', dir);  await ner('text')  -> [{ entity, score, index, word, start, end }]
//   const gen = await pipeline('text-generation', dir);       await gen('text')  -> [{ generated_text }]
// The model is a folder (a model, or an adapter whose base_model_name_or_path is a local
// folder), or a loaded model / PeftModel with its tokenizer.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { noGrad } from '../tensor/tensor.js';
import { tidy } from '../tensor/memory.js';
import { Tokenizer } from '../io/tokenizer.js';
import { labelNames } from '../io/config.js';
import { resolveModelPath } from '../io/hub.js';
import { AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification, type FromPretrainedOptions } from '../models/auto.js';
import type { ModelConfig, ModelInputs, ModelOutput, TaskType } from '../models/types.js';
import { PeftModel } from '../peft/model.js';
import type { Module } from '../nn/module.js';
import type { ChatMessage } from '../data/templates.js';
import { generateText, GenerateTextOptions } from './text.js';

export type PipelineTask = 'text-classification' | 'sentiment-analysis' | 'token-classification' | 'ner' | 'text-generation';

const TASK_TYPE: Record<PipelineTask, TaskType> = {
  'text-classification': 'SEQ_CLS', 'sentiment-analysis': 'SEQ_CLS', 'token-classification': 'TOKEN_CLS', ner: 'TOKEN_CLS', 'text-generation': 'CAUSAL_LM',
};

interface AnyModel extends Module { forward(i: ModelInputs): ModelOutput; config?: ModelConfig; task?: TaskType }

export interface PipelineOptions extends FromPretrainedOptions {
  /** The tokenizer; loaded from the model (or adapter) folder when not given. */
  tokenizer?: Tokenizer;
  /** An adapter folder to put on the model (PeftModel.fromPretrained). */
  adapter?: string;
}

export interface TextClassificationOptions { top_k?: number | null; topK?: number | null }
export interface ClassificationResult { label: string; score: number }
export interface TokenClassificationOptions { ignore_labels?: string[]; ignoreLabels?: string[] }
export interface TokenEntity { entity: string; score: number; index: number; word: string; start: number | null; end: number | null }

/** transformers.js generate kwargs (snake_case) or this library's camelCase GenerateOptions. */
export interface TextGenerationOptions extends GenerateTextOptions {
  max_new_tokens?: number; max_length?: number; do_sample?: boolean; top_k?: number; top_p?: number;
  num_beams?: number; num_return_sequences?: number; repetition_penalty?: number; no_repeat_ngram_size?: number;
  return_full_text?: boolean;
}
export type Chat = ChatMessage[];
export interface GeneratedText { generated_text: string | Chat }

interface PipelineBase { task: PipelineTask; model: AnyModel; tokenizer: Tokenizer; dispose(): void }
export type TextClassificationPipeline = PipelineBase & ((texts: string | string[], opts?: TextClassificationOptions) => Promise<ClassificationResult[] | ClassificationResult[][]>);
export type TokenClassificationPipeline = PipelineBase & ((texts: string | string[], opts?: TokenClassificationOptions) => Promise<TokenEntity[] | TokenEntity[][]>);
export type TextGenerationPipeline = PipelineBase & ((texts: string | string[] | Chat | Chat[], opts?: TextGenerationOptions) => Promise<GeneratedText[] | GeneratedText[][]>);

const hasAdapter = (dir: string) => fs.existsSync(path.join(dir, 'adapter_config.json'));

function autoFor(t: TaskType) {
  return t === 'SEQ_CLS' ? AutoModelForSequenceClassification : t === 'TOKEN_CLS' ? AutoModelForTokenClassification : AutoModelForCausalLM;
}

/** The id2label saved beside an adapter by the CLI (label_mapping.json), if any. */
function adapterLabels(dir: string): Record<string, string> | null {
  const f = path.join(dir, 'label_mapping.json');
  if (!fs.existsSync(f)) return null;
  const m = JSON.parse(fs.readFileSync(f, 'utf8')) as { id2label?: Record<string, string> };
  return m.id2label && Object.keys(m.id2label).length ? m.id2label : null;
}

/** A local folder as is; a Hub id from the cache or downloaded (a model repo, else an adapter repo). */
async function resolveFolder(where: string, o: PipelineOptions): Promise<string> {
  if (fs.existsSync(where)) return where;
  try { return await resolveModelPath(where, o); } catch (e) {
    try { return await resolveModelPath(where, { ...o, requiredFile: 'adapter_config.json' }); } catch { throw e; }
  }
}

async function loadFromFolder(taskType: TaskType, where: string, o: PipelineOptions): Promise<{ model: AnyModel; tokenizerDir: string[] }> {
  const dir = await resolveFolder(where, o);
  let baseDir = dir, adapterDir = o.adapter ?? null;
  if (hasAdapter(dir)) {
    if (adapterDir) throw new Error(`pipeline: ${dir} is an adapter already; give its base model as the model and the adapter as opts.adapter, or the adapter alone`);
    adapterDir = dir;
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8')) as { base_model_name_or_path?: string | null; task_type?: string | null };
    const base = cfg.base_model_name_or_path;
    if (!base) throw new Error(`pipeline: the adapter in ${dir} does not name its base model (base_model_name_or_path); load the base as the model and pass { adapter: '${dir}' }`);
    baseDir = await resolveFolder(base, o);
  }
  if (adapterDir) {
    if (!hasAdapter(adapterDir)) throw new Error(`pipeline: no adapter_config.json in ${adapterDir}`);
    const tt = (JSON.parse(fs.readFileSync(path.join(adapterDir, 'adapter_config.json'), 'utf8')) as { task_type?: string | null }).task_type;
    if (tt && tt !== taskType) throw new Error(`pipeline: the adapter in ${adapterDir} is for ${tt}, not ${taskType}`);
  }
  const labels = adapterDir ? adapterLabels(adapterDir) : null;
  const opts: FromPretrainedOptions = { logger: () => {}, ...o };
  if (labels && taskType !== 'CAUSAL_LM') {
    opts.numLabels = Object.keys(labels).length;
    opts.configOverrides = { ...o.configOverrides, id2label: labels, label2id: Object.fromEntries(Object.entries(labels).map(([k, v]) => [v, Number(k)])) };
  }
  let model = autoFor(taskType).fromPretrainedSync(baseDir, opts) as unknown as AnyModel;
  if (adapterDir) model = PeftModel.fromPretrainedSync(model, adapterDir) as unknown as AnyModel;
  return { model, tokenizerDir: adapterDir ? [adapterDir, baseDir] : [baseDir] };
}

function baseOf(model: AnyModel): AnyModel {
  return model instanceof PeftModel ? (model.getBaseModel() as unknown as AnyModel) : model;
}

function id2labelOf(model: AnyModel): (i: number) => string {
  const cfg = baseOf(model).config;
  const names = cfg ? labelNames(cfg) : [];
  return (i) => names[i] ?? `LABEL_${i}`;
}

function softmax(x: ArrayLike<number>): number[] {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) m = Math.max(m, x[i]);
  const e = Array.from(x, (v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

function forwardBatch(model: AnyModel, tok: Tokenizer, texts: string[]): { logits: Float32Array; shape: number[]; ids: number[][] } {
  const enc = tok.encodeBatch(texts, { padding: true, truncation: Number.isFinite(tok.modelMaxLength) });
  const t = enc.toTensors();
  return noGrad(() => tidy(() => {
    const out = model.forward({ inputIds: t.inputIds, attentionMask: t.attentionMask, tokenTypeIds: t.tokenTypeIds });
    return { logits: out.logits.data.slice(), shape: [...out.logits.shape], ids: enc.inputIds };
  }));
}

function checkTexts(texts: unknown, task: string): string[] {
  const list = Array.isArray(texts) ? texts : [texts];
  if (!list.length || list.some((t) => typeof t !== 'string')) throw new TypeError(`${task}: expected a string or an array of strings`);
  return list as string[];
}

/**
 * transformers.js's pipeline(task, model, options): a callable for 'text-classification'
 * ('sentiment-analysis'), 'token-classification' ('ner') or 'text-generation'. `model` is a
 * model folder or Hub id (cached, else downloaded), an adapter folder or id whose base_model_name_or_path
 * resolves the same way, or a
 * loaded model / PeftModel (then give options.tokenizer). dispose() frees a loaded model.
 */
export async function pipeline(task: 'text-classification' | 'sentiment-analysis', model: string | Module, opts?: PipelineOptions): Promise<TextClassificationPipeline>;
export async function pipeline(task: 'token-classification' | 'ner', model: string | Module, opts?: PipelineOptions): Promise<TokenClassificationPipeline>;
export async function pipeline(task: 'text-generation', model: string | Module, opts?: PipelineOptions): Promise<TextGenerationPipeline>;
export async function pipeline(task: PipelineTask, model: string | Module, opts: PipelineOptions = {}): Promise<TextClassificationPipeline | TokenClassificationPipeline | TextGenerationPipeline> {
  const taskType = TASK_TYPE[task];
  if (!taskType) throw new Error(`pipeline: unsupported task '${task}' (text-classification, token-classification, text-generation)`);
  let m: AnyModel, tokenizer = opts.tokenizer, owned = false;
  if (typeof model === 'string') {
    const { model: loaded, tokenizerDir } = await loadFromFolder(taskType, model, opts);
    m = loaded; owned = true;
    tokenizer ??= Tokenizer.fromFile(tokenizerDir.find((d) => fs.existsSync(path.join(d, 'tokenizer.json'))) ?? tokenizerDir[tokenizerDir.length - 1]);
  } else {
    if (!model || typeof (model as AnyModel).forward !== 'function') throw new TypeError('pipeline: model must be a folder or a loaded model');
    m = model as AnyModel;
    if (opts.adapter) m = PeftModel.fromPretrainedSync(m, opts.adapter) as unknown as AnyModel;
    if (!tokenizer) throw new Error('pipeline: a loaded model needs options.tokenizer');
  }
  const actual = (m as { task?: TaskType }).task ?? baseOf(m).task;
  if (actual && actual !== taskType) throw new Error(`pipeline('${task}') needs a ${taskType} model, got a ${actual} model`);
  m.eval();
  const tok = tokenizer!;
  // dispose(): a model the pipeline loaded is freed (Module.dispose); one handed in stays the caller's.
  const base = {
    task, model: m, tokenizer: tok,
    dispose: () => { if (owned) m.dispose(); },
  };

  if (taskType === 'SEQ_CLS') {
    const labelOf = id2labelOf(m);
    const multi = baseOf(m).config?.raw.problem_type === 'multi_label_classification';
    const fn = async (texts: string | string[], o: TextClassificationOptions = {}) => {
      const list = checkTexts(texts, task);
      const k = o.top_k !== undefined ? o.top_k : o.topK !== undefined ? o.topK : 1;
      const { logits, shape } = forwardBatch(m, tok, list);
      const C = shape[1];
      const out: ClassificationResult[][] = [];
      for (let b = 0; b < list.length; b++) {
        const row = logits.subarray(b * C, (b + 1) * C);
        const p = multi ? Array.from(row, (v) => 1 / (1 + Math.exp(-v))) : softmax(row);
        const top = p.map((score, i) => ({ label: labelOf(i), score, i })).sort((x, y) => y.score - x.score || x.i - y.i)
          .slice(0, k === null ? C : Math.max(1, k)).map(({ label, score }) => ({ label, score }));
        out.push(top);
      }
      // transformers.js: top_k 1 flattens; a single text with top_k > 1 gives its list.
      if (k === 1) return out.flat();
      return Array.isArray(texts) ? out : out[0];
    };
    return Object.assign(fn, base) as TextClassificationPipeline;
  }

  if (taskType === 'TOKEN_CLS') {
    const labelOf = id2labelOf(m);
    const fn = async (texts: string | string[], o: TokenClassificationOptions = {}) => {
      const list = checkTexts(texts, task);
      const ignore = o.ignore_labels ?? o.ignoreLabels ?? ['O'];
      const { logits, shape, ids } = forwardBatch(m, tok, list);
      const [, T, C] = shape;
      const out: TokenEntity[][] = [];
      for (let b = 0; b < list.length; b++) {
        const ents: TokenEntity[] = [];
        for (let j = 0; j < T; j++) {
          const row = logits.subarray((b * T + j) * C, (b * T + j + 1) * C);
          let best = 0;
          for (let c = 1; c < C; c++) if (row[c] > row[best]) best = c;
          const entity = labelOf(best);
          if (ignore.includes(entity)) continue;
          const word = tok.decode([ids[b][j]], { skipSpecialTokens: true });
          if (word === '') continue; // a special token (or padding)
          ents.push({ entity, score: softmax(row)[best], index: j, word, start: null, end: null });
        }
        out.push(ents);
      }
      return Array.isArray(texts) ? out : out[0];
    };
    return Object.assign(fn, base) as TokenClassificationPipeline;
  }

  const isChat = (x: unknown): x is Chat => Array.isArray(x) && x.every((e) => e && typeof e === 'object' && 'role' in e && 'content' in e);
  const fn = async (texts: string | string[] | Chat | Chat[], o: TextGenerationOptions = {}) => {
    let prompts: string[], chats: Chat[] | null = null, batched = false;
    if (typeof texts === 'string') prompts = [texts];
    else if (Array.isArray(texts) && texts.length && texts.every((t) => typeof t === 'string')) { prompts = texts as string[]; batched = true; }
    else if (isChat(texts)) { chats = [texts]; prompts = chats.map((c) => tok.applyChatTemplate(c, { addGenerationPrompt: true })); }
    else if (Array.isArray(texts) && texts.length && texts.every(isChat)) { chats = texts as Chat[]; batched = true; prompts = chats.map((c) => tok.applyChatTemplate(c, { addGenerationPrompt: true })); }
    else throw new TypeError(`${task}: input must be a string, an array of strings, a chat (messages) or an array of chats`);
    const g: GenerateTextOptions = {
      ...o,
      maxNewTokens: o.maxNewTokens ?? o.max_new_tokens, maxLength: o.maxLength ?? o.max_length, doSample: o.doSample ?? o.do_sample,
      topK: o.topK ?? o.top_k, topP: o.topP ?? o.top_p, numBeams: o.numBeams ?? o.num_beams,
      numReturnSequences: o.numReturnSequences ?? o.num_return_sequences, repetitionPenalty: o.repetitionPenalty ?? o.repetition_penalty,
      noRepeatNgramSize: o.noRepeatNgramSize ?? o.no_repeat_ngram_size,
      // transformers.js: the prompt is part of generated_text unless return_full_text is false; never for chats.
      returnFullText: chats ? false : (o.returnFullText ?? o.return_full_text ?? true),
    };
    for (const k of Object.keys(g) as (keyof GenerateTextOptions)[]) if (g[k] === undefined) delete g[k];
    const texts2 = await generateText(m as never, tok, prompts, g);
    const per = texts2.length / prompts.length;
    const out: GeneratedText[][] = prompts.map((_, i) => texts2.slice(i * per, (i + 1) * per).map((t) => ({
      generated_text: chats ? [...chats[i], { role: 'assistant', content: t }] : t,
    })));
    return batched ? out : out[0];
  };
  return Object.assign(fn, base) as TextGenerationPipeline;
}
