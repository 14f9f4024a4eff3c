// AutoModelFor*: pick the architecture from config.json, build it, load a safetensors
// checkpoint folder into it with transformers' key handling (base-model prefix added or
// kept, legacy LayerNorm gamma/beta, old buffers skipped), and save it back.
import { yieldToEventLoop } from '../tensor/yield.js';
import * as fs from 'node:fs';
import { MAX_CONFIG_BYTES, readJsonObject, readTextFile } from '../io/files.js';
import * as path from 'node:path';
import type { Tensor } from '../tensor/tensor.js';
import { initEmptyWeights, materializeEmptyWeights } from '../nn/layers.js';
import { openCheckpointDir } from '../io/safetensors.js';
import { FLOAT_FILE_DTYPES, countNonFinite, countNonFiniteBf16, type TensorFileReader } from '../io/tensor_file.js';
import { resolveLocalModelPath, resolveModelPath, type ResolveOptions } from '../io/hub.js';
import type { TaskType } from './types.js';
import type { HFModel, ModelInitOptions } from './base.js';
import { GPT2ForSequenceClassification, GPT2LMHeadModel } from './gpt2.js';
import { DECODER_TYPES, LlamaForCausalLM, LlamaForSequenceClassification, SEQ_CLS_DECODER_TYPES } from './llama.js';
import { PARALLEL_TYPES, ParallelDecoderForCausalLM, ParallelDecoderForSequenceClassification } from './parallel.js';
import { OPTForCausalLM, OPTForSequenceClassification } from './opt.js';
import { BertForSequenceClassification, BertForTokenClassification, ENCODER_TYPES } from './bert.js';
import { DistilBertForSequenceClassification, DistilBertForTokenClassification } from './distilbert.js';
import { T5ForConditionalGeneration } from './t5.js';
import { ModernBertForSequenceClassification, ModernBertForTokenClassification } from './modernbert.js';
import { DebertaV2ForSequenceClassification, DebertaV2ForTokenClassification } from './deberta.js';
import { BartForConditionalGeneration } from './bart.js';
import type { RawConfig } from './common.js';
import { castWeights, type WeightDtype } from '../nn/dtype.js';
import { FLOAT_LITERAL_KEYS, floatLiteralKeys } from '../io/config.js';
// Type only: models/ does not depend on quant/ at run time (quant registers its loader below).
import type { BitsAndBytesConfig } from '../quant/model.js';

type Ctor = new (config: RawConfig, opts: ModelInitOptions) => HFModel;

const REGISTRY: Record<TaskType, Record<string, Ctor>> = {
  CAUSAL_LM: {
    gpt2: GPT2LMHeadModel,
    ...Object.fromEntries(DECODER_TYPES.map((t) => [t, LlamaForCausalLM])),
    ...Object.fromEntries(PARALLEL_TYPES.map((t) => [t, ParallelDecoderForCausalLM])),
    opt: OPTForCausalLM,
  },
  SEQ_CLS: {
    gpt2: GPT2ForSequenceClassification,
    distilbert: DistilBertForSequenceClassification,
    modernbert: ModernBertForSequenceClassification,
    'deberta-v2': DebertaV2ForSequenceClassification,
    ...Object.fromEntries(ENCODER_TYPES.map((t) => [t, BertForSequenceClassification])),
    ...Object.fromEntries(SEQ_CLS_DECODER_TYPES.map((t) => [t, LlamaForSequenceClassification])),
    ...Object.fromEntries(PARALLEL_TYPES.map((t) => [t, ParallelDecoderForSequenceClassification])),
    opt: OPTForSequenceClassification,
  },
  SEQ_2_SEQ_LM: {
    t5: T5ForConditionalGeneration,
    bart: BartForConditionalGeneration,
  },
  TOKEN_CLS: {
    distilbert: DistilBertForTokenClassification,
    modernbert: ModernBertForTokenClassification,
    'deberta-v2': DebertaV2ForTokenClassification,
    ...Object.fromEntries(ENCODER_TYPES.map((t) => [t, BertForTokenClassification])),
  },
};

export interface FromPretrainedOptions extends ModelInitOptions, ResolveOptions {
  /** Skip (and report) checkpoint tensors whose shape differs, e.g. a head with another label count. */
  ignoreMismatchedSizes?: boolean;
  /** Where load warnings go (default console.warn); pass () => {} to silence. */
  logger?: (msg: string) => void;
  /** Throw instead of warning when weights outside the task head are missing. */
  strict?: boolean;
  /** Override config fields (e.g. { pad_token_id: 0 }). */
  configOverrides?: RawConfig;
  /**
   * Load the Linear layers in 4 bit (transformers' quantization_config=BitsAndBytesConfig(
   * load_in_4bit=True)): they are quantized as they are read and never exist in float32.
   * A folder whose config.json has a bitsandbytes quantization_config loads this way too.
   */
  quantizationConfig?: BitsAndBytesConfig;
  /**
   * transformers' dtype / torch_dtype. 'bfloat16' stores every Linear, Conv1D and Embedding
   * weight in bf16 (read as bf16 from BF16 checkpoints, rounded from F32 ones) and frozen;
   * linear and embedding use them as stored, with float32 activations and accumulation.
   * Norms, biases and classifier heads stay float32. 'auto' is bfloat16 when config.json's
   * dtype (torch_dtype) is, else float32 (there is no float16 compute). Default 'float32'.
   * (Ignored by the 4-bit loader.)
   */
  dtype?: ModelDtype;
  /** The older name of `dtype` (transformers < 5); either may be given. */
  torchDtype?: ModelDtype;
}

export type ModelDtype = 'float32' | 'bfloat16' | 'auto';

/** The weight dtype fromPretrained loads in, from dtype / torchDtype / config.json. */
export function resolveDtype(opts: FromPretrainedOptions, config: RawConfig): WeightDtype {
  if (opts.dtype && opts.torchDtype && opts.dtype !== opts.torchDtype) {
    throw new Error(`fromPretrained: dtype '${opts.dtype}' and torchDtype '${opts.torchDtype}' disagree; pass one`);
  }
  const d: string = opts.dtype ?? opts.torchDtype ?? 'float32';
  // 'auto': bf16 when the checkpoint says so; anything else (float16 too) computes in float32.
  if (d === 'auto') return String(config.dtype ?? config.torch_dtype ?? '').replace(/^torch\./, '') === 'bfloat16' ? 'bfloat16' : 'float32';
  if (d !== 'float32' && d !== 'bfloat16') throw new Error(`fromPretrained: dtype '${d}' is not supported (use 'float32', 'bfloat16' or 'auto')`);
  return d;
}

/** Builds and loads a model in 4 bit from a folder (set by src/quant when it is imported). */
export type QuantizedLoader = (task: TaskType, dir: string, config: RawConfig, opts: FromPretrainedOptions) => HFModel;
let quantizedLoader: QuantizedLoader | null = null;
export function registerQuantizedLoader(fn: QuantizedLoader): void { quantizedLoader = fn; }

export interface LoadingInfo { missingKeys: string[]; unexpectedKeys: string[]; newlyInitialized: string[]; mismatchedKeys: string[] }

/** Reads and parses config.json from a model folder. */
export function readConfigJson(dir: string): RawConfig {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) throw new Error(`no config.json in ${dir}: not a Hugging Face model folder`);
  const text = readTextFile(file, { maxBytes: MAX_CONFIG_BYTES });
  let raw: unknown;
  try { raw = JSON.parse(text); } catch (e) { throw new Error(`${file}: invalid JSON (${(e as Error).message})`); }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${file}: expected a JSON object`);
  const floats = floatLiteralKeys(text);
  if (floats.size) (raw as Record<symbol, unknown>)[FLOAT_LITERAL_KEYS] = floats;
  return raw as RawConfig;
}


function modelClass(task: TaskType, modelType: string): Ctor {
  const c = REGISTRY[task][modelType];
  if (!c) {
    throw new Error(`model_type '${modelType}' is not supported for ${task} (supported: ${Object.keys(REGISTRY[task]).join(', ')})`);
  }
  return c;
}

/** A fresh, randomly initialised model of the given task from a config object. */
export function modelFromConfig(task: TaskType, config: RawConfig, opts: ModelInitOptions = {}): HFModel {
  const mt = config.model_type;
  if (typeof mt !== 'string') throw new Error("config has no 'model_type'");
  return new (modelClass(task, mt))(config, opts);
}

/**
 * Maps a checkpoint key to this model's key the way transformers does: legacy gamma/beta
 * renamed, and the base-model prefix added when the checkpoint was saved from the bare
 * base model (e.g. GPT-2's "h.0.attn..." or a "bert.*"-less encoder). A bitsandbytes state
 * entry ("<path>.weight.absmax") follows its weight.
 */
function keyMapper(model: HFModel, ckptKeys: string[], own: Set<string>): (k: string) => string {
  const pre = model.baseModelPrefix + '.';
  const modelHasPrefix = [...own].some((k) => k.startsWith(pre));
  const ckptHasPrefix = ckptKeys.some((k) => k.startsWith(pre));
  const addPrefix = modelHasPrefix && !ckptHasPrefix;
  const renames = model.checkpointKeyRenames();
  return (k0: string) => {
    let k = k0;
    for (const [from, to] of renames) if (!own.has(k) && k.startsWith(from)) k = to + k.slice(from.length);
    if (!own.has(k)) k = k.replace(/\.gamma$/, '.weight').replace(/\.beta$/, '.bias');
    if (addPrefix && !own.has(k)) {
      const i = k.indexOf('.weight.');
      if (own.has(pre + k) || (i >= 0 && own.has(pre + k.slice(0, i + 7)))) k = pre + k;
    }
    return k;
  };
}

/**
 * Lets another loader take over some tensors while loadWeights streams a checkpoint (the
 * 4-bit loader quantizes Linear weights as they are read).
 */
export interface LoadWeightsHook {
  /** Model keys it loads that model.stateDict() does not list (e.g. "<path>.weight" of a 4-bit layer). */
  keys: Set<string>;
  /**
   * Offered every checkpoint tensor first, with its model key; returns true when it read
   * (consumed) the tensor from reader. A consumed key in `keys` counts as loaded.
   */
  take(key: string, name: string, reader: TensorFileReader): boolean;
}

/**
 * Loads a checkpoint folder's tensors into model (float32), reporting what did not fit. Each
 * tensor is read straight into its parameter (16-bit ones converted chunk by chunk), so no
 * second copy of a weight is made.
 */
export function loadWeights(model: HFModel, dir: string, opts: FromPretrainedOptions = {}, hook?: LoadWeightsHook): LoadingInfo {
  const log = opts.logger ?? ((m: string) => console.warn(m));
  const own = model.stateDict();
  const ownKeys = new Set([...own.keys(), ...(hook?.keys ?? [])]);
  const tied = new Set(model.tiedWeightKeys());
  const ignored = model.ignoredUnexpectedKeys();
  const loaded = new Set<Tensor>();
  const loadedKeys = new Set<string>();
  const unexpected: string[] = [], mismatched: string[] = [], nonFinite: string[] = [];
  // The prefix decision needs every key name: open the shards (headers only), then read tensors.
  const ckpt = openCheckpointDir(dir);
  try {
    const names = ckpt.entries.map(([n]) => n);
    const mapKey = keyMapper(model, names, ownKeys);
    const put = (key: string, name: string, r: TensorFileReader): void => {
      const dst = own.get(key)!;
      if (tied.has(key) && loaded.has(dst)) return; // the tied source wins, as in transformers
      const info = r.info(name);
      if (info.shape.length !== dst.shape.length || info.shape.some((s, i) => s !== dst.shape[i])) {
        const msg = `${key}: checkpoint shape [${info.shape.join(', ')}] vs model shape [${dst.shape.join(', ')}]`;
        if (!opts.ignoreMismatchedSizes) throw new Error(`size mismatch loading ${dir}: ${msg}. Pass ignoreMismatchedSizes: true to re-initialise it instead.`);
        mismatched.push(msg);
        return;
      }
      if (!FLOAT_FILE_DTYPES.has(info.dtype)) throw new Error(`${key}: checkpoint tensor is ${info.dtype}, expected a floating point weight`);
      let bad: number;
      if (dst.dtype === 'bfloat16') { r.readBfloat16(name, 0, dst.halfBits); bad = countNonFiniteBf16(dst.halfBits); }
      else { r.readFloat32(name, 0, dst.data); bad = countNonFinite(dst.data); }
      if (bad) nonFinite.push(`${name} (${bad} of ${dst.size})`);
      loaded.add(dst);
      loadedKeys.add(key);
    };
    for (const [name, r] of ckpt.entries) {
      const key = mapKey(name);
      if (hook && hook.take(key, name, r)) { if (hook.keys.has(key)) loadedKeys.add(key); continue; }
      if (own.has(key)) put(key, name, r);
      else if (!ignored.some((re) => re.test(name))) unexpected.push(name);
    }
    if (loadedKeys.size === 0) {
      throw new Error(`no weight in ${dir} matches ${model.architecture} (checkpoint keys like ${names.slice(0, 3).map((n) => `'${n}'`).join(', ')}; model keys like ${[...ownKeys].slice(0, 3).map((k) => `'${k}'`).join(', ')})`);
    }
  } finally { ckpt.close(); }
  const missing: string[] = [];
  for (const [k, p] of own) if (!loaded.has(p) && !(tied.has(k))) missing.push(k);
  for (const k of hook?.keys ?? []) if (!loadedKeys.has(k)) missing.push(k);
  const base = model.baseModelPrefix + '.';
  const newlyInitialized = missing.filter((k) => !k.startsWith(base));
  const bodyMissing = missing.filter((k) => k.startsWith(base));
  if (bodyMissing.length && opts.strict) throw new Error(`weights missing from ${dir}: ${bodyMissing.join(', ')}`);
  // NaN / Inf weights load without complaint in torch; they turn every output into NaN.
  if (nonFinite.length) log(`Weights of the model checkpoint at ${dir} hold non-finite values (NaN / Inf): ${nonFinite.slice(0, 10).join(', ')}${nonFinite.length > 10 ? ` (+${nonFinite.length - 10} more tensors)` : ''}; outputs will be NaN`);
  if (unexpected.length) log(`Some weights of the model checkpoint at ${dir} were not used when initializing ${model.architecture}: ${unexpected.join(', ')}`);
  if (missing.length || mismatched.length) {
    log(`Some weights of ${model.architecture} were not initialized from the model checkpoint at ${dir} and are newly initialized: ${missing.join(', ')}` +
      (mismatched.length ? `; re-initialised because of a size mismatch: ${mismatched.join('; ')}` : '') +
      '\nYou should probably TRAIN this model on a down-stream task to be able to use it for predictions and inference.');
  }
  return { missingKeys: missing, unexpectedKeys: unexpected, newlyInitialized, mismatchedKeys: mismatched };
}

function fromPretrainedSync(task: TaskType, dirOrId: string, opts: FromPretrainedOptions = {}): HFModel {
  return fromDir(task, resolveLocalModelPath(dirOrId, opts), opts, dirOrId);
}

function fromDir(task: TaskType, dir: string, opts: FromPretrainedOptions, nameOrPath: string): HFModel {
  const raw = { ...readConfigJson(dir), ...(opts.configOverrides ?? {}) };
  if (opts.quantizationConfig || raw.quantization_config) {
    if (!quantizedLoader) throw new Error(`loading ${dir} in 4 bit needs the quant module: import 'peft-ts' (or its src/quant) first`);
    return quantizedLoader(task, dir, raw, opts);
  }
  let model: HFModel;
  if (resolveDtype(opts, raw) === 'bfloat16') {
    // Linear / Conv1D weights never exist in float32: built deferred, given bf16 buffers,
    // then read straight into them (the skipped heads get float32 buffers).
    model = initEmptyWeights(() => modelFromConfig(task, raw, { ...opts, initWeights: false }));
    castWeights(model, 'bfloat16');
    materializeEmptyWeights(model);
  } else {
    // Built without random draws (weights zeroed): the checkpoint overwrites them, and only
    // what it lacks gets an init below. Saves drawing a normal per weight (seconds for 1B).
    model = initEmptyWeights(() => modelFromConfig(task, raw, { ...opts, initWeights: false }));
    materializeEmptyWeights(model);
  }
  const info = loadWeights(model, dir, opts);
  model.initParameters(info.missingKeys); // what the checkpoint lacked gets transformers' init
  model.loadingInfo = info;
  model.nameOrPath = nameOrPath;
  model.eval(); // transformers returns models in eval mode
  return model;
}

function autoClass(task: TaskType) {
  return {
    /**
     * Loads a local model folder or a Hub id (downloaded into the Hugging Face cache when
     * missing, unless offline), as transformers.js's from_pretrained: a Promise, the download
     * runs without blocking the event loop.
     */
    fromPretrained: async (dirOrId: string, opts: FromPretrainedOptions = {}): Promise<HFModel> => {
      const dir = await resolveModelPath(dirOrId, opts);
      await yieldToEventLoop();
      return fromDir(task, dir, opts, dirOrId);
    },
    /** fromPretrained without the Promise: a local folder, or a Hub id already in the cache (no network). */
    fromPretrainedSync: (dirOrId: string, opts: FromPretrainedOptions = {}): HFModel => fromPretrainedSync(task, dirOrId, opts),
    /**
     * A randomly initialised model from a config.json object. dtype 'bfloat16' (transformers'
     * from_config(torch_dtype=...)) draws each Linear / Conv1D / Embedding weight in float32 one
     * layer at a time and stores it in bf16: the whole model never exists in float32.
     */
    fromConfig: (config: RawConfig, opts: ModelInitOptions & { dtype?: ModelDtype } = {}): HFModel => {
      if (resolveDtype({ dtype: opts.dtype }, config) !== 'bfloat16') return modelFromConfig(task, config, opts);
      const model = initEmptyWeights(() => modelFromConfig(task, config, { ...opts, initWeights: false }));
      castWeights(model, 'bfloat16');
      materializeEmptyWeights(model);
      if (opts.initWeights ?? true) model.initParameters([...model.stateDict().keys()]);
      return model;
    },
  };
}

export const AutoModelForCausalLM = autoClass('CAUSAL_LM');
export const AutoModelForSequenceClassification = autoClass('SEQ_CLS');
export const AutoModelForTokenClassification = autoClass('TOKEN_CLS');
export const AutoModelForSeq2SeqLM = autoClass('SEQ_2_SEQ_LM');
