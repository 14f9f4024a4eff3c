// Shared pieces of the CLI commands: locating the embedded assets, merging --config files with
// flags, loading models / tokenizers / adapters, and the label mapping saved beside an adapter.
import * as fs from 'node:fs';
import * as path from 'node:path';
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
import { assetPath, defaultModelPath, packageRoot } from '../io/assets.js';
import { UsageError, bool, camel, list, num, parseArgs, str } from './args.js';

export type Flags = Record<string, unknown>;
export type CliTask = 'seq-cls' | 'token-cls' | 'causal-lm';
export const TASKS: CliTask[] = ['seq-cls', 'token-cls', 'causal-lm'];
export const LABEL_MAPPING_FILE = 'label_mapping.json';

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

export const peftTask = (t: CliTask) => (t === 'seq-cls' ? 'SEQ_CLS' : t === 'token-cls' ? 'TOKEN_CLS' : 'CAUSAL_LM') as 'SEQ_CLS' | 'TOKEN_CLS' | 'CAUSAL_LM';

export function modelDir(flags: Flags): string {
  const m = str(flags, 'model') ?? defaultModelDir();
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
  return auto.fromPretrainedSync(dir, o.load4bit ? { ...opts, quantizationConfig: { loadIn4bit: true } } : opts);
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

/** Base model + adapter (frozen, eval mode), the task and labels taken from the adapter dir when known. */
export function loadWithAdapter(flags: Flags, taskHint?: CliTask): { model: HFModel | PeftModel; task: CliTask; mapping: LabelMappingFile | null; tokenizer: Tokenizer; baseDir: string } {
  const adapter = str(flags, 'adapter');
  if (adapter !== undefined && !fs.existsSync(path.join(adapter, 'adapter_config.json'))) throw new Error(`--adapter ${adapter}: no adapter_config.json there`);
  const mapping = adapter ? readLabelMapping(adapter) : null;
  const task = taskOf(str(flags, 'task')) ?? mapping?.task ?? taskHint ?? 'causal-lm';
  const dir = modelDir(flags);
  const numLabels = mapping ? Object.keys(mapping.id2label).length : num(flags, 'numLabels');
  const base = loadBaseModel(task, dir, { numLabels, seed: num(flags, 'seed', 42), load4bit: bool(flags, 'loadIn4bit'), dtype: dtypeFlag(flags), quiet: adapter !== undefined });
  const model = adapter ? PeftModel.fromPretrainedSync(base, adapter) : base;
  model.eval();
  return { model, task, mapping, tokenizer: loadTokenizer(dir), baseDir: dir };
}

export function fmtPct(x: number): string { return (100 * x).toFixed(1) + '%'; }
