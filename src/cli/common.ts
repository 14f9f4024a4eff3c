// Shared pieces of the CLI commands: locating the embedded assets, merging --config files with
// flags, loading models / tokenizers / adapters, and the label mapping saved beside an adapter.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '../io/tokenizer.js';
import { resolveLocalModelPath } from '../io/hub.js';
import {
  AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification,
} from '../models/auto.js';
import type { HFModel } from '../models/base.js';
import { LoraConfig } from '../peft/config.js';
import { PeftModel } from '../peft/model.js';
import { inspectModules } from '../peft/inject.js';
import type { Module } from '../nn/module.js';
import '../quant/load.js'; // registers the 4-bit loader behind fromPretrained({ quantizationConfig })
import { Rng } from '../tensor/random.js';
import { UsageError } from './args.js';
import { readJsonObject, specialFileKind } from '../io/files.js';
import { TASKS, type CliTask, type LoraOptions, type ModelOptions } from './options.js';

export type { CliTask } from './options.js';
export { TASKS } from './options.js';
export const LABEL_MAPPING_FILE = 'label_mapping.json';

/** The package root: walk up from this file to the folder with package.json, else the cwd. */
export function packageRoot(): string {
  let d = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(d, 'package.json')) && fs.existsSync(path.join(d, 'assets'))) return d;
    const up = path.dirname(d);
    if (up === d) return process.cwd();
    d = up;
  }
}

export const assetPath = (...p: string[]): string => path.join(packageRoot(), 'assets', ...p);
export const defaultModelDir = (): string => assetPath('default-model');

export function requireFile(file: string | undefined, what: string): string {
  if (!file) throw new UsageError(`${what} is required`);
  if (!fs.existsSync(file)) throw new UsageError(`${what}: no such file ${file}`);
  const special = specialFileKind(file);
  if (special) throw new UsageError(`${what} ${file}: is ${special}, not a regular file`);
  return file;
}

export const peftTask = (t: CliTask) => (t === 'seq-cls' ? 'SEQ_CLS' : t === 'token-cls' ? 'TOKEN_CLS' : 'CAUSAL_LM') as 'SEQ_CLS' | 'TOKEN_CLS' | 'CAUSAL_LM';

export function modelDir(o: { model?: string }): string {
  const m = o.model ?? defaultModelDir();
  try { return resolveLocalModelPath(m); } catch (e) { throw new Error(`--model ${m}: ${(e as Error).message}`); }
}

export function loadTokenizer(dir: string): Tokenizer {
  if (!fs.existsSync(path.join(dir, 'tokenizer.json'))) throw new Error(`no tokenizer.json in ${dir}`);
  return Tokenizer.fromFile(dir);
}

export interface LoadModelOptions {
  numLabels?: number; seed?: number; load4bit?: boolean; quiet?: boolean;
  /** 'bfloat16': frozen bf16 Linear / Embedding weights (fromPretrained's dtype). */
  dtype?: 'float32' | 'bfloat16';
}

/** A base model for the task; classification heads the checkpoint lacks are initialised from seed. */
export function loadBaseModel(task: CliTask, dir: string, o: LoadModelOptions = {}): HFModel {
  const opts = {
    rng: new Rng(o.seed ?? 42), numLabels: o.numLabels, dtype: o.dtype,
    // The head of a classifier built from an LM checkpoint is expected to be new: say it once, briefly.
    logger: o.quiet ? () => {} : (m: string) => process.stderr.write(m.split('\n')[0].slice(0, 300) + '\n'),
  };
  const auto = task === 'seq-cls' ? AutoModelForSequenceClassification : task === 'token-cls' ? AutoModelForTokenClassification : AutoModelForCausalLM;
  // In 4 bit the Linear weights are quantized as they are read: never whole in float32.
  return auto.fromPretrained(dir, o.load4bit ? { ...opts, quantizationConfig: { loadIn4bit: true } } : opts);
}

/** LoraConfig from the LoRA options (peft defaults where not given). */
export function loraConfigFrom(o: LoraOptions, task: CliTask, model?: Module): LoraConfig {
  // GPT-2's Conv1D stores weights transposed; say so up front instead of letting peft warn.
  const fanInFanOut = model ? inspectModules(model).some((m) => m.type === 'Conv1D') : false;
  const tm = o.targetModules;
  let targetModules: string[] | string | null = null;
  if (tm !== undefined) {
    // A single name with regex characters is a regex (peft's str form); "all-linear" passes as is.
    targetModules = Array.isArray(tm) ? tm : tm === 'all-linear' || /[\\^$*+?()[\]|]/.test(tm) ? tm : tm.split(',').map((t) => t.trim()).filter(Boolean);
    if (Array.isArray(targetModules) && !targetModules.length) throw new UsageError('--target-modules names no module');
  }
  return new LoraConfig({
    taskType: peftTask(task), r: o.r, loraAlpha: o.loraAlpha, loraDropout: o.loraDropout,
    targetModules, bias: o.bias, useDora: o.useDora, useRslora: o.useRslora, modulesToSave: o.modulesToSave ?? null, fanInFanOut,
  });
}

export interface LabelMappingFile {
  task: CliTask; id2label: Record<string, string>; label2id: Record<string, number>; textColumn?: string; maxLength?: number;
  /** token-cls: the word and tag columns training read. */
  tokensColumn?: string; tagsColumn?: string;
}

export function writeLabelMapping(dir: string, m: LabelMappingFile): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, LABEL_MAPPING_FILE), JSON.stringify(m, null, 2) + '\n');
}

/** label_mapping.json beside an adapter (written by train), checked before use. */
export function readLabelMapping(dir: string): LabelMappingFile | null {
  const f = path.join(dir, LABEL_MAPPING_FILE);
  if (!fs.existsSync(f)) return null;
  const m = readJsonObject(f);
  const isMap = (v: unknown) => !!v && typeof v === 'object' && !Array.isArray(v);
  if (!TASKS.includes(m.task as CliTask)) throw new Error(`${f}: "task" must be one of ${TASKS.join(', ')}, got ${JSON.stringify(m.task)}`);
  if (!isMap(m.id2label) || !Object.values(m.id2label as object).every((v) => typeof v === 'string')) throw new Error(`${f}: "id2label" must be an object of label names`);
  if (!isMap(m.label2id) || !Object.values(m.label2id as object).every((v) => Number.isInteger(v))) throw new Error(`${f}: "label2id" must be an object of integer ids`);
  for (const k of ['textColumn', 'tokensColumn', 'tagsColumn'] as const) if (m[k] !== undefined && typeof m[k] !== 'string') throw new Error(`${f}: "${k}" must be a string`);
  if (m.maxLength !== undefined && !(Number.isInteger(m.maxLength) && (m.maxLength as number) > 0)) throw new Error(`${f}: "maxLength" must be a positive integer`);
  return m as unknown as LabelMappingFile;
}

/** bf16 base weights; 4-bit and bf16 exclude each other. */
export function dtypeOf(o: ModelOptions): 'float32' | 'bfloat16' {
  if (o.loadIn4bit && o.dtype === 'bfloat16') throw new UsageError('--dtype bfloat16 and --load-in-4bit do not go together (the 4-bit layers are NF4)');
  return o.dtype;
}

/** What loadWithAdapter reads. */
export interface AdapterLoadOptions extends ModelOptions { adapter?: string; task?: CliTask; numLabels?: number; seed?: number }

/** Base model + adapter (frozen, eval mode), the task and labels taken from the adapter dir when known. */
export function loadWithAdapter(o: AdapterLoadOptions, taskHint?: CliTask): { model: HFModel | PeftModel; task: CliTask; mapping: LabelMappingFile | null; tokenizer: Tokenizer; baseDir: string } {
  const adapter = o.adapter;
  if (adapter !== undefined && !fs.existsSync(path.join(adapter, 'adapter_config.json'))) throw new Error(`--adapter ${adapter}: no adapter_config.json there`);
  const mapping = adapter ? readLabelMapping(adapter) : null;
  const task = o.task ?? mapping?.task ?? taskHint ?? 'causal-lm';
  const dir = modelDir(o);
  const numLabels = mapping ? Object.keys(mapping.id2label).length : o.numLabels;
  const base = loadBaseModel(task, dir, { numLabels, seed: o.seed ?? 42, load4bit: o.loadIn4bit, dtype: dtypeOf(o), quiet: adapter !== undefined });
  const model = adapter ? PeftModel.fromPretrained(base, adapter) : base;
  model.eval();
  return { model, task, mapping, tokenizer: loadTokenizer(dir), baseDir: dir };
}

export function fmtPct(x: number): string { return (100 * x).toFixed(1) + '%'; }
