// LoraConfig with peft 0.21's fields, defaults and validation, and its adapter_config.json
// form (snake_case keys, every key peft writes, sorted as peft's json.dumps(sort_keys=True)).
import type { TaskType } from '../models/types.js';

export type LoraBias = 'none' | 'all' | 'lora_only';
export type InitLoraWeights = boolean | 'gaussian';
/** peft's shorthand for "every Linear/Conv1D except the output head". */
export const ALL_LINEAR = 'all-linear';

export interface LoraConfigOptions {
  r?: number;
  loraAlpha?: number;
  /** string[]: exact name or dotted suffix; string: regex that must match the whole name, or "all-linear". null: the architecture's default. */
  targetModules?: string[] | string | null;
  excludeModules?: string[] | string | null;
  loraDropout?: number;
  bias?: LoraBias;
  taskType?: TaskType | null;
  /** Extra modules trained in full and saved with the adapter (classifier heads...). */
  modulesToSave?: string[] | null;
  layersToTransform?: number[] | number | null;
  layersPattern?: string[] | string | null;
  fanInFanOut?: boolean;
  initLoraWeights?: InitLoraWeights;
  useRslora?: boolean;
  useDora?: boolean;
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  inferenceMode?: boolean;
  baseModelNameOrPath?: string | null;
  revision?: string | null;
}

// Keys peft 0.21's LoraConfig.to_dict() has for features we do not implement, with the
// values that mean "off". They are written as-is so peft reads our files; on load any
// other value is refused with a clear message rather than silently ignored.
const UNSUPPORTED_DEFAULTS: Record<string, unknown> = {
  alora_invocation_tokens: null,
  arrow_config: null,
  corda_config: null,
  ensure_weight_tying: false,
  eva_config: null,
  kasa_config: null,
  layer_replication: null,
  loftq_config: {},
  lora_bias: false,
  lora_ga_config: null,
  megatron_config: null,
  monteclora_config: null,
  qalora_group_size: 16,
  target_parameters: null,
  trainable_token_indices: null,
  use_bdlora: null,
  use_qalora: false,
  velora_config: null,
};
// Harmless informational keys we keep but do not interpret.
const PASSTHROUGH_DEFAULTS: Record<string, unknown> = { megatron_core: 'megatron.core' };

/** The peft version whose adapter_config.json layout this writer reproduces. */
export const PEFT_FORMAT_VERSION = '0.21.0';

const TASK_TYPES = ['CAUSAL_LM', 'SEQ_CLS', 'TOKEN_CLS', 'SEQ_2_SEQ_LM', 'QUESTION_ANS', 'FEATURE_EXTRACTION'];

function isEmpty(v: unknown): boolean {
  if (v === null || v === undefined || v === false) return true;
  if (Array.isArray(v)) return v.length === 0;
  if (typeof v === 'object') return Object.keys(v as object).length === 0;
  return false;
}

export class LoraConfig {
  readonly peftType = 'LORA';
  r = 8;
  loraAlpha = 8;
  targetModules: string[] | string | null = null;
  excludeModules: string[] | string | null = null;
  loraDropout = 0;
  bias: LoraBias = 'none';
  taskType: TaskType | null = null;
  modulesToSave: string[] | null = null;
  layersToTransform: number[] | number | null = null;
  layersPattern: string[] | string | null = null;
  fanInFanOut = false;
  initLoraWeights: InitLoraWeights = true;
  useRslora = false;
  useDora = false;
  rankPattern: Record<string, number> = {};
  alphaPattern: Record<string, number> = {};
  inferenceMode = false;
  baseModelNameOrPath: string | null = null;
  revision: string | null = null;
  /** peft's auto_mapping (set when saving a model without a task type). */
  autoMapping: Record<string, string> | null = null;
  /** Keys read from a file that we keep for writing back unchanged. */
  extra: Record<string, unknown> = {};

  constructor(opts: LoraConfigOptions = {}) {
    for (const [k, v] of Object.entries(opts)) {
      if (v === undefined) continue;
      if (!(k in this) || k === 'peftType' || k === 'extra') throw new Error(`LoraConfig: unknown option '${k}'`);
      (this as Record<string, unknown>)[k] = Array.isArray(v) ? [...v] : (v && typeof v === 'object' ? { ...v } : v);
    }
    this.validate();
  }

  validate(): void {
    const fail = (m: string) => { throw new Error(`LoraConfig: ${m}`); };
    if (!Number.isInteger(this.r) || this.r <= 0) fail(`\`r\` should be a positive integer value but the value passed is ${this.r}`);
    if (typeof this.loraAlpha !== 'number' || !Number.isFinite(this.loraAlpha)) fail(`loraAlpha must be a number, got ${this.loraAlpha}`);
    if (!(this.loraDropout >= 0 && this.loraDropout < 1)) fail(`loraDropout must be in [0, 1), got ${this.loraDropout}`);
    if (!['none', 'all', 'lora_only'].includes(this.bias)) fail(`bias must be 'none', 'all' or 'lora_only', got '${this.bias}'`);
    if (this.taskType !== null && !TASK_TYPES.includes(this.taskType)) fail(`unknown taskType '${this.taskType}' (one of ${TASK_TYPES.join(', ')})`);
    if (!(this.initLoraWeights === true || this.initLoraWeights === false || this.initLoraWeights === 'gaussian')) {
      fail(`initLoraWeights must be true, false or 'gaussian' (peft's 'pissa', 'olora', 'loftq', ... are not supported), got ${JSON.stringify(this.initLoraWeights)}`);
    }
    if (typeof this.targetModules === 'string' && this.layersToTransform !== null) fail('`layers_to_transform` cannot be used when `target_modules` is a str.');
    if (typeof this.targetModules === 'string' && this.layersPattern !== null) fail('`layers_pattern` cannot be used when `target_modules` is a str.');
    if (!isEmpty(this.layersPattern) && this.layersToTransform === null) fail('When `layers_pattern` is specified, `layers_to_transform` must also be specified.');
    for (const [k, v] of Object.entries(this.rankPattern)) if (!Number.isInteger(v) || v <= 0) fail(`rankPattern['${k}'] must be a positive integer, got ${v}`);
    for (const [k, v] of Object.entries(this.alphaPattern)) if (typeof v !== 'number') fail(`alphaPattern['${k}'] must be a number, got ${v}`);
    if (Array.isArray(this.targetModules) && this.targetModules.some((t) => typeof t !== 'string')) fail('targetModules must hold strings');
  }

  /** A deep copy (adapters each own their config, as peft copies it). */
  clone(overrides: LoraConfigOptions = {}): LoraConfig {
    const c = LoraConfig.fromPeftJson(this.toPeftJson());
    c.extra = { ...this.extra };
    for (const [k, v] of Object.entries(overrides)) if (v !== undefined) (c as unknown as Record<string, unknown>)[k] = v;
    c.validate();
    return c;
  }

  /** adapter_config.json content, with the keys peft 0.21 writes, sorted. */
  toPeftJson(): Record<string, unknown> {
    const sortedSet = (v: string[] | string | null) => Array.isArray(v) ? [...new Set(v)].sort() : v;
    const out: Record<string, unknown> = {
      ...UNSUPPORTED_DEFAULTS,
      ...PASSTHROUGH_DEFAULTS,
      ...this.extra,
      alpha_pattern: { ...this.alphaPattern },
      auto_mapping: this.autoMapping,
      base_model_name_or_path: this.baseModelNameOrPath,
      bias: this.bias,
      exclude_modules: sortedSet(this.excludeModules),
      fan_in_fan_out: this.fanInFanOut,
      inference_mode: this.inferenceMode,
      init_lora_weights: this.initLoraWeights,
      layers_pattern: this.layersPattern,
      layers_to_transform: this.layersToTransform,
      lora_alpha: this.loraAlpha,
      lora_dropout: this.loraDropout,
      modules_to_save: this.modulesToSave ? [...this.modulesToSave] : null,
      peft_type: 'LORA',
      peft_version: PEFT_FORMAT_VERSION,
      r: this.r,
      rank_pattern: { ...this.rankPattern },
      revision: this.revision,
      target_modules: sortedSet(this.targetModules),
      task_type: this.taskType,
      use_dora: this.useDora,
      use_rslora: this.useRslora,
    };
    const sorted: Record<string, unknown> = {};
    for (const k of Object.keys(out).sort()) sorted[k] = out[k];
    return sorted;
  }

  /** Parses adapter_config.json content (as written by peft or by us). */
  static fromPeftJson(input: unknown, file = 'adapter_config.json'): LoraConfig {
    // The file is untrusted: its shape is checked before any value is used (peft itself
    // fails on a missing peft_type rather than guessing LORA).
    if (!input || typeof input !== 'object' || Array.isArray(input)) {
      throw new Error(`${file}: expected a JSON object (peft's adapter config), got ${input === null ? 'null' : Array.isArray(input) ? 'an array' : typeof input}`);
    }
    const json = input as Record<string, unknown>;
    if (json.peft_type === undefined) throw new Error(`${file}: no "peft_type" (not a peft adapter config; LoRA adapters have "peft_type": "LORA")`);
    const pt = json.peft_type;
    if (pt !== 'LORA') throw new Error(`${file} has peft_type ${JSON.stringify(pt)}; only LORA adapters are supported`);
    checkShape(json, file);
    for (const [k, off] of Object.entries(UNSUPPORTED_DEFAULTS)) {
      const v = json[k];
      if (v === undefined || k === 'qalora_group_size') continue;
      if (!isEmpty(v) && JSON.stringify(v) !== JSON.stringify(off)) {
        throw new Error(`adapter_config.json sets '${k}' = ${JSON.stringify(v)}, a peft feature peft-ts does not implement`);
      }
    }
    const init = json.init_lora_weights;
    if (init !== undefined && init !== true && init !== false && init !== 'gaussian') {
      // The init method only matters for fresh adapters; saved weights load the same either way.
      // PiSSA/OLoRA change the base weights though, so refuse those.
      throw new Error(`adapter_config.json has init_lora_weights = ${JSON.stringify(init)}, which peft-ts does not support`);
    }
    const known = new Set(['alpha_pattern', 'auto_mapping', 'base_model_name_or_path', 'bias', 'exclude_modules', 'fan_in_fan_out',
      'inference_mode', 'init_lora_weights', 'layers_pattern', 'layers_to_transform', 'lora_alpha', 'lora_dropout',
      'modules_to_save', 'peft_type', 'peft_version', 'r', 'rank_pattern', 'revision', 'target_modules', 'task_type',
      'use_dora', 'use_rslora', ...Object.keys(UNSUPPORTED_DEFAULTS)]);
    const extra: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(json)) if (!known.has(k)) extra[k] = v;
    const opt = <T>(k: string): T | undefined => (json[k] === undefined ? undefined : json[k] as T);
    const c = new LoraConfig({
      r: opt('r'),
      loraAlpha: opt('lora_alpha'),
      targetModules: opt('target_modules'),
      excludeModules: opt('exclude_modules'),
      loraDropout: opt('lora_dropout'),
      bias: opt('bias'),
      taskType: opt('task_type'),
      modulesToSave: opt('modules_to_save'),
      layersToTransform: opt('layers_to_transform'),
      layersPattern: opt('layers_pattern'),
      fanInFanOut: opt('fan_in_fan_out'),
      initLoraWeights: opt('init_lora_weights'),
      useRslora: opt('use_rslora'),
      useDora: opt('use_dora'),
      rankPattern: opt<Record<string, number> | null>('rank_pattern') ?? {},
      alphaPattern: opt<Record<string, number> | null>('alpha_pattern') ?? {},
      inferenceMode: opt('inference_mode'),
      baseModelNameOrPath: opt('base_model_name_or_path'),
      revision: opt('revision'),
    });
    c.autoMapping = (json.auto_mapping as Record<string, string> | null) ?? null;
    delete extra.peft_version;
    c.extra = extra;
    return c;
  }
}

const isStr = (v: unknown) => typeof v === 'string';
const isStrList = (v: unknown) => Array.isArray(v) && v.every(isStr);
const isIntList = (v: unknown) => Array.isArray(v) && v.every((x) => Number.isInteger(x));
const isObj = (v: unknown) => !!v && typeof v === 'object' && !Array.isArray(v);
const SHAPES: Record<string, [string, (v: unknown) => boolean]> = {
  r: ['a positive integer', (v) => Number.isInteger(v) && (v as number) > 0],
  lora_alpha: ['a number', (v) => typeof v === 'number' && Number.isFinite(v)],
  lora_dropout: ['a number in [0, 1)', (v) => typeof v === 'number' && v >= 0 && v < 1],
  target_modules: ['a list of names, a regex string or null', (v) => v === null || isStr(v) || isStrList(v)],
  exclude_modules: ['a list of names, a regex string or null', (v) => v === null || isStr(v) || isStrList(v)],
  modules_to_save: ['a list of names or null', (v) => v === null || isStrList(v)],
  layers_to_transform: ['an integer, a list of integers or null', (v) => v === null || Number.isInteger(v) || isIntList(v)],
  layers_pattern: ['a string, a list of strings or null', (v) => v === null || isStr(v) || isStrList(v)],
  bias: ['"none", "all" or "lora_only"', (v) => v === 'none' || v === 'all' || v === 'lora_only'],
  task_type: ['a task name or null', (v) => v === null || isStr(v)],
  fan_in_fan_out: ['true or false', (v) => typeof v === 'boolean'],
  use_rslora: ['true or false', (v) => typeof v === 'boolean'],
  use_dora: ['true or false', (v) => typeof v === 'boolean'],
  inference_mode: ['true or false', (v) => typeof v === 'boolean'],
  rank_pattern: ['an object of positive integers', (v) => v === null || (isObj(v) && Object.values(v as object).every((x) => Number.isInteger(x) && x > 0))],
  alpha_pattern: ['an object of numbers', (v) => v === null || (isObj(v) && Object.values(v as object).every((x) => typeof x === 'number'))],
  base_model_name_or_path: ['a string or null', (v) => v === null || isStr(v)],
  revision: ['a string or null', (v) => v === null || isStr(v)],
  auto_mapping: ['an object or null', (v) => v === null || isObj(v)],
};

/** Each known key of an adapter_config.json has the JSON type peft writes. */
function checkShape(json: Record<string, unknown>, file: string): void {
  for (const [k, [want, ok]] of Object.entries(SHAPES)) {
    if (json[k] !== undefined && !ok(json[k])) throw new Error(`${file}: "${k}" must be ${want}, got ${JSON.stringify(json[k])}`);
  }
}

/** Python's re.fullmatch(pattern, s), translating the named-group syntax JS spells differently. */
export function pyFullMatch(pattern: string, s: string): boolean {
  return compilePy(`^(?:${pattern})$`).test(s);
}

/** Python's re.match (anchored at the start only). */
export function pyMatch(pattern: string, s: string): RegExpExecArray | null {
  return compilePy(`^(?:${pattern})`).exec(s);
}

const reCache = new Map<string, RegExp>();
function compilePy(src: string): RegExp {
  let re = reCache.get(src);
  if (!re) {
    try { re = new RegExp(src.replace(/\(\?P</g, '(?<').replace(/\(\?P=(\w+)\)/g, '\\k<$1>')); }
    catch (e) { throw new Error(`invalid regular expression ${JSON.stringify(src)}: ${(e as Error).message}`); }
    reCache.set(src, re);
  }
  return re;
}
