// peft for TypeScript: LoRA / DoRA adapters with peft 0.21's semantics and file format.
export { LoraConfig, ALL_LINEAR, PEFT_FORMAT_VERSION, type LoraConfigOptions, type LoraBias, type InitLoraWeights } from './config.js';
export { LoraLinear, ModuleDict, DoraMagnitude, isLinearLike, type DequantizableLinear } from './layer.js';
export { LoraEmbedding, ParameterDict, isLoraLayer, type LoraLayer } from './embedding.js';
export { ModulesToSaveWrapper } from './modules-to-save.js';
export { cloneModule } from './clone.js';
export { checkTargetModule, rankFor, alphaFor } from './targets.js';
export { inspectModules, CLASSIFIER_MODULE_NAMES } from './inject.js';
export { PeftModel, LoraModel, getPeftModel, type GetPeftModelOptions, type LoadAdapterOptions } from './model.js';
export {
  ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, getPeftModelStateDict, readAdapterConfig, type SaveAdapterOptions,
} from './save.js';
export { setPeftWarningHandler, captureWarnings } from './warn.js';
export {
  AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification, AutoPeftModelForTokenClassification, AutoPeftModelForSeq2SeqLM,
  type AutoPeftOptions,
} from './auto.js';
export { readAdapterLabels, savedHeadSize, LABEL_MAPPING_FILE, type AdapterLabels } from './labels.js';
