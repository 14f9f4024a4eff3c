export {
  readSafetensorsHeader, readSafetensors, iterSafetensors, writeSafetensors, readTensorBytes,
  loadCheckpointDir, iterCheckpointDir, openCheckpointDir, SafetensorsReader, saveCheckpointDir, checkpointShards,
  SAFETENSORS_WEIGHTS, SAFETENSORS_INDEX, PYTORCH_WEIGHTS, PYTORCH_INDEX, openTensorFile,
} from './safetensors.js';
export { TorchBinReader } from './torchbin.js';
export { unpickle, UnpicklingError } from './pickle.js';
export type { TensorFileReader, TensorMeta } from './tensor_file.js';
export type { SafetensorsHeader, TensorInfo, ReadOptions, WriteOptions } from './safetensors.js';
export { f32ToF16, f32ToBf16, bf16ToF32, f32ToF16Bits } from './half.js';
export { Tokenizer, BatchEncoding } from './tokenizer.js';
export type { EncodeOptions, DecodeOptions, BatchEncodeOptions, PaddingStrategy, Side, ChatMessage } from './tokenizer.js';
export {
  resolveModelPath, resolveLocalModelPath, downloadSnapshot, findCachedSnapshot, hubCacheDir, repoCacheFolder, isOffline,
} from './hub.js';
export type { ResolveOptions } from './hub.js';
export { loadConfig, parseConfig, labelNames, labelsOf, withNumLabels, type ConfigLabels } from './config.js';
export { hubToken, hubTokenPath, hubEndpoint, hfHome } from './hub-env.js';
export { uploadFolder, type PushToHubOptions, type PushResult } from './hub-upload.js';
export { modelCard, adapterCardMeta, type CardMeta } from './model-card.js';
