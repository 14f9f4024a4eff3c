// peft-ts: LoRA / QLoRA fine-tuning of Hugging Face models on Node.js.
// Importing the package selects the fastest backend that loads (native cpu, else reference).
import { initBackend } from './backends/index.js';

initBackend();

export * from './tensor/index.js';
export { initBackend, backendName, cpuAvailable, nativeInfo, setNumThreads, getNumThreads } from './backends/index.js';
export { cudaAvailable, cudaStatus, cudaInfo, cudaStats, cudaEmptyCache, setCudaTf32 } from './backends/index.js';
export * from './nn/module.js';
export * from './nn/layers.js';
export * from './nn/dtype.js';
export * from './io/index.js';
export * from './models/index.js';
export * from './peft/index.js';
export * from './quant/index.js';
export * from './data/index.js';
export * from './train/index.js';
export * from './generate/index.js';
// Both io and data name these; the tokenizer's own types win.
export type { ChatMessage, EncodeOptions } from './io/index.js';
