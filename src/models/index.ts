export * from './types.js';
export { HFModel, type ModelInitOptions } from './base.js';
export {
  AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification,
  loadWeights, modelFromConfig, readConfigJson, resolveDtype, type FromPretrainedOptions, type LoadingInfo, type ModelDtype,
} from './auto.js';
export { savePretrained } from './save.js';
export { GPT2LMHeadModel, GPT2ForSequenceClassification } from './gpt2.js';
export {
  LlamaForCausalLM, LlamaForSequenceClassification, MistralForCausalLM, MistralForSequenceClassification,
  Qwen2ForCausalLM, Qwen2ForSequenceClassification,
} from './llama.js';
export {
  BertForSequenceClassification, BertForTokenClassification, RobertaForSequenceClassification, RobertaForTokenClassification,
} from './bert.js';
export { DistilBertForSequenceClassification, DistilBertForTokenClassification } from './distilbert.js';
export {
  ParallelDecoderForCausalLM, ParallelDecoderForSequenceClassification, PhiForCausalLM, PhiForSequenceClassification,
  GPTNeoXForCausalLM, GPTNeoXForSequenceClassification, GPTJForCausalLM, GPTJForSequenceClassification,
  FalconForCausalLM, FalconForSequenceClassification,
} from './parallel.js';
export { OPTForCausalLM, OPTForSequenceClassification } from './opt.js';
export { toModelConfig, attentionBias, poolLastNonPad, causalLmLoss, seqClsLoss, tokenClsLoss } from './common.js';
export { RopeCache, ropeSpec } from './rope.js';
