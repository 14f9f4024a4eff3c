// Llama, Mistral and Qwen2 decoders (transformers' *ForCausalLM / *ForSequenceClassification)
// with their parameter names: model.embed_tokens, model.layers.N.{input_layernorm,
// self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj}, model.norm,
// lm_head / score. Grouped-query attention, RoPE (default / linear / llama3), sliding window.
import type { Tensor } from '../tensor/tensor.js';
import { add, mul } from '../tensor/ops/basic.js';
import { rope, scaledDotProductAttention } from '../tensor/ops/nn.js';
import { ModuleList } from '../nn/module.js';
import { Embedding, Linear, RMSNorm, activation } from '../nn/layers.js';
import type { KVCache, ModelConfig, ModelInputs, ModelOutput } from './types.js';
import { HFModel, withNumLabels, type ModelInitOptions } from './base.js';
import {
  Container, appendKv, attentionBias, asModelConfig, bool, cacheLength, kvCapacity, causalLmHead, emb, lin, maybeCheckpoint,
  mergeHeads, norm, num, optNum, poolLastNonPad, positionsFor, seqClsLoss, splitHeads, str, type RawConfig,
} from './common.js';
import { RopeCache } from './rope.js';

export const DECODER_TYPES = ['llama', 'mistral', 'qwen2'] as const;

const ARCH_NAMES: Record<string, string> = { llama: 'Llama', mistral: 'Mistral', qwen2: 'Qwen2' };

abstract class DecoderBase extends HFModel {
  readonly config: ModelConfig;
  readonly baseModelPrefix = 'model';
  readonly layersPrefix = 'model.layers';
  readonly headDim: number;
  readonly numKvHeads: number;
  protected readonly act: (x: Tensor) => Tensor;
  protected readonly rope: RopeCache;
  /** Per layer: the sliding window, or null for full attention. */
  protected readonly windows: (number | null)[];

  protected override disposeBuffers(): void { this.rope.dispose(); }

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(opts);
    this.config = asModelConfig(config);
    const raw = this.config.raw, c = this.config, mt = c.modelType;
    if (!(DECODER_TYPES as readonly string[]).includes(mt)) throw new Error(`model_type '${mt}' is not a Llama-family decoder`);
    const hs = c.hiddenSize, nh = c.numHeads;
    this.numKvHeads = num(raw, ['num_key_value_heads'], nh) || nh;
    this.headDim = optNum(raw, 'head_dim') ?? hs / nh;
    if (!Number.isInteger(this.headDim)) throw new Error(`hidden_size ${hs} / num_attention_heads ${nh} is not an integer; set head_dim`);
    if (nh % this.numKvHeads !== 0) throw new Error(`num_attention_heads ${nh} is not a multiple of num_key_value_heads ${this.numKvHeads}`);
    const inter = num(raw, ['intermediate_size']);
    const eps = num(raw, ['rms_norm_eps'], 1e-6);
    const qkvBias = mt === 'qwen2' ? true : bool(raw, 'attention_bias', false);
    const oBias = mt === 'qwen2' ? false : bool(raw, 'attention_bias', false);
    const mlpBias = bool(raw, 'mlp_bias', false);
    this.act = activation(str(raw, ['hidden_act'], 'silu'));
    this.rope = new RopeCache(raw, this.headDim, c.maxPositions, Math.min(c.maxPositions, 4096));
    this.windows = layerWindows(raw, mt, c.numLayers);

    const model = this.registerModule('model', new Container());
    model.registerModule('embed_tokens', new Embedding(c.vocabSize, hs, this.rng));
    const layers: Container[] = [];
    const kvOut = this.numKvHeads * this.headDim;
    for (let i = 0; i < c.numLayers; i++) {
      const blk = new Container();
      const at = blk.registerModule('self_attn', new Container());
      at.registerModule('q_proj', new Linear(hs, nh * this.headDim, qkvBias, this.rng));
      at.registerModule('k_proj', new Linear(hs, kvOut, qkvBias, this.rng));
      at.registerModule('v_proj', new Linear(hs, kvOut, qkvBias, this.rng));
      at.registerModule('o_proj', new Linear(nh * this.headDim, hs, oBias, this.rng));
      const mlp = blk.registerModule('mlp', new Container());
      mlp.registerModule('gate_proj', new Linear(hs, inter, mlpBias, this.rng));
      mlp.registerModule('up_proj', new Linear(hs, inter, mlpBias, this.rng));
      mlp.registerModule('down_proj', new Linear(inter, hs, mlpBias, this.rng));
      blk.registerModule('input_layernorm', new RMSNorm(hs, eps));
      blk.registerModule('post_attention_layernorm', new RMSNorm(hs, eps));
      layers.push(blk);
    }
    model.registerModule('layers', new ModuleList(layers));
    model.registerModule('norm', new RMSNorm(hs, eps));
  }

  defaultLoraTargets(): string[] { return ['q_proj', 'v_proj']; }
  override ignoredUnexpectedKeys(): RegExp[] { return [/rotary_emb\.inv_freq$/]; }

  protected body(inputs: ModelInputs): { hidden: Tensor; cache?: KVCache } {
    const { inputIds, attentionMask, positionIds, pastKeyValues, useCache } = inputs;
    const kvCap = kvCapacity(pastKeyValues, inputIds.shape[1], inputs.maxCacheLength);
    if (inputIds.dtype !== 'int32' || inputIds.ndim !== 2) throw new Error('inputIds must be an int32 [B, T] tensor');
    const [b, t] = inputIds.shape;
    const past = cacheLength(pastKeyValues);
    const pos = positionsFor(b, t, past, positionIds);
    let maxPos = 0;
    for (const p of pos.ints) { if (p < 0) throw new Error(`negative position id ${p}`); if (p > maxPos) maxPos = p; }
    const { cos, sin } = this.rope.tables(maxPos);
    const masks = new Map<number | null, Tensor | null>();
    const maskFor = (w: number | null): Tensor | null => {
      if (!masks.has(w)) masks.set(w, attentionBias(b, t, past, attentionMask, { causal: true, slidingWindow: w, capacity: kvCap }));
      return masks.get(w)!;
    };
    const model = this.getSubmodule('model');
    let h = emb(model, 'embed_tokens', inputIds);
    const cache: KVCache | null = useCache ? { layers: [], length: past + t } : null;
    const nh = this.config.numHeads, nkv = this.numKvHeads, hd = this.headDim;
    const train = this.training;
    const attnP = num(this.config.raw, ['attention_dropout'], 0);
    const ckpt = this.gradientCheckpointing && train && !useCache;
    const layers = model.getSubmodule('layers') as ModuleList<Container>;
    let i = 0;
    for (const blk of layers) {
      const li = i++;
      const mask = maskFor(this.windows[li]);
      const run = (x: Tensor): Tensor => {
        const a = norm(blk, 'input_layernorm', x);
        const q = rope(splitHeads(lin(blk, 'self_attn.q_proj', a), nh, hd), cos, sin, pos);
        const k = rope(splitHeads(lin(blk, 'self_attn.k_proj', a), nkv, hd), cos, sin, pos);
        const v = splitHeads(lin(blk, 'self_attn.v_proj', a), nkv, hd);
        const kv = appendKv(pastKeyValues, cache, li, k, v, kvCap);
        const o = scaledDotProductAttention(q, kv.k, kv.v, { mask, scale: 1 / Math.sqrt(hd), dropout: attnP, training: train, rng: this.rng });
        const x2 = add(x, lin(blk, 'self_attn.o_proj', mergeHeads(o)));
        const m = norm(blk, 'post_attention_layernorm', x2);
        const g = mul(this.act(lin(blk, 'mlp.gate_proj', m)), lin(blk, 'mlp.up_proj', m));
        return add(x2, lin(blk, 'mlp.down_proj', g));
      };
      h = maybeCheckpoint(ckpt, run, h, this.rng);
    }
    return { hidden: norm(model, 'norm', h), cache: cache ?? undefined };
  }
}

/** Sliding window per layer as transformers applies it for each model type. */
function layerWindows(raw: RawConfig, mt: string, n: number): (number | null)[] {
  const w = optNum(raw, 'sliding_window');
  if (mt === 'mistral') return Array(n).fill(w);
  if (mt === 'qwen2') {
    const use = bool(raw, 'use_sliding_window', false) && w !== null;
    const types = Array.isArray(raw.layer_types) ? (raw.layer_types as string[]) : null;
    const maxWindowLayers = num(raw, ['max_window_layers'], 28);
    return Array.from({ length: n }, (_, i) => {
      const sliding = types ? types[i] === 'sliding_attention' : i >= maxWindowLayers;
      return use && sliding ? w : null;
    });
  }
  return Array(n).fill(null);
}

/** LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM. */
export class LlamaForCausalLM extends DecoderBase {
  readonly task = 'CAUSAL_LM' as const;
  readonly architecture: string;
  readonly tied: boolean;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(config, opts);
    this.architecture = `${ARCH_NAMES[this.config.modelType]}ForCausalLM`;
    this.tied = bool(this.config.raw, 'tie_word_embeddings', false);
    const head = this.registerModule('lm_head', new Linear(this.config.hiddenSize, this.config.vocabSize, false, this.rng));
    this.initRandom();
    if (this.tied) head.registerParameter('weight', (this.getSubmodule('model.embed_tokens') as Embedding).weight);
  }

  override tiedWeightKeys(): string[] { return this.tied ? ['lm_head.weight'] : []; }
  override outputHeadNames(): string[] { return ['lm_head']; }

  forward(inputs: ModelInputs): ModelOutput {
    const { hidden, cache } = this.body(inputs);
    const { logits, loss } = causalLmHead(this, hidden, inputs.labels, inputs.returnLogits);
    return { logits, loss, pastKeyValues: cache };
  }
}

/** LlamaForSequenceClassification (and Mistral / Qwen2): score on the last non-pad token. */
export class LlamaForSequenceClassification extends DecoderBase {
  readonly task = 'SEQ_CLS' as const;
  readonly architecture: string;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(withNumLabels(asModelConfig(config), opts.numLabels), opts);
    this.architecture = `${ARCH_NAMES[this.config.modelType]}ForSequenceClassification`;
    this.registerModule('score', new Linear(this.config.hiddenSize, this.numLabels, false, this.rng));
    this.initRandom();
  }

  override classifierModuleNames(): string[] { return ['classifier', 'score']; }
  override outputHeadNames(): string[] { return ['score']; }

  forward(inputs: ModelInputs): ModelOutput {
    const { hidden, cache } = this.body(inputs);
    const logits = lin(this, 'score', poolLastNonPad(hidden, inputs.inputIds, this.padTokenId));
    const loss = inputs.labels ? seqClsLoss(logits, inputs.labels, this.numLabels, this.config.raw.problem_type as string | undefined) : undefined;
    return { logits, loss, pastKeyValues: cache };
  }
}

export { LlamaForCausalLM as MistralForCausalLM, LlamaForCausalLM as Qwen2ForCausalLM };
export { LlamaForSequenceClassification as MistralForSequenceClassification, LlamaForSequenceClassification as Qwen2ForSequenceClassification };

