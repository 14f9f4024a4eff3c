// Whole-model QLoRA helpers: replace Linear layers by Linear4bit (transformers'
// replace_with_bnb_linear), load a checkpoint straight into 4-bit one tensor at a time,
// peft's prepare_model_for_kbit_training, and dequantization back to float32 Linear layers.
import { Tensor } from '../tensor/tensor.js';
import { clearPool } from '../tensor/storage.js';
import { Rng } from '../tensor/random.js';
import { toFloat32 } from '../tensor/ops/basic.js';
import { Module } from '../nn/module.js';
import { Conv1D, Linear, materializeEmptyWeights } from '../nn/layers.js';
import { ComputeDtype, Linear4bit } from './linear4bit.js';
import type { StoredTensor } from './serialize.js';
import { Load4bitSink, type WeightLayout } from './sink.js';

/** transformers' BitsAndBytesConfig, the 4-bit part. */
export interface BitsAndBytesConfig {
  loadIn4bit?: boolean;
  /** Only 'nf4' is implemented. */
  bnb4bitQuantType?: 'nf4';
  /** Double quantization of the absmax vector (default true here, as QLoRA uses it). */
  bnb4bitUseDoubleQuant?: boolean;
  bnb4bitComputeDtype?: ComputeDtype;
  /** Elements per absmax block (bnb: 64). */
  bnb4bitBlocksize?: number;
  /** Module names or paths kept in float32 (llm_int8_skip_modules). */
  llmInt8SkipModules?: string[];
}

export interface QuantizeModelOptions {
  /** Module names/paths not to quantize, in addition to the output head and classifier heads. */
  skip?: string[];
  computeDtype?: ComputeDtype;
  /** Double quantization (default true). */
  compressStatistics?: boolean;
  blocksize?: number;
  /**
   * Replace without quantizing the current (random) weights: empty Linear4bit placeholders that
   * a loader fills. Used by loadModelIn4bit.
   */
  placeholders?: boolean;
  /** Drop the tensor pool afterwards so freed float32 buffers can be collected (default true). */
  releasePool?: boolean;
}

/** The quantizeModel options a BitsAndBytesConfig stands for. */
export function optionsFromConfig(c: BitsAndBytesConfig): QuantizeModelOptions {
  if (c.bnb4bitQuantType && c.bnb4bitQuantType !== 'nf4') throw new Error(`bnb_4bit_quant_type '${c.bnb4bitQuantType}' is not supported (only nf4)`);
  return {
    skip: c.llmInt8SkipModules, computeDtype: c.bnb4bitComputeDtype ?? 'float32',
    compressStatistics: c.bnb4bitUseDoubleQuant ?? true, blocksize: c.bnb4bitBlocksize ?? 64,
  };
}

/** transformers' rule: a skip key matches the module path or any dotted part of it. */
function skipped(path: string, keys: string[]): boolean {
  return keys.some((k) => path === k || path.endsWith('.' + k) || path.startsWith(k + '.') || path.includes('.' + k + '.'));
}

/** Heads a model says must stay in full precision (PreTrainedModel.outputHeadNames / classifierModuleNames). */
function defaultSkips(model: Module): string[] {
  const m = model as unknown as { outputHeadNames?: () => string[]; classifierModuleNames?: () => string[] };
  return [...(m.outputHeadNames?.() ?? []), ...(m.classifierModuleNames?.() ?? [])];
}

/** Paths of the Linear / Conv1D modules quantizeModel would replace. */
export function quantizableModules(model: Module, skip: string[] = []): string[] {
  const keys = [...defaultSkips(model), ...skip];
  const out: string[] = [];
  for (const [path, m] of model.namedModules()) {
    if (path && (m instanceof Linear || m instanceof Conv1D) && !skipped(path, keys)) out.push(path);
  }
  return out;
}

/** Weight as [out, in] float32 (Conv1D stores [in, out]). */
function weightOutIn(m: Linear | Conv1D): Float32Array {
  const w = m.weight;
  const src = w.dtype === 'float32' ? w.data : w.toFloat32Array();
  if (m instanceof Linear) return src;
  const [inF, outF] = w.shape, t = new Float32Array(src.length);
  for (let i = 0; i < inF; i++) for (let o = 0; o < outF; o++) t[o * inF + i] = src[i * outF + o];
  return t;
}

/** True when some other module still holds this tensor (tied weights): it must not be freed. */
function sharedElsewhere(model: Module, t: Tensor, owner: Module): boolean {
  for (const [, m] of model.namedModules()) {
    if (m === owner) continue;
    for (const n of m.ownParameterNames()) if (m.getParameter(n) === t) return true;
  }
  return false;
}

/**
 * Replaces every Linear / Conv1D (except the output head, classifier heads and `skip`) by a
 * Linear4bit, one layer at a time: quantize, swap in, free the float32 weight. Peak extra
 * memory is one layer. Returns the replaced paths.
 */
export function quantizeModel(model: Module, opts: QuantizeModelOptions = {}): string[] {
  const paths = quantizableModules(model, opts.skip);
  for (const path of paths) {
    const m = model.getSubmodule(path) as Linear | Conv1D;
    const q = new Linear4bit(m.inFeatures, m.outFeatures, null, m.bias, opts.computeDtype ?? 'float32',
      { compressStatistics: opts.compressStatistics ?? true, blocksize: opts.blocksize ?? 64 });
    if (!opts.placeholders) q.quantizeWeight(weightOutIn(m));
    q.training = m.training;
    model.setSubmodule(path, q);
    // A layer built inside initEmptyWeights has no weight to free.
    const w = m.getParameter('weight');
    m.deleteParameter('weight');
    if (w && !sharedElsewhere(model, w, m)) w.dispose();
  }
  if (opts.releasePool ?? true) clearPool();
  return paths;
}

export interface Load4bitReport {
  /** Layers that were quantized from float weights in the checkpoint. */
  quantized: string[];
  /** Layers read already quantized (bitsandbytes keys). */
  prequantized: string[];
  missingKeys: string[];
  unexpectedKeys: string[];
}

/**
 * Replaces the quantizable layers of `model` by Linear4bit placeholders and gives back the
 * sink that fills them (see sink.ts). Layers built inside initEmptyWeights never had a
 * float32 weight; the other deferred weights (output head, skipped layers) get a buffer.
 */
export function prepare4bitPlaceholders(model: Module, opts: QuantizeModelOptions): Load4bitSink {
  const layouts = new Map<string, WeightLayout>();
  for (const p of quantizableModules(model, opts.skip)) layouts.set(p, model.getSubmodule(p) instanceof Conv1D ? 'conv1d' : 'linear');
  quantizeModel(model, { ...opts, placeholders: true });
  materializeEmptyWeights(model);
  const layers = new Map([...layouts].map(([p, layout]) => [p, { mod: model.getSubmodule(p) as Linear4bit, layout }]));
  return new Load4bitSink(layers);
}

/**
 * Loads a checkpoint into `model` in 4-bit, reading tensors one at a time (e.g. from
 * iterSafetensors / iterCheckpointDir): Linear layers become Linear4bit placeholders first,
 * then each float weight is quantized as it arrives and dropped, and bnb-quantized entries
 * ("<path>.weight" uint8 + quant state) are installed as they complete. Other tensors are
 * copied into the model's parameters. Build the model inside initEmptyWeights() and its
 * Linear layers never get a float32 weight; otherwise their random weights are freed first.
 * (To load a model folder, AutoModelFor*.fromPretrained(dir, { quantizationConfig }) also
 * reads each weight piece by piece.)
 */
export function loadModelIn4bit<M extends Module>(model: M, tensors: Iterable<[string, StoredTensor]>,
  config: BitsAndBytesConfig = {}): Load4bitReport {
  const sink = prepare4bitPlaceholders(model, optionsFromConfig(config));
  const params = model.stateDict();
  const report: Load4bitReport = { quantized: sink.quantized, prequantized: sink.prequantized, missingKeys: [], unexpectedKeys: [] };
  const seen = new Set<string>();
  const dispose = (t: StoredTensor) => { if (t instanceof Tensor) t.dispose(); };
  for (const [name, t] of tensors) {
    seen.add(name);
    const p = sink.layerOf(name);
    if (p) {
      if (name === p + '.weight' && t instanceof Tensor && t.dtype !== 'int32') {
        const w = t.dtype === 'float32' ? t.data : t.toFloat32Array();
        sink.floatWeight(p, t.shape, t.dtype, (s, out) => out.set(w.subarray(s, s + out.length)));
        t.dispose();
      } else sink.stateEntry(p, name, t);
      continue;
    }
    const dst = params.get(name);
    if (!dst) { report.unexpectedKeys.push(name); dispose(t); continue; }
    if (!(t instanceof Tensor)) throw new Error(`${name}: raw bytes given for a float parameter`);
    if (t.size !== dst.size) throw new Error(`${name}: checkpoint shape [${t.shape}] does not match the model's [${dst.shape}]`);
    dst.data.set(t.dtype === 'float32' ? t.data : t.toFloat32Array());
    t.dispose();
  }
  report.missingKeys.push(...sink.incomplete(), ...sink.unloaded().map((p) => `${p}.weight`));
  for (const n of params.keys()) if (!seen.has(n)) report.missingKeys.push(n);
  clearPool();
  return report;
}

export interface KbitTrainingOptions {
  /** Turn on gradient checkpointing when the model supports it (default true, as peft). */
  useGradientCheckpointing?: boolean;
}

/**
 * peft's prepare_model_for_kbit_training: freeze every base parameter, cast any 16-bit
 * parameter to float32 (norms, embeddings, heads), enable gradient checkpointing. Input
 * gradients need no hook here: our checkpoint op links its output even when inputs are frozen.
 */
export function prepareModelForKbitTraining<M extends Module>(model: M, opts: KbitTrainingOptions = {}): M {
  for (const [, m] of model.namedModules()) {
    for (const n of m.ownParameterNames()) {
      const p = m.getParameter(n);
      if (!p) continue;
      if (p.dtype === 'bfloat16' || p.dtype === 'float16') {
        const f = toFloat32(p);
        f.name = p.name;
        m.registerParameter(n, f);
        p.dispose();
      }
    }
  }
  for (const p of model.parameters()) p.requiresGrad = false;
  const useGc = opts.useGradientCheckpointing ?? true;
  if ('gradientCheckpointing' in model) (model as unknown as { gradientCheckpointing: boolean }).gradientCheckpointing = useGc;
  return model;
}

/**
 * Replaces every Linear4bit by a float32 Linear holding the dequantized weight (transformers'
 * model.dequantize()), e.g. to merge LoRA and save in 16/32-bit. Returns the replaced paths.
 */
export function dequantizeModel(model: Module): string[] {
  const paths: string[] = [];
  for (const [path, m] of model.namedModules()) if (path && m instanceof Linear4bit) paths.push(path);
  for (const path of paths) model.setSubmodule(path, toLinear(model.getSubmodule(path) as Linear4bit));
  return paths;
}

/** A float32 Linear with the dequantized weight and the same bias tensor. */
export function toLinear(q: Linear4bit): Linear {
  // A throwaway Rng: building the Linear must not advance the global random stream.
  const lin = new Linear(q.inFeatures, q.outFeatures, false, new Rng(0));
  lin.getParameter('weight')!.dispose();
  const w = q.dequantizeWeight();
  w.setRequiresGrad(false);
  lin.registerParameter('weight', w);
  lin.registerParameter('bias', q.bias);
  lin.training = q.training;
  return lin;
}

/** Reads transformers' "quantization_config" (config.json) into a BitsAndBytesConfig. */
export function bnbConfigFromDict(raw: Record<string, unknown>): BitsAndBytesConfig {
  if (raw.quant_method !== undefined && raw.quant_method !== 'bitsandbytes') {
    throw new Error(`quantization_config.quant_method is '${String(raw.quant_method)}', only 'bitsandbytes' is supported`);
  }
  const in4 = raw.load_in_4bit ?? raw._load_in_4bit;
  if (in4 !== true) throw new Error('quantization_config: only load_in_4bit=true is supported (8-bit is not implemented)');
  const qt = (raw.bnb_4bit_quant_type ?? 'fp4') as string; // transformers' default is fp4
  if (qt !== 'nf4') throw new Error(`quantization_config.bnb_4bit_quant_type '${qt}' is not supported (only nf4)`);
  const cd = String(raw.bnb_4bit_compute_dtype ?? 'float32');
  if (!['float32', 'bfloat16', 'float16'].includes(cd)) throw new Error(`bnb_4bit_compute_dtype '${cd}' is not supported`);
  const storage = raw.bnb_4bit_quant_storage ?? 'uint8';
  if (storage !== 'uint8') throw new Error(`bnb_4bit_quant_storage '${String(storage)}' is not supported (only uint8)`);
  return {
    loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: Boolean(raw.bnb_4bit_use_double_quant),
    bnb4bitComputeDtype: cd as ComputeDtype,
    llmInt8SkipModules: Array.isArray(raw.llm_int8_skip_modules) ? raw.llm_int8_skip_modules.map(String) : undefined,
  };
}

/** transformers' BitsAndBytesConfig.to_dict(), for the "quantization_config" of a saved 4-bit model. */
export function bnbConfigToDict(c: BitsAndBytesConfig): Record<string, unknown> {
  return {
    _load_in_4bit: true, _load_in_8bit: false,
    bnb_4bit_compute_dtype: c.bnb4bitComputeDtype ?? 'float32',
    bnb_4bit_quant_storage: 'uint8',
    bnb_4bit_quant_type: c.bnb4bitQuantType ?? 'nf4',
    bnb_4bit_use_double_quant: c.bnb4bitUseDoubleQuant ?? true,
    llm_int8_enable_fp32_cpu_offload: false,
    llm_int8_has_fp16_weight: false,
    llm_int8_skip_modules: c.llmInt8SkipModules ?? null,
    llm_int8_threshold: 6.0,
    load_in_4bit: true, load_in_8bit: false,
    quant_method: 'bitsandbytes',
  };
}
