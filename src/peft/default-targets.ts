// peft 0.21's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING (peft/utils/constants.py),
// for the model types this library builds: a LoraConfig without targetModules gets these,
// by config.json's model_type, exactly as peft's _prepare_adapter_config picks them. A
// model_type peft has no entry for (phi3, modernbert) needs explicit targetModules, as in peft.
export const LORA_TARGET_MODULES_BY_MODEL_TYPE: Readonly<Record<string, readonly string[]>> = {
  t5: ['q', 'v'],
  mt5: ['q', 'v'],
  bart: ['q_proj', 'v_proj'],
  gpt2: ['c_attn'],
  opt: ['q_proj', 'v_proj'],
  gptj: ['q_proj', 'v_proj'],
  gpt_neox: ['query_key_value'],
  bert: ['query', 'value'],
  roberta: ['query', 'value'],
  'deberta-v2': ['query_proj', 'value_proj'],
  llama: ['q_proj', 'v_proj'],
  falcon: ['query_key_value'],
  mistral: ['q_proj', 'v_proj'],
  phi: ['q_proj', 'v_proj', 'fc1', 'fc2'],
  gemma: ['q_proj', 'v_proj'],
  gemma2: ['q_proj', 'v_proj'],
  gemma3_text: ['q_proj', 'v_proj'],
  qwen2: ['q_proj', 'v_proj'],
  qwen3: ['q_proj', 'v_proj'],
};

/** peft's default LoRA targets for a model_type, or null when peft has none. */
export function defaultTargetModules(modelType: string | undefined): string[] | null {
  const t = modelType === undefined ? undefined : LORA_TARGET_MODULES_BY_MODEL_TYPE[modelType];
  return t ? [...t] : null;
}
