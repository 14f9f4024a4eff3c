// AutoModelFor*: pick the architecture from config.json, build it, load a safetensors
// checkpoint folder into it with transformers' key handling (base-model prefix added or
// kept, legacy LayerNorm gamma/beta, old buffers skipped), and save it back.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Tensor } from '../tensor/tensor.js';
import { checkpointShards, iterCheckpointDir, readSafetensorsHeader } from '../io/safetensors.js';
import { resolveLocalModelPath, resolveModelPath, type ResolveOptions } from '../io/hub.js';
import type { TaskType } from './types.js';
import type { HFModel, ModelInitOptions } from './base.js';
import { GPT2ForSequenceClassification, GPT2LMHeadModel } from './gpt2.js';
import { DECODER_TYPES, LlamaForCausalLM, LlamaForSequenceClassification } from './llama.js';
import { BertForSequenceClassification, BertForTokenClassification, ENCODER_TYPES } from './bert.js';
import { DistilBertForSequenceClassification, DistilBertForTokenClassification } from './distilbert.js';
import type { RawConfig } from './common.js';

type Ctor = new (config: RawConfig, opts: ModelInitOptions) => HFModel;

const REGISTRY: Record<TaskType, Record<string, Ctor>> = {
  CAUSAL_LM: {
    gpt2: GPT2LMHeadModel,
    ...Object.fromEntries(DECODER_TYPES.map((t) => [t, LlamaForCausalLM])),
  },
  SEQ_CLS: {
    gpt2: GPT2ForSequenceClassification,
    distilbert: DistilBertForSequenceClassification,
    ...Object.fromEntries(ENCODER_TYPES.map((t) => [t, BertForSequenceClassification])),
    ...Object.fromEntries(DECODER_TYPES.map((t) => [t, LlamaForSequenceClassification])),
  },
  TOKEN_CLS: {
    distilbert: DistilBertForTokenClassification,
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
}

export interface LoadingInfo { missingKeys: string[]; unexpectedKeys: string[]; newlyInitialized: string[]; mismatchedKeys: string[] }

/** Reads and parses config.json from a model folder. */
export function readConfigJson(dir: string): RawConfig {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) throw new Error(`no config.json in ${dir}: not a Hugging Face model folder`);
  let raw: unknown;
  try { raw = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { throw new Error(`${file}: invalid JSON (${(e as Error).message})`); }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${file}: expected a JSON object`);
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
 * base model (e.g. GPT-2's "h.0.attn..." or a "bert.*"-less encoder).
 */
function keyMapper(model: HFModel, ckptKeys: string[], own: Set<string>): (k: string) => string {
  const pre = model.baseModelPrefix + '.';
  const modelHasPrefix = [...own].some((k) => k.startsWith(pre));
  const ckptHasPrefix = ckptKeys.some((k) => k.startsWith(pre));
  const addPrefix = modelHasPrefix && !ckptHasPrefix;
  return (k0: string) => {
    let k = k0;
    if (!own.has(k)) k = k.replace(/\.gamma$/, '.weight').replace(/\.beta$/, '.bias');
    if (addPrefix && !own.has(k) && own.has(pre + k)) k = pre + k;
    return k;
  };
}

/** Loads a checkpoint folder's tensors into model (float32), reporting what did not fit. */
export function loadWeights(model: HFModel, dir: string, opts: FromPretrainedOptions = {}): LoadingInfo {
  const log = opts.logger ?? ((m: string) => console.warn(m));
  const own = model.stateDict();
  const ownKeys = new Set(own.keys());
  const tied = new Set(model.tiedWeightKeys());
  const ignored = model.ignoredUnexpectedKeys();
  const loaded = new Set<Tensor>();
  const loadedKeys = new Set<string>();
  const unexpected: string[] = [], mismatched: string[] = [];
  // The prefix decision needs every key name: read the headers first, then stream tensors.
  const { files } = checkpointShards(dir);
  const names = files.flatMap((f) => Object.keys(readSafetensorsHeader(path.join(dir, f)).tensors));
  const mapKey = keyMapper(model, names, ownKeys);
  const put = (key: string, src: Tensor): void => {
    const dst = own.get(key)!;
    if (tied.has(key) && loaded.has(dst)) return; // the tied source wins, as in transformers
    if (src.shape.length !== dst.shape.length || src.shape.some((s, i) => s !== dst.shape[i])) {
      const msg = `${key}: checkpoint shape [${src.shape.join(', ')}] vs model shape [${dst.shape.join(', ')}]`;
      if (!opts.ignoreMismatchedSizes) throw new Error(`size mismatch loading ${dir}: ${msg}. Pass ignoreMismatchedSizes: true to re-initialise it instead.`);
      mismatched.push(msg);
      return;
    }
    if (src.dtype !== 'float32') throw new Error(`${key}: checkpoint tensor is ${src.dtype}, expected a floating point weight`);
    dst.data.set(src.data);
    loaded.add(dst);
    loadedKeys.add(key);
  };
  for (const [name, t] of iterCheckpointDir(dir, { toFloat32: true })) {
    const key = mapKey(name);
    if (ownKeys.has(key)) put(key, t);
    else if (!ignored.some((r) => r.test(name))) unexpected.push(name);
  }
  const missing: string[] = [];
  for (const [k, p] of own) if (!loaded.has(p) && !(tied.has(k))) missing.push(k);
  if (loadedKeys.size === 0) {
    throw new Error(`no weight in ${dir} matches ${model.architecture} (checkpoint keys like ${names.slice(0, 3).map((n) => `'${n}'`).join(', ')}; model keys like ${[...ownKeys].slice(0, 3).map((k) => `'${k}'`).join(', ')})`);
  }
  const base = model.baseModelPrefix + '.';
  const newlyInitialized = missing.filter((k) => !k.startsWith(base));
  const bodyMissing = missing.filter((k) => k.startsWith(base));
  if (bodyMissing.length && opts.strict) throw new Error(`weights missing from ${dir}: ${bodyMissing.join(', ')}`);
  if (unexpected.length) log(`Some weights of the model checkpoint at ${dir} were not used when initializing ${model.architecture}: ${unexpected.join(', ')}`);
  if (missing.length || mismatched.length) {
    log(`Some weights of ${model.architecture} were not initialized from the model checkpoint at ${dir} and are newly initialized: ${missing.join(', ')}` +
      (mismatched.length ? `; re-initialised because of a size mismatch: ${mismatched.join('; ')}` : '') +
      '\nYou should probably TRAIN this model on a down-stream task to be able to use it for predictions and inference.');
  }
  return { missingKeys: missing, unexpectedKeys: unexpected, newlyInitialized, mismatchedKeys: mismatched };
}

function fromPretrained(task: TaskType, dirOrId: string, opts: FromPretrainedOptions = {}): HFModel {
  return fromDir(task, resolveLocalModelPath(dirOrId, opts), opts);
}

function fromDir(task: TaskType, dir: string, opts: FromPretrainedOptions): HFModel {
  const raw = { ...readConfigJson(dir), ...(opts.configOverrides ?? {}) };
  const model = modelFromConfig(task, raw, { ...opts, initWeights: false });
  const info = loadWeights(model, dir, opts);
  model.initParameters(info.missingKeys); // what the checkpoint lacked gets transformers' init
  model.loadingInfo = info;
  model.eval(); // transformers returns models in eval mode
  return model;
}

function autoClass(task: TaskType) {
  return {
    /** Loads a local model folder, or a Hub id already in the Hugging Face cache (no network). */
    fromPretrained: (dirOrId: string, opts: FromPretrainedOptions = {}): HFModel => fromPretrained(task, dirOrId, opts),
    /** Like fromPretrained, but downloads a Hub id into the cache when it is missing (unless offline). */
    fromPretrainedAsync: async (dirOrId: string, opts: FromPretrainedOptions = {}): Promise<HFModel> =>
      fromDir(task, await resolveModelPath(dirOrId, opts), opts),
    /** A randomly initialised model from a config.json object. */
    fromConfig: (config: RawConfig, opts: ModelInitOptions = {}): HFModel => modelFromConfig(task, config, opts),
  };
}

export const AutoModelForCausalLM = autoClass('CAUSAL_LM');
export const AutoModelForSequenceClassification = autoClass('SEQ_CLS');
export const AutoModelForTokenClassification = autoClass('TOKEN_CLS');
