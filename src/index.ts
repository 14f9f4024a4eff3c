// peft-ts: LoRA / QLoRA fine-tuning of Hugging Face models on Node.js.
// The root export is what a peft / transformers user reaches for: loaders, LoRA, data,
// Trainer, generation. Everything underneath (tensor ops, kernels, file formats, model
// internals, NF4 pieces, schedulers, distributed collectives) has its own entry point:
// 'peft-ts/tensor', 'peft-ts/backends', 'peft-ts/nn', 'peft-ts/io', 'peft-ts/models',
// 'peft-ts/peft', 'peft-ts/quant', 'peft-ts/data', 'peft-ts/train', 'peft-ts/generate'.
// Importing the package selects the fastest backend that loads (native cpu, else reference).
import { initBackend } from './backends/index.js';
import './quant/load.js'; // registers the 4-bit loader behind fromPretrained({ quantizationConfig })

initBackend();

// Backend: which one runs, threads, the GPU.
export { backendName, cpuAvailable, nativeInfo, setNumThreads, getNumThreads, cudaAvailable, cudaStatus } from './backends/index.js';

// Tensors, as far as a model user touches them (inputs, outputs, no-grad inference, seeding).
export { Tensor, noGrad, tidy, keep, Rng, manualSeed, memoryStats, yieldToEventLoop, AbortError, autocast, autocastAsync } from './tensor/index.js';
export type { DType } from './tensor/index.js';
export { tensor, zeros, ones, softmax, logSoftmax } from './tensor/index.js';
export { Module } from './nn/module.js';

// Models and tokenizers (transformers).
export {
  AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoModelForSeq2SeqLM, HFModel,
  type FromPretrainedOptions, type ModelDtype, type ModelInitOptions, type LoadingInfo,
} from './models/index.js';
export type { ModelInputs, ModelOutput, TaskType } from './models/index.js';
export { Tokenizer, BatchEncoding, readSafetensors, writeSafetensors, defaultModelPath, defaultDataPath } from './io/index.js';
export type { EncodeOptions, DecodeOptions, BatchEncodeOptions, ChatMessage, ResolveOptions, PushToHubOptions, PushResult } from './io/index.js';

// LoRA / DoRA (peft).
export {
  LoraConfig, PeftModel, getPeftModel, ALL_LINEAR, addWeightedAdapter, getLayerStatus, getModelStatus,
  AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification, AutoPeftModelForTokenClassification, AutoPeftModelForSeq2SeqLM,
  type AutoPeftOptions, type LoraConfigOptions, type LoraBias, type GetPeftModelOptions, type LoadAdapterOptions, type SaveAdapterOptions,
} from './peft/index.js';

// QLoRA (bitsandbytes' NF4).
export { prepareModelForKbitTraining, type BitsAndBytesConfig, type KbitTrainingOptions } from './quant/index.js';

// Data (datasets + the tokenizing / collating steps of the transformers examples).
export {
  Dataset, loadDataset, trainTestSplit, tokenizeClassification, tokenizeCausalLM, tokenizeTokenClassification,
  DataCollatorWithPadding, DataCollatorForLanguageModeling, DataCollatorForTokenClassification, DataCollatorForSeq2Seq, tokenizeSeq2Seq,
  applyChatTemplate, formatAlpaca,
  type Row, type Batch, type DataCollator, type LabelMapping, type LoadOptions,
} from './data/index.js';

// Training (transformers' Trainer).
export {
  Trainer, TrainingArguments, SFTTrainer, SFTConfig, TrainingAbortedError, EarlyStoppingCallback, TrainerState, TrainerControl,
  classificationMetrics, tokenClassificationMetrics,
  type TrainingArgumentsInit, type TrainerOptions, type TrainOptions, type TrainOutput, type TrainProgress, type TrainerEvents,
  type TrainerCallback, type CallbackArgs, type LogEntry, type EvalPrediction, type PredictionOutput,
} from './train/index.js';

// Generation.
export { generateText, generateTextSync, generate, generateAsync, TextStreamer, pipeline } from './generate/index.js';
export type { GenerateOptions, GenerateTextOptions, CausalLM, Streamer } from './generate/index.js';
