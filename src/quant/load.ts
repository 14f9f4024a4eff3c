// Loading a model folder in 4 bit without ever building its float32 weights (transformers'
// from_pretrained(..., quantization_config=BitsAndBytesConfig(load_in_4bit=True))):
//   1. the model is built inside initEmptyWeights: Linear/Conv1D weights are not allocated
//      and no layer draws random numbers;
//   2. the quantizable layers become empty Linear4bit placeholders; the remaining deferred
//      weights (output head, skipped layers) get zero-filled float32 buffers;
//   3. the checkpoint is streamed: a float weight of a 4-bit layer is read and quantized
//      1 MiB at a time, bitsandbytes entries are installed as they complete, every other
//      tensor is read straight into its parameter;
//   4. only what the checkpoint lacked is initialised (heads as transformers does; a missing
//      4-bit layer is drawn in float32 and quantized).
import { clearPool } from '../tensor/storage.js';
import { initEmptyWeights } from '../nn/layers.js';
import { loadWeights, modelFromConfig, registerQuantizedLoader, type FromPretrainedOptions } from '../models/auto.js';
import type { HFModel } from '../models/base.js';
import type { RawConfig } from '../models/common.js';
import type { TaskType } from '../models/types.js';
import type { TensorFileReader } from '../io/tensor_file.js';
import { BitsAndBytesConfig, bnbConfigFromDict, optionsFromConfig, prepare4bitPlaceholders } from './model.js';
import type { Linear4bit } from './linear4bit.js';

const FILE_DTYPES: Record<string, string> = { F32: 'float32', BF16: 'bfloat16', F16: 'float16', F64: 'float32' };

/**
 * Builds the model of `config` for `task` and loads the checkpoint folder `dir` into it in
 * 4 bit. The quantization settings come from opts.quantizationConfig over the folder's own
 * quantization_config (a checkpoint saved in 4 bit). Returns the model in eval mode with
 * loadingInfo filled, as fromPretrained does.
 */
export function fromPretrainedIn4bit(task: TaskType, dir: string, config: RawConfig, opts: FromPretrainedOptions = {}): HFModel {
  const saved = config.quantization_config && typeof config.quantization_config === 'object'
    ? bnbConfigFromDict(config.quantization_config as Record<string, unknown>) : {};
  const bnb: BitsAndBytesConfig = { ...saved, ...(opts.quantizationConfig ?? {}) };
  if (bnb.loadIn4bit === false) throw new Error('quantizationConfig.loadIn4bit is false: only 4-bit loading is implemented');
  const qopts = optionsFromConfig(bnb);
  const model = initEmptyWeights(() => modelFromConfig(task, config, { ...opts, initWeights: false }));
  const sink = prepare4bitPlaceholders(model, { ...qopts, releasePool: false });
  const layerKeys = new Set(sink.paths.map((p) => p + '.weight'));
  const info = loadWeights(model, dir, opts, {
    keys: layerKeys,
    take(key: string, name: string, r: TensorFileReader): boolean {
      const p = sink.layerOf(key);
      if (!p) return false;
      const ti = r.info(name);
      const fileDtype = FILE_DTYPES[ti.dtype];
      if (key === p + '.weight' && fileDtype) {
        sink.floatWeight(p, ti.shape, fileDtype, (s, out) => r.readFloat32(name, s, out));
      } else {
        // bitsandbytes entries: bytes stay bytes (no int32 widening), floats are small.
        sink.stateEntry(p, key, ti.dtype === 'U8' ? r.bytes(name) : r.tensor(name));
      }
      return true;
    },
  });
  const incomplete = sink.incomplete();
  if (incomplete.length) throw new Error(`4-bit checkpoint ${dir} is incomplete: ${incomplete.join('; ')}`);
  // What the checkpoint lacked: float modules get transformers' init, 4-bit layers a drawn
  // float32 weight that is then quantized (as transformers initialises before quantizing).
  model.initParameters(info.missingKeys);
  const std = typeof config.initializer_range === 'number' ? config.initializer_range : 0.02;
  for (const p of sink.unloaded()) {
    const m = model.getSubmodule(p) as Linear4bit;
    const w = new Float32Array(m.inFeatures * m.outFeatures);
    for (let i = 0; i < w.length; i++) w[i] = model.rng.normal() * std;
    m.quantizeWeight(w);
    m.bias?.data.fill(0);
  }
  model.loadingInfo = info;
  model.eval();
  clearPool();
  return model;
}

registerQuantizedLoader(fromPretrainedIn4bit);
