export { generate, generateAsync, argmaxRows, sampleRows } from './generate.js';
export { isEncoderDecoder } from './seq2seq.js';
export type { CausalLM, GenerateOptions } from './generate.js';
export {
  repetitionPenaltyProcessor, noRepeatNgramProcessor, temperatureWarper, topKWarper, topPWarper,
  buildLogitsProcessors, applyProcessors,
} from './processors.js';
export type { LogitsProcessor, ProcessorOptions } from './processors.js';
export { TextStreamer } from './streamer.js';
export type { Streamer, Decoder, TextStreamerOptions } from './streamer.js';
export { generateText, generateTextSync, leftPad } from './text.js';
export type { TextTokenizer, GenerateTextOptions } from './text.js';
export { pipeline } from './pipeline.js';
export type {
  PipelineTask, PipelineOptions, TextClassificationPipeline, TokenClassificationPipeline, TextGenerationPipeline,
  ClassificationResult, TokenEntity, GeneratedText, TextClassificationOptions, TokenClassificationOptions, TextGenerationOptions, Chat,
} from './pipeline.js';
