// What every model exposes, so that peft, the trainer and generation need not know the
// architecture. Mirrors transformers' PreTrainedModel / ModelOutput where it can.
import type { Tensor } from '../tensor/tensor.js';
import { Module } from '../nn/module.js';

export type TaskType = 'CAUSAL_LM' | 'SEQ_CLS' | 'TOKEN_CLS' | 'SEQ_2_SEQ_LM';

/**
 * Per layer: keys and values [B, Hkv, C, D]; positions 0..length-1 are filled, C >= length
 * is the capacity (the rest zeros). Under noGrad a forward writes its new positions into
 * these buffers in place (growing them by doubling when full), so a cache is consumed by the
 * forward that extends it.
 */
export interface KVCache {
  layers: { k: Tensor; v: Tensor }[];
  /** Number of positions already cached. */
  length: number;
  /**
   * Encoder-decoder models: per decoder layer, the cross-attention keys and values [B, H, S, D]
   * of the encoder output, computed by the first decoder step and reused by the later ones.
   */
  cross?: { k: Tensor; v: Tensor }[];
}

export interface ModelInputs {
  /** int32 [B, T] */
  inputIds: Tensor;
  /** int32 [B, S] of 1 (attend) / 0 (padding); S = past length + T (encoder-decoder: the encoder's mask). */
  attentionMask?: Tensor | null;
  /** Encoder-decoder models: int32 [B, T'] decoder inputs; default: labels shifted right, as transformers does. */
  decoderInputIds?: Tensor | null;
  /** Encoder-decoder models: int32 [B, past + T'] decoder mask (default: causal only). */
  decoderAttentionMask?: Tensor | null;
  /** Encoder-decoder models: the encoder's last hidden states [B, S, H]; the encoder is skipped (generate passes them). */
  encoderOutputs?: Tensor | null;
  /** int32: [B, T] for causal LM, seq2seq (the targets) and token classification (-100 ignored), [B] for sequence classification. */
  labels?: Tensor | null;
  positionIds?: Tensor | null;
  /** int32 [B, T] segment ids (BERT-style encoders); zeros when omitted. */
  tokenTypeIds?: Tensor | null;
  pastKeyValues?: KVCache | null;
  useCache?: boolean;
  /** The longest the KV cache will get (generate passes prompt + max new tokens): its doubling growth stops there. */
  maxCacheLength?: number | null;
  /**
   * Causal LM with labels: false skips the [B, T, V] logits (the loss comes from the lm head
   * and cross-entropy fused a chunk of rows at a time) and logits is then [B, 0, V]. The
   * Trainer's training step uses it; default true.
   */
  returnLogits?: boolean;
  /**
   * Causal LM without labels: logits for the last N positions only ([B, N, V]), so that
   * generation runs the LM head on one row per sequence instead of the whole prompt
   * (transformers' logits_to_keep). 0 (default) keeps every position.
   */
  logitsToKeep?: number;
}

export interface ModelOutput {
  /** [B, T, V] (causal LM), [B, numLabels] (sequence cls), [B, T, numLabels] (token cls). */
  logits: Tensor;
  loss?: Tensor;
  pastKeyValues?: KVCache;
  /** Encoder-decoder models: the encoder's last hidden states [B, S, H]. */
  encoderLastHiddenState?: Tensor;
}

/** Parsed config.json: the raw object plus the few fields every consumer needs. */
export interface ModelConfig {
  modelType: string;
  raw: Record<string, unknown>;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  maxPositions: number;
  /** Classes of a classification head, as transformers resolves num_labels / id2label (2 by default). */
  numLabels?: number;
  /** Label names by id ("0" -> "O"), resolved with numLabels (LABEL_i when config.json has none). */
  id2label?: Record<string, string>;
  label2id?: Record<string, number>;
}

export abstract class PreTrainedModel extends Module {
  abstract readonly config: ModelConfig;
  abstract readonly task: TaskType;
  /** Prefix of the decoder/encoder stack inside this model ("transformer.h", "model.layers", ...). */
  abstract readonly layersPrefix: string;
  abstract forward(inputs: ModelInputs): ModelOutput;
  /** Names of heads peft keeps trainable for classification (peft's modules_to_save default). */
  classifierModuleNames(): string[] { return []; }
  /** Default LoRA target modules for this architecture (peft's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING). */
  abstract defaultLoraTargets(): string[];
  /** Parameters that transformers keeps as buffers (saved and loaded, never trained nor counted), e.g. BART's final_logits_bias. */
  bufferNames(): string[] { return []; }
  /** Output-head module names that "all-linear" must never target. */
  outputHeadNames(): string[] { return []; }
  /** Turns recomputation of each layer's activations in backward on or off. */
  gradientCheckpointing = false;
}
