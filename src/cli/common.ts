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
import { UsageError, bool, camel, list, num, parseArgs, str } from './args.js';

export type Flags = Record<string, unknown>;
export type CliTask = 'seq-cls' | 'token-cls' | 'causal-lm' | 'seq2seq-lm';
export const TASKS: CliTask[] = ['seq-cls', 'token-cls', 'causal-lm', 'seq2seq-lm'];
export { LABEL_MAPPING_FILE };

export { packageRoot, assetPath };
export const defaultModelDir = (): string => defaultModelPath;

/**
 * Flags of a command: parsed argv, over a --config JSON file (same names, camelCase or kebab).
 * Flags given on the command line win over the file.
 */
export function commandFlags(argv: string[], booleans: string[]): Flags {
  const { positionals, flags } = parseArgs(argv, new Set(booleans));
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}' (flags start with --)`);
  let merged: Flags = {};
  if (typeof flags.config === 'string') {
    const file = flags.config;
    if (!fs.existsSync(file)) throw new UsageError(`--config: no such file ${file}`);
    let raw: unknown;
    try { raw = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { throw new UsageError(`${file}: invalid JSON (${(e as Error).message})`); }
    if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new UsageError(`${file}: expected a JSON object of options`);
    for (const [k, v] of Object.entries(raw as Record<string, unknown>)) merged[camel(k.replace(/_/g, '-'))] = v;
  } else if (flags.config === true) throw new UsageError('--config needs a file');
  merged = { ...merged, ...flags };
  delete merged.config;
  return merged;
}

/** Throws a usage error for flags the command does not know (typos otherwise pass silently). */
export function checkKnown(flags: Flags, known: string[], cmd: string): void {
  const k = new Set([...known, 'help']);
  const bad = Object.keys(flags).filter((f) => !k.has(f));
  if (bad.length) throw new UsageError(`${cmd}: unknown option(s) ${bad.map((b) => '--' + b.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())).join(', ')} (see ${cmd} --help)`);
}

export function requireFile(file: string | undefined, what: string): string {
  if (!file) throw new UsageError(`${what} is required`);
  if (!fs.existsSync(file)) throw new UsageError(`${what}: no such file ${file}`);
  return file;
}

export function taskOf(v: string | undefined): CliTask | undefined {
  if (v === undefined) return undefined;
  if (!TASKS.includes(v as CliTask)) throw new UsageError(`--task must be one of ${TASKS.join(', ')}, got '${v}'`);
  return v as CliTask;
}

export const peftTask = (t: CliTask) => (t === 'seq-cls' ? 'SEQ_CLS' : t === 'token-cls' ? 'TOKEN_CLS' : t === 'seq2seq-lm' ? 'SEQ_2_SEQ_LM' : 'CAUSAL_LM') as
  'SEQ_CLS' | 'TOKEN_CLS' | 'CAUSAL_LM' | 'SEQ_2_SEQ_LM';

/** Encoder-decoder model types: their folders mean --task seq2seq-lm when none is given. */
const SEQ2SEQ_MODEL_TYPES = ['t5', 'bart'];
export function isSeq2SeqModelDir(dir: string): boolean {
  const f = path.join(dir, 'config.json');
  try { return SEQ2SEQ_MODEL_TYPES.includes(JSON.parse(fs.readFileSync(f, 'utf8')).model_type); } catch { return false; }
}

/** --model as a folder: a local path, else a Hub id from the cache or downloaded into it (--revision). */
export async function modelDir(flags: Flags, model = str(flags, 'model') ?? defaultModelDir(), revision = str(flags, 'revision')): Promise<string> {
  try { return await resolveModelPath(model, { revision }); } catch (e) { throw new Error(`--model ${model}: ${(e as Error).message}`); }
}

/** --adapter as a folder holding adapter_config.json: a local path or a Hub id (--adapter-revision). */
export async function adapterDir(flags: Flags): Promise<string | undefined> {
  const a = str(flags, 'adapter');
  if (a === undefined) return undefined;
  try { return await resolveModelPath(a, { requiredFile: ADAPTER_CONFIG_NAME, revision: str(flags, 'adapterRevision') }); } catch (e) { throw new Error(`--adapter ${a}: ${(e as Error).message}`); }
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

/** LoraConfig from the LoRA flags (peft defaults where not given). */
export function loraConfigFrom(flags: Flags, task: CliTask, model?: Module): LoraConfig {
  // GPT-2's Conv1D stores weights transposed; say so up front instead of letting peft warn.
  const fanInFanOut = model ? inspectModules(model).some((m) => m.type === 'Conv1D') : false;
  const tm = flags.targetModules;
  let targetModules: string[] | string | null = null;
  if (Array.isArray(tm)) targetModules = tm.map(String);
  else if (typeof tm === 'string') {
    // A single name with regex characters is a regex (peft's str form); "all-linear" passes as is.
    targetModules = tm === 'all-linear' || /[\\^$*+?()[\]|]/.test(tm) ? tm : list(flags, 'targetModules')!;
  }
  const bias = str(flags, 'bias', 'none');
  if (!['none', 'all', 'lora_only'].includes(bias!)) throw new UsageError(`--bias must be none, all or lora_only, got '${bias}'`);
  return new LoraConfig({
    taskType: peftTask(task),
    r: num(flags, 'r', 8), loraAlpha: num(flags, 'loraAlpha', 16), loraDropout: num(flags, 'loraDropout', 0.05),
    targetModules, bias: bias as 'none', useDora: bool(flags, 'useDora'), useRslora: bool(flags, 'useRslora'),
    modulesToSave: list(flags, 'modulesToSave') ?? null, fanInFanOut,
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

export function readLabelMapping(dir: string): LabelMappingFile | null {
  const f = path.join(dir, LABEL_MAPPING_FILE);
  if (!fs.existsSync(f)) return null;
  try { return JSON.parse(fs.readFileSync(f, 'utf8')) as LabelMappingFile; } catch (e) { throw new Error(`${f}: invalid JSON (${(e as Error).message})`); }
}

/** --dtype float32|bfloat16 (bf16 base weights); 4-bit and bf16 exclude each other. */
export function dtypeFlag(flags: Flags): 'float32' | 'bfloat16' {
  const dtype = str(flags, 'dtype', 'float32');
  if (dtype !== 'float32' && dtype !== 'bfloat16') throw new UsageError(`--dtype must be float32 or bfloat16, got '${dtype}'`);
  if (bool(flags, 'loadIn4bit') && dtype === 'bfloat16') throw new UsageError('--dtype bfloat16 and --load-in-4bit do not go together (the 4-bit layers are NF4)');
  return dtype;
}

const CLI_TASK: Record<string, CliTask> = { SEQ_CLS: 'seq-cls', TOKEN_CLS: 'token-cls', CAUSAL_LM: 'causal-lm', SEQ_2_SEQ_LM: 'seq2seq-lm' };

/**
 * Base model + adapter (frozen, eval mode). The task and labels come from the adapter folder
 * (label_mapping.json written by train, else the config.json the library saves beside a
 * classifier, else the saved head's size, for Python peft's adapters; --num-labels when none).
 * Without --model the base is the adapter's base_model_name_or_path, as AutoPeftModel does.
 */
export async function loadWithAdapter(flags: Flags, taskHint?: CliTask): Promise<{ model: HFModel | PeftModel; task: CliTask; mapping: LabelMappingFile | null; tokenizer: Tokenizer; baseDir: string }> {
  const adapter = await adapterDir(flags);
  const adapterConfig = adapter ? readAdapterConfig(adapter) : null;
  const fileMapping = adapter ? readLabelMapping(adapter) : null;
  const known = taskOf(str(flags, 'task')) ?? fileMapping?.task ?? (adapterConfig?.taskType ? CLI_TASK[adapterConfig.taskType] : undefined);
  const given = str(flags, 'model');
  const fromAdapter = given === undefined ? adapterConfig?.baseModelNameOrPath || undefined : undefined;
  const nameOrPath = given ?? fromAdapter ?? defaultModelDir();
  const dir = await modelDir(flags, nameOrPath, fromAdapter ? adapterConfig?.revision ?? undefined : str(flags, 'revision'));
  // A T5 / BART folder means seq2seq-lm when neither the flags nor the adapter say.
  const task = known ?? (isSeq2SeqModelDir(dir) ? 'seq2seq-lm' : undefined) ?? taskHint ?? 'causal-lm';
  const labelled = task === 'seq-cls' || task === 'token-cls';
  let mapping = fileMapping;
  if (adapter && labelled && !(fileMapping && Object.keys(fileMapping.id2label).length)) {
    const labels = readAdapterLabels(adapter);
    if (labels) mapping = { ...(fileMapping ?? {}), task, id2label: labels.id2label, label2id: labels.label2id };
  }
  const flagLabels = num(flags, 'numLabels');
  const names = mapping && Object.keys(mapping.id2label).length ? mapping : null;
  if (names && flagLabels !== undefined && flagLabels !== Object.keys(names.id2label).length) {
    throw new UsageError(`--num-labels ${flagLabels} disagrees with the ${Object.keys(names.id2label).length} labels of the adapter in ${adapter}`);
  }
  const base = loadBaseModel(task, dir, {
    numLabels: names ? undefined : flagLabels, labels: names ? { id2label: names.id2label, label2id: names.label2id } : undefined, nameOrPath,
    seed: num(flags, 'seed', 42), load4bit: bool(flags, 'loadIn4bit'), dtype: dtypeFlag(flags), quiet: adapter !== undefined,
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
