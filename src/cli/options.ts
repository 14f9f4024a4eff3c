// The flags of every command, declared once. Names are the kebab-case of the field they set
// (TrainingArguments, LoraConfig, generate's options); today's short names stay as aliases.
// Adding a flag is one line here plus its use in the command.
import { SCHEDULER_TYPES } from '../train/schedulers.js';
import { type Options, flag, int, list, num, oneOf, str, targets } from './args.js';

export const TASKS = ['seq-cls', 'token-cls', 'causal-lm', 'seq2seq-lm'] as const;
export type CliTask = typeof TASKS[number];

const M = 'Model';
export const MODEL = {
  model: str('base model: a folder, or a Hub id (org/name) from the HF cache or downloaded into it', { metavar: 'DIR|ID', defaultText: 'the embedded assets/default-model', group: M }),
  revision: str('Hub branch, tag or commit of --model', { metavar: 'REV', group: M }),
  dtype: oneOf(['float32', 'bfloat16'], 'base weights in bf16 keep half the memory (LoRA and compute stay float32)', { default: 'float32', group: M }),
  'load-in-4bit': flag('QLoRA: NF4 4-bit base weights', { group: M }),
} as const;

/** For commands that load an adapter: a folder or a Hub id. */
export const ADAPTER_REVISION = {
  'adapter-revision': str('Hub branch, tag or commit of --adapter', { metavar: 'REV', group: M }),
} as const;
export const BASE_FROM_ADAPTER = "the adapter's base_model_name_or_path, else the embedded assets/default-model";

const D = 'Data and task';
export const TASK = {
  task: oneOf(TASKS, 'the task', { defaultText: 'seq2seq-lm for a T5 / BART model or source + target columns, seq-cls with a label column, token-cls with tokens + ner_tags, else causal-lm', group: D }),
} as const;

export const COLUMNS = {
  'text-column': str('text column', { metavar: 'C', defaultText: 'text', group: D }),
  'label-column': str('label column (seq-cls)', { metavar: 'C', default: 'label', group: D }),
  'prompt-column': str('prompt column (causal-lm)', { metavar: 'C', default: 'prompt', group: D }),
  'completion-column': str('completion column (causal-lm)', { metavar: 'C', default: 'completion', group: D }),
  template: oneOf(['none', 'alpaca', 'chat'], 'causal-lm prompt format', { default: 'none', group: D }),
  'tokens-column': str('token-cls: the column of word lists', { metavar: 'C', defaultText: 'tokens', group: D }),
  'tags-column': str('token-cls: the column of tags', { metavar: 'C', defaultText: 'ner_tags', group: D }),
  labels: list('token-cls tag names by id', { defaultText: "the model's id2label, else the tag names in the data, sorted", group: D }),
  'source-column': str('seq2seq-lm: the input text column', { metavar: 'C', default: 'source', group: D }),
  'target-column': str('seq2seq-lm: the target text column', { metavar: 'C', default: 'target', group: D }),
  'max-target-length': int('seq2seq-lm: target tokens per example', { min: 1, max: 1 << 20, defaultText: 'as --max-length', group: D }),
  'max-length': int('tokens per example', { min: 1, max: 1 << 20, defaultText: '128; 256 for causal-lm', group: D }),
} as const;

const L = 'LoRA (peft LoraConfig)';
export const LORA = {
  r: int('LoRA rank', { min: 1, max: 8192, default: 8, group: L }),
  'lora-alpha': num('LoRA alpha (scaling alpha / r)', { gt: 0, max: 1e6, default: 16, group: L }),
  'lora-dropout': num('dropout on the LoRA input', { min: 0, lt: 1, default: 0.05, group: L }),
  'target-modules': targets('modules to adapt: names a,b, a regex, or all-linear', { metavar: 'a,b|REGEX|all-linear', defaultText: "the architecture's peft default", group: L }),
  bias: oneOf(['none', 'all', 'lora_only'], 'which biases train', { default: 'none', group: L }),
  'use-dora': flag('DoRA (weight-decomposed LoRA)', { group: L }),
  'use-rslora': flag('rsLoRA scaling alpha / sqrt(r)', { group: L }),
  'modules-to-save': list('modules trained in full and saved with the adapter', { group: L }),
} as const;

const T = "Training (transformers' TrainingArguments)";
export const TRAINING = {
  'output-dir': str('where the adapter, checkpoints and logs go', { metavar: 'DIR', default: 'runs/train', group: T }),
  'overwrite-output-dir': flag("start over in an output dir holding another run's checkpoints (deletes them)", { group: T }),
  resume: str('resume from the last checkpoint in --output-dir, or from DIR', { optionalValue: true, metavar: 'DIR', alias: ['resume-from-checkpoint'], group: T }),
  'num-train-epochs': num('epochs', { gt: 0, max: 1e6, default: 3, alias: ['epochs'], group: T }),
  'max-steps': int('optimizer steps (overrides epochs)', { min: 1, group: T }),
  'learning-rate': num('peak learning rate', { min: 0, max: 10, default: 2e-4, alias: ['lr'], group: T }),
  'per-device-train-batch-size': int('examples per step', { min: 1, max: 1 << 16, default: 8, alias: ['batch-size'], group: T }),
  'per-device-eval-batch-size': int('examples per evaluation batch', { min: 1, max: 1 << 16, default: 16, alias: ['eval-batch-size'], group: T }),
  'gradient-accumulation-steps': int('micro-batches per optimizer step', { min: 1, max: 1 << 16, default: 1, alias: ['grad-accum'], group: T }),
  'warmup-steps': num('warmup steps (a value < 1 is a ratio of the total, as transformers 5)', { min: 0, default: 0, group: T }),
  'warmup-ratio': num('warmup as a fraction of the total steps', { min: 0, max: 1, default: 0, group: T }),
  'lr-scheduler-type': oneOf(SCHEDULER_TYPES, 'learning-rate schedule', { default: 'linear', alias: ['scheduler'], group: T }),
  'weight-decay': num('AdamW weight decay', { min: 0, default: 0, group: T }),
  'max-grad-norm': num('gradient clipping norm (0: none)', { min: 0, default: 1, group: T }),
  'logging-steps': int('log every N steps', { min: 1, default: 10, group: T }),
  'eval-steps': int('evaluate every N steps', { min: 1, defaultText: 'every epoch', group: T }),
  'save-steps': int('checkpoint every N steps', { min: 1, group: T }),
  'save-total-limit': int('keep at most N checkpoints', { min: 1, group: T }),
  'early-stopping-patience': int('stop after N evaluations without improvement', { min: 1, group: T }),
  'metric-for-best-model': str('metric that picks the best checkpoint', { metavar: 'M', group: T }),
  'load-best-model-at-end': flag('reload the best checkpoint at the end', { group: T }),
  'gradient-checkpointing': flag('recompute activations in backward (less memory)', { group: T }),
  bf16: flag("mixed precision (transformers' bf16=True)", { group: T }),
  'non-finite-action': oneOf(['error', 'skip'], 'a NaN / Inf loss or gradient: stop with an error, or skip that update', { default: 'error', group: T }),
  seed: int('seed of data order, dropout and new heads', { min: 0, max: 2 ** 32 - 1, default: 42, group: T }),
} as const;

export type ModelOptions = Options<typeof MODEL>;
export type ColumnOptions = Options<typeof COLUMNS>;
export type LoraOptions = Options<typeof LORA>;
