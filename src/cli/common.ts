// Shared pieces of the CLI commands: locating the embedded assets, merging --config files with
// flags, loading models / tokenizers / adapters, and the label mapping saved beside an adapter.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from '../io/tokenizer.js';
import { resolveModelPath } from '../io/hub.js';
import {
  AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, AutoModelForTokenClassification,
} from '../models/auto.js';
import type { HFModel } from '../models/base.js';
import { LoraConfig } from '../peft/config.js';
import { PeftModel } from '../peft/model.js';
import { ADAPTER_CONFIG_NAME, readAdapterConfig } from '../peft/save.js';
import { LABEL_MAPPING_FILE, readAdapterLabels } from '../peft/labels.js';
import { labelNames } from '../io/config.js';
import { inspectModules } from '../peft/inject.js';
import type { Module } from '../nn/module.js';
import '../quant/load.js'; // registers the 4-bit loader behind fromPretrained({ quantizationConfig })
import { Rng } from '../tensor/random.js';
import { assetPath, defaultModelPath, packageRoot } from '../io/assets.js';
import { UsageError } from './args.js';
import { readJsonObject, specialFileKind } from '../io/files.js';
import { TASKS, type CliTask, type LoraOptions, type ModelOptions } from './options.js';

export type { CliTask } from './options.js';
export { TASKS } from './options.js';
export { LABEL_MAPPING_FILE };

export { packageRoot, assetPath };
export const defaultModelDir = (): string => defaultModelPath;

export function requireFile(file: string | undefined, what: string): string {
  if (!file) throw new UsageError(`${what} is required`);
  if (!fs.existsSync(file)) throw new UsageError(`${what}: no such file ${file}`);
  const special = specialFileKind(file);
  if (special) throw new UsageError(`${what} ${file}: is ${special}, not a regular file`);
  return file;
}

export const peftTask = (t: CliTask) => (t === 'seq-cls' ? 'SEQ_CLS' : t === 'token-cls' ? 'TOKEN_CLS' : t === 'seq2seq-lm' ? 'SEQ_2_SEQ_LM' : 'CAUSAL_LM') as
  'SEQ_CLS' | 'TOKEN_CLS' | 'CAUSAL_LM' | 'SEQ_2_SEQ_LM';

/** Encoder-decoder model types: their folders mean --task seq2seq-lm when none is given. */
const SEQ2SEQ_MODEL_TYPES = ['t5', 'bart'];
export function isSeq2SeqModelDir(dir: string): boolean {
  const f = path.join(dir, 'config.json');
  try { return SEQ2SEQ_MODEL_TYPES.includes(String(readJsonObject(f).model_type)); } catch { return false; }
}

/** --model as a folder: a local path, else a Hub id from the cache or downloaded into it (--revision). */
export async function modelDir(o: { model?: string; revision?: string }, model = o.model ?? defaultModelDir(), revision = o.revision): Promise<string> {
  try { return await resolveModelPath(model, { revision }); } catch (e) { throw new Error(`--model ${model}: ${(e as Error).message}`); }
}

/** --adapter as a folder holding adapter_config.json: a local path or a Hub id (--adapter-revision). */
export async function adapterDir(o: { adapter?: string; adapterRevision?: string }): Promise<string | undefined> {
  const a = o.adapter;
  if (a === undefined) return undefined;
  try { return await resolveModelPath(a, { requiredFile: ADAPTER_CONFIG_NAME, revision: o.adapterRevision }); } catch (e) { throw new Error(`--adapter ${a}: ${(e as Error).message}`); }
}

export function loadTokenizer(dir: string): Tokenizer {
  if (!fs.existsSync(path.join(dir, 'tokenizer.json'))) throw new Error(`no tokenizer.json in ${dir}`);
  return Tokenizer.fromFile(dir);
}

export interface LoadModelOptions {
  numLabels?: number; seed?: number; load4bit?: boolean; quiet?: boolean;
  /** What --model said (recorded as the model's nameOrPath, hence the adapter's base_model_name_or_path); default the folder. */
  nameOrPath?: string;
  /** Label names for the head (from the adapter); its size replaces the checkpoint's head. */
  labels?: { id2label: Record<string, string>; label2id: Record<string, number> };
  /** 'bfloat16': frozen bf16 Linear / Embedding weights (fromPretrained's dtype). */
  dtype?: 'float32' | 'bfloat16';
}

/** A base model for the task; classification heads the checkpoint lacks are initialised from seed. */
export function loadBaseModel(task: CliTask, dir: string, o: LoadModelOptions = {}): HFModel {
  const opts = {
    rng: new Rng(o.seed ?? 42), numLabels: o.numLabels, dtype: o.dtype,
    ...(o.labels ? { configOverrides: { ...o.labels, num_labels: Object.keys(o.labels.id2label).length } } : {}),
    // A label count from the data or the adapter replaces a classifier head of another size.
    ignoreMismatchedSizes: o.labels !== undefined || o.numLabels !== undefined,
    // The head of a classifier built from an LM checkpoint is expected to be new: say it once, briefly.
    logger: o.quiet ? () => {} : (m: string) => process.stderr.write(m.split('\n')[0].slice(0, 300) + '\n'),
  };
  const auto = task === 'seq-cls' ? AutoModelForSequenceClassification : task === 'token-cls' ? AutoModelForTokenClassification
    : task === 'seq2seq-lm' ? AutoModelForSeq2SeqLM : AutoModelForCausalLM;
  // In 4 bit the Linear weights are quantized as they are read: never whole in float32.
  const model = auto.fromPretrainedSync(dir, o.load4bit ? { ...opts, quantizationConfig: { loadIn4bit: true } } : opts);
  model.nameOrPath = o.nameOrPath ?? dir;
  return model;
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
  /** seq2seq-lm: the source and target columns training read. */
  sourceColumn?: string; targetColumn?: string;
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
  if (m.task !== undefined && !TASKS.includes(m.task as CliTask)) throw new Error(`${f}: "task" must be one of ${TASKS.join(', ')}, got ${JSON.stringify(m.task)}`);
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
export interface AdapterLoadOptions extends ModelOptions { adapter?: string; adapterRevision?: string; task?: CliTask; numLabels?: number; seed?: number }

const CLI_TASK: Record<string, CliTask> = { SEQ_CLS: 'seq-cls', TOKEN_CLS: 'token-cls', CAUSAL_LM: 'causal-lm', SEQ_2_SEQ_LM: 'seq2seq-lm' };

/**
 * Base model + adapter (frozen, eval mode). The task and labels come from the adapter folder
 * (label_mapping.json written by train, else the config.json the library saves beside a
 * classifier, else the saved head's size, for Python peft's adapters; --num-labels when none).
 * Without --model the base is the adapter's base_model_name_or_path, as AutoPeftModel does.
 */
export async function loadWithAdapter(o: AdapterLoadOptions, taskHint?: CliTask): Promise<{ model: HFModel | PeftModel; task: CliTask; mapping: LabelMappingFile | null; tokenizer: Tokenizer; baseDir: string }> {
  const adapter = await adapterDir(o);
  const adapterConfig = adapter ? readAdapterConfig(adapter) : null;
  const fileMapping = adapter ? readLabelMapping(adapter) : null;
  const known = o.task ?? fileMapping?.task ?? (adapterConfig?.taskType ? CLI_TASK[adapterConfig.taskType] : undefined);
  const given = o.model;
  const fromAdapter = given === undefined ? adapterConfig?.baseModelNameOrPath || undefined : undefined;
  const nameOrPath = given ?? fromAdapter ?? defaultModelDir();
  const dir = await modelDir(o, nameOrPath, fromAdapter ? adapterConfig?.revision ?? undefined : o.revision);
  // A T5 / BART folder means seq2seq-lm when neither the flags nor the adapter say.
  const task = known ?? (isSeq2SeqModelDir(dir) ? 'seq2seq-lm' : undefined) ?? taskHint ?? 'causal-lm';
  const labelled = task === 'seq-cls' || task === 'token-cls';
  let mapping = fileMapping;
  if (adapter && labelled && !(fileMapping && Object.keys(fileMapping.id2label).length)) {
    const labels = readAdapterLabels(adapter);
    if (labels) mapping = { ...(fileMapping ?? {}), task, id2label: labels.id2label, label2id: labels.label2id };
  }
  const flagLabels = o.numLabels;
  const names = mapping && Object.keys(mapping.id2label).length ? mapping : null;
  if (names && flagLabels !== undefined && flagLabels !== Object.keys(names.id2label).length) {
    throw new UsageError(`--num-labels ${flagLabels} disagrees with the ${Object.keys(names.id2label).length} labels of the adapter in ${adapter}`);
  }
  const base = loadBaseModel(task, dir, {
    numLabels: names ? undefined : flagLabels, labels: names ? { id2label: names.id2label, label2id: names.label2id } : undefined, nameOrPath,
    seed: o.seed ?? 42, load4bit: o.loadIn4bit, dtype: dtypeOf(o), quiet: adapter !== undefined,
  });
  if (labelled && !names) {
    // No labels with the adapter: the model's own (its config.json, or LABEL_i for --num-labels).
    const id2label = Object.fromEntries(labelNames(base.config).map((n, i) => [String(i), n]));
    mapping = { ...(fileMapping ?? {}), task, id2label, label2id: Object.fromEntries(Object.entries(id2label).map(([k, v]) => [v, Number(k)])) };
  }
  const model = adapter ? await PeftModel.fromPretrained(base, adapter) : base;
  model.eval();
  return { model, task, mapping, tokenizer: loadTokenizer(dir), baseDir: dir };
}

export function fmtPct(x: number): string { return (100 * x).toFixed(1) + '%'; }
