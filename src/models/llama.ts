// Llama-family decoders (transformers' *ForCausalLM / *ForSequenceClassification): Llama,
// Mistral, Qwen2, Qwen3, Gemma 1/2/3 (text) and Phi-3, with their parameter names:
// model.embed_tokens, model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
// post_attention_layernorm, mlp.{gate,up,down}_proj}, model.norm, lm_head / score. The
// model types differ only in the switches of `Variant` (q/k norms, Gemma's norms and
// embedding scale, Gemma 2's sandwich norms and soft-capping, Phi-3's fused projections).
// Grouped-query attention, RoPE (all rope types, partial rotary), per-layer sliding windows.
import type { Tensor } from '../tensor/tensor.js';
import { add, affine, mul, reshape, split } from '../tensor/ops/basic.js';
import { dropout } from '../tensor/ops/nn.js';
import { ModuleList } from '../nn/module.js';
import { Embedding, Linear, RMSNorm, activation } from '../nn/layers.js';
import type { KVCache, ModelConfig, ModelInputs, ModelOutput } from './types.js';
import { HFModel, withNumLabels, type ModelInitOptions } from './base.js';
import {
  Container, appendKv, attentionBias, asModelConfig, bool, cacheLength, kvCapacity, causalLmHead, lastTokenClassifierHead, causalLmLoss, keptPositions, emb, lin, maybeCheckpoint,
  mergeHeads, norm, num, optNum, positionsFor, splitHeads, str, type RawConfig,
} from './common.js';
import { RopeCache } from './rope.js';
import { attend, partialRope, softcap } from './attention.js';

export const DECODER_TYPES = ['llama', 'mistral', 'qwen2', 'qwen3', 'gemma', 'gemma2', 'gemma3_text', 'phi3'] as const;
/** The types with a sequence-classification head here (all: transformers' generic one). */
export const SEQ_CLS_DECODER_TYPES = DECODER_TYPES;

const ARCH_NAMES: Record<string, string> = {
  llama: 'Llama', mistral: 'Mistral', qwen2: 'Qwen2', qwen3: 'Qwen3', gemma: 'Gemma', gemma2: 'Gemma2', gemma3_text: 'Gemma3', phi3: 'Phi3',
};

/** What a Llama-family model_type changes in the block (transformers' per-model classes). */
interface Variant {
  /** Qwen3, Gemma 3: RMSNorm over head_dim on q and k (self_attn.q_norm / k_norm) before RoPE. */
  qkNorm?: boolean;
  /** Gemma: (1 + w) RMSNorms and embeddings scaled by sqrt(hidden_size). */
  gemma?: boolean;
  /** Gemma 2/3: norms after attention and around the MLP (pre/post_feedforward_layernorm). */
  sandwich?: boolean;
  /** Gemma 2/3: scores scaled by query_pre_attn_scalar^-0.5, optional logit soft-capping. */
  gemma2?: boolean;
  /** Phi-3: fused self_attn.qkv_proj and mlp.gate_up_proj. */
  fused?: boolean;
  /** Config key of the activation. */
  actKey: string;
  /** transformers' config defaults where config.json leaves a key out. */
  defaults: { headDim?: number; eps: number; tie: boolean; act: string };
}

const VARIANTS: Record<string, Variant> = {
  llama: { actKey: 'hidden_act', defaults: { eps: 1e-6, tie: false, act: 'silu' } },
  mistral: { actKey: 'hidden_act', defaults: { eps: 1e-6, tie: false, act: 'silu' } },
  qwen2: { actKey: 'hidden_act', defaults: { eps: 1e-6, tie: false, act: 'silu' } },
  qwen3: { qkNorm: true, actKey: 'hidden_act', defaults: { headDim: 128, eps: 1e-6, tie: false, act: 'silu' } },
  gemma: { gemma: true, actKey: 'hidden_act', defaults: { headDim: 256, eps: 1e-6, tie: true, act: 'gelu_pytorch_tanh' } },
  gemma2: { gemma: true, sandwich: true, gemma2: true, actKey: 'hidden_activation', defaults: { headDim: 256, eps: 1e-6, tie: true, act: 'gelu_pytorch_tanh' } },
  gemma3_text: { gemma: true, sandwich: true, gemma2: true, qkNorm: true, actKey: 'hidden_activation', defaults: { headDim: 256, eps: 1e-6, tie: true, act: 'gelu_pytorch_tanh' } },
  phi3: { fused: true, actKey: 'hidden_act', defaults: { eps: 1e-5, tie: false, act: 'silu' } },
};

/** A config value that may be absent (the default applies) or null (the feature is off). */
function nullableNum(raw: RawConfig, key: string, def: number | null): number | null {
  if (!(key in raw)) return def;
  return typeof raw[key] === 'number' ? (raw[key] as number) : null;
}

abstract class DecoderBase extends HFModel {
  readonly config: ModelConfig;
  readonly baseModelPrefix = 'model';
  readonly layersPrefix = 'model.layers';
  readonly headDim: number;
  readonly numKvHeads: number;
  protected readonly variant: Variant;
  protected readonly act: (x: Tensor) => Tensor;
  /** RoPE per layer (Gemma 3: one for sliding, one for full attention layers). */
  protected readonly ropes: RopeCache[];
  /** Per layer: the sliding window, or null for full attention. */
  protected readonly windows: (number | null)[];
  protected readonly attnScale: number;
  protected readonly attnSoftcap: number | null;
  protected readonly finalSoftcap: number | null;
  protected readonly embedScale: number;
  protected readonly inter: number;

  protected override disposeBuffers(): void { for (const r of new Set(this.ropes)) r.dispose(); }

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(opts);
    this.config = asModelConfig(config);
    const raw = this.config.raw, c = this.config, mt = c.modelType;
    if (!(DECODER_TYPES as readonly string[]).includes(mt)) throw new Error(`model_type '${mt}' is not a Llama-family decoder`);
    const vr = this.variant = VARIANTS[mt];
    const hs = c.hiddenSize, nh = c.numHeads;
    this.numKvHeads = num(raw, ['num_key_value_heads'], nh) || nh;
    this.headDim = optNum(raw, 'head_dim') ?? vr.defaults.headDim ?? hs / nh;
    if (!Number.isInteger(this.headDim)) throw new Error(`hidden_size ${hs} / num_attention_heads ${nh} is not an integer; set head_dim`);
    if (nh % this.numKvHeads !== 0) throw new Error(`num_attention_heads ${nh} is not a multiple of num_key_value_heads ${this.numKvHeads}`);
    if (raw.use_bidirectional_attention === true) throw new Error(`${mt}: use_bidirectional_attention is not supported (causal LM only)`);
    const inter = this.inter = num(raw, ['intermediate_size']);
    const eps = num(raw, ['rms_norm_eps'], vr.defaults.eps);
    const bias = bool(raw, 'attention_bias', false);
    const qkvBias = mt === 'qwen2' ? true : bias;
    const oBias = mt === 'qwen2' ? false : bias;
    const mlpBias = mt === 'llama' || mt === 'mistral' ? bool(raw, 'mlp_bias', false) : false;
    this.act = activation(str(raw, [vr.actKey], vr.defaults.act));
    this.windows = layerWindows(raw, mt, c.numLayers);
    this.ropes = layerRopes(raw, mt, c.numLayers, this.headDim, c.maxPositions);
    this.attnScale = vr.gemma2 ? num(raw, ['query_pre_attn_scalar'], 256) ** -0.5 : 1 / Math.sqrt(this.headDim);
    this.attnSoftcap = vr.gemma2 ? nullableNum(raw, 'attn_logit_softcapping', mt === 'gemma2' ? 50 : null) : null;
    this.finalSoftcap = vr.gemma2 ? nullableNum(raw, 'final_logit_softcapping', mt === 'gemma2' ? 30 : null) : null;
    this.embedScale = vr.gemma ? Math.fround(Math.sqrt(hs)) : 1;

    const norm = (d: number) => new RMSNorm(d, eps, !!vr.gemma);
    const model = this.registerModule('model', new Container());
    model.registerModule('embed_tokens', new Embedding(c.vocabSize, hs, this.rng));
    const layers: Container[] = [];
    const hd = this.headDim, kvOut = this.numKvHeads * hd;
    for (let i = 0; i < c.numLayers; i++) {
      const blk = new Container();
      const at = blk.registerModule('self_attn', new Container());
      if (vr.fused) {
        at.registerModule('qkv_proj', new Linear(hs, nh * hd + 2 * kvOut, false, this.rng));
      } else {
        at.registerModule('q_proj', new Linear(hs, nh * hd, qkvBias, this.rng));
        at.registerModule('k_proj', new Linear(hs, kvOut, qkvBias, this.rng));
        at.registerModule('v_proj', new Linear(hs, kvOut, qkvBias, this.rng));
      }
      at.registerModule('o_proj', new Linear(nh * hd, hs, vr.fused ? false : oBias, this.rng));
      if (vr.qkNorm) {
        at.registerModule('q_norm', norm(hd));
        at.registerModule('k_norm', norm(hd));
      }
      const mlp = blk.registerModule('mlp', new Container());
      if (vr.fused) {
        mlp.registerModule('gate_up_proj', new Linear(hs, 2 * inter, false, this.rng));
      } else {
        mlp.registerModule('gate_proj', new Linear(hs, inter, mlpBias, this.rng));
        mlp.registerModule('up_proj', new Linear(hs, inter, mlpBias, this.rng));
      }
      mlp.registerModule('down_proj', new Linear(inter, hs, mlpBias, this.rng));
      blk.registerModule('input_layernorm', norm(hs));
      blk.registerModule('post_attention_layernorm', norm(hs));
      if (vr.sandwich) {
        blk.registerModule('pre_feedforward_layernorm', norm(hs));
        blk.registerModule('post_feedforward_layernorm', norm(hs));
      }
      layers.push(blk);
    }
    model.registerModule('layers', new ModuleList(layers));
    model.registerModule('norm', norm(hs));
  }

  /** tie_word_embeddings as the model_type's config class defaults it. */
  protected tiesByDefault(): boolean { return this.variant.defaults.tie; }

  /** Phi-3's attention is one fused qkv_proj: peft has no default for it (pass targetModules). */
  defaultLoraTargets(): string[] { return this.variant.fused ? [] : ['q_proj', 'v_proj']; }
  override ignoredUnexpectedKeys(): RegExp[] { return [/rotary_emb\.inv_freq$/]; }

  /** q, k, v [B, H, T, D] of one block (before RoPE). */
  private qkv(blk: Container, a: Tensor): [Tensor, Tensor, Tensor] {
    const nh = this.config.numHeads, nkv = this.numKvHeads, hd = this.headDim;
    let q: Tensor, k: Tensor, v: Tensor;
    if (this.variant.fused) {
      [q, k, v] = split(lin(blk, 'self_attn.qkv_proj', a), [nh * hd, nkv * hd, nkv * hd], -1);
    } else {
      q = lin(blk, 'self_attn.q_proj', a); k = lin(blk, 'self_attn.k_proj', a); v = lin(blk, 'self_attn.v_proj', a);
    }
    if (this.variant.qkNorm) {
      // Normalised per head, over head_dim, as transformers' q_norm(view(..., -1, head_dim)).
      const [b, t] = a.shape;
      q = reshape(norm(blk, 'self_attn.q_norm', reshape(q, [b, t, nh, hd])), [b, t, nh * hd]);
      k = reshape(norm(blk, 'self_attn.k_norm', reshape(k, [b, t, nkv, hd])), [b, t, nkv * hd]);
    }
    return [splitHeads(q, nh, hd), splitHeads(k, nkv, hd), splitHeads(v, nkv, hd)];
  }

  private mlpOut(blk: Container, m: Tensor): Tensor {
    let gate: Tensor, up: Tensor;
    if (this.variant.fused) [gate, up] = split(lin(blk, 'mlp.gate_up_proj', m), [this.inter, this.inter], -1);
    else { gate = lin(blk, 'mlp.gate_proj', m); up = lin(blk, 'mlp.up_proj', m); }
    return lin(blk, 'mlp.down_proj', mul(this.act(gate), up));
  }

  protected body(inputs: ModelInputs): { hidden: Tensor; cache?: KVCache } {
    const { inputIds, attentionMask, positionIds, pastKeyValues, useCache } = inputs;
    const kvCap = kvCapacity(pastKeyValues, inputIds.shape[1], inputs.maxCacheLength);
    if (inputIds.dtype !== 'int32' || inputIds.ndim !== 2) throw new Error('inputIds must be an int32 [B, T] tensor');
    const [b, t] = inputIds.shape;
    const past = cacheLength(pastKeyValues);
    const pos = positionsFor(b, t, past, positionIds);
    let maxPos = 0;
    for (const p of pos.ints) { if (p < 0) throw new Error(`negative position id ${p}`); if (p > maxPos) maxPos = p; }
    const tables = new Map<RopeCache, { cos: Tensor; sin: Tensor }>();
    for (const r of this.ropes) if (!tables.has(r)) tables.set(r, r.tables(maxPos));
    const masks = new Map<number | null, Tensor | null>();
    const maskFor = (w: number | null): Tensor | null => {
      if (!masks.has(w)) masks.set(w, attentionBias(b, t, past, attentionMask, { causal: true, slidingWindow: w, capacity: kvCap }));
      return masks.get(w)!;
    };
    const model = this.getSubmodule('model');
    let h = emb(model, 'embed_tokens', inputIds);
    if (this.embedScale !== 1) h = affine(h, this.embedScale, 0);
    const cache: KVCache | null = useCache ? { layers: [], length: past + t } : null;
    const train = this.training, raw = this.config.raw;
    const attnP = num(raw, ['attention_dropout'], 0);
    const residP = this.variant.fused ? num(raw, ['resid_pdrop'], 0) : 0;
    if (this.variant.fused) h = dropout(h, num(raw, ['embd_pdrop'], 0), train, this.rng);
    const ckpt = this.gradientCheckpointing && train && !useCache;
    const sandwich = !!this.variant.sandwich;
    const layers = model.getSubmodule('layers') as ModuleList<Container>;
    let i = 0;
    for (const blk of layers) {
      const li = i++;
      const mask = maskFor(this.windows[li]);
      const { cos, sin } = tables.get(this.ropes[li])!;
      const run = (x: Tensor): Tensor => {
        const a = norm(blk, 'input_layernorm', x);
        const [q0, k0, v] = this.qkv(blk, a);
        const q = partialRope(q0, cos, sin, pos), k = partialRope(k0, cos, sin, pos);
        const kv = appendKv(pastKeyValues, cache, li, k, v, kvCap);
        const o = attend(q, kv.k, kv.v, { mask, scale: this.attnScale, softcap: this.attnSoftcap, dropout: attnP, training: train, rng: this.rng });
        let ao = lin(blk, 'self_attn.o_proj', mergeHeads(o));
        if (sandwich) ao = norm(blk, 'post_attention_layernorm', ao);
        const x2 = add(x, dropout(ao, residP, train, this.rng));
        const m = norm(blk, sandwich ? 'pre_feedforward_layernorm' : 'post_attention_layernorm', x2);
        let f = this.mlpOut(blk, m);
        if (sandwich) f = norm(blk, 'post_feedforward_layernorm', f);
        return add(x2, dropout(f, residP, train, this.rng));
      };
      h = maybeCheckpoint(ckpt, run, h, this.rng);
    }
    return { hidden: norm(model, 'norm', h), cache: cache ?? undefined };
  }
}

/** Sliding window per layer as transformers applies it for each model type. */
function layerWindows(raw: RawConfig, mt: string, n: number): (number | null)[] {
  const w = optNum(raw, 'sliding_window');
  const types = Array.isArray(raw.layer_types) ? (raw.layer_types as string[]) : null;
  if (types && types.length !== n) throw new Error(`layer_types has ${types.length} entries for ${n} layers`);
  if (mt === 'mistral' || mt === 'phi3') return Array(n).fill(w);
  if (mt === 'qwen2' || mt === 'qwen3') {
    const use = bool(raw, 'use_sliding_window', false) && w !== null;
    const maxWindowLayers = num(raw, ['max_window_layers'], 28);
    return Array.from({ length: n }, (_, i) => {
      const sliding = types ? types[i] === 'sliding_attention' : i >= maxWindowLayers;
      return use && sliding ? w : null;
    });
  }
  if (mt === 'gemma2' || mt === 'gemma3_text') {
    const win = 'sliding_window' in raw ? w : 4096;
    return gemmaLayerTypes(raw, mt, n).map((ty) => (ty === 'sliding_attention' ? win : null));
  }
  return Array(n).fill(null);
}

/** Gemma 2: every other layer slides (0, 2, ..); Gemma 3: all but every sliding_window_pattern-th. */
function gemmaLayerTypes(raw: RawConfig, mt: string, n: number): string[] {
  if (Array.isArray(raw.layer_types)) return raw.layer_types as string[];
  const pattern = mt === 'gemma2' ? 2 : num(raw, ['sliding_window_pattern', '_sliding_window_pattern'], 6);
  return Array.from({ length: n }, (_, i) => ((i + 1) % pattern ? 'sliding_attention' : 'full_attention'));
}

/**
 * RoPE per layer. Gemma 3 keeps rope_parameters per layer type (full_attention: rope_theta
 * 1e6 by default, sliding_attention: rope_local_base_freq or 1e4); the others have one.
 */
function layerRopes(raw: RawConfig, mt: string, n: number, headDim: number, maxPositions: number): RopeCache[] {
  const initial = Math.min(maxPositions, 4096);
  if (mt !== 'gemma3_text') {
    const r = new RopeCache(raw, headDim, maxPositions, initial);
    return Array(n).fill(r);
  }
  const params = (raw.rope_parameters && typeof raw.rope_parameters === 'object' ? raw.rope_parameters : {}) as Record<string, unknown>;
  const legacy = (raw.rope_scaling && typeof raw.rope_scaling === 'object' ? raw.rope_scaling : {}) as Record<string, unknown>;
  const forType = (ty: string): RopeCache => {
    const own = (params[ty] && typeof params[ty] === 'object' ? params[ty] : {}) as Record<string, unknown>;
    const theta = ty === 'full_attention' ? (raw.rope_theta ?? 1e6) : (raw.rope_local_base_freq ?? 1e4);
    const p = { rope_type: 'default', rope_theta: theta, ...(ty === 'full_attention' ? legacy : {}), ...own };
    return new RopeCache({ rope_parameters: p, max_position_embeddings: maxPositions }, headDim, maxPositions, initial);
  };
  const byType = new Map<string, RopeCache>();
  return gemmaLayerTypes(raw, mt, n).map((ty) => {
    if (!byType.has(ty)) byType.set(ty, forType(ty));
    return byType.get(ty)!;
  });
}

/** LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM. */
export class LlamaForCausalLM extends DecoderBase {
  readonly task = 'CAUSAL_LM' as const;
  readonly architecture: string;
  readonly tied: boolean;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(config, opts);
    this.architecture = `${ARCH_NAMES[this.config.modelType]}ForCausalLM`;
    this.tied = bool(this.config.raw, 'tie_word_embeddings', this.tiesByDefault());
    const head = this.registerModule('lm_head', new Linear(this.config.hiddenSize, this.config.vocabSize, false, this.rng));
    this.initRandom();
    if (this.tied) head.registerParameter('weight', (this.getSubmodule('model.embed_tokens') as Embedding).weight);
  }

  override tiedWeightKeys(): string[] { return this.tied ? ['lm_head.weight'] : []; }
  override outputHeadNames(): string[] { return ['lm_head']; }

  forward(inputs: ModelInputs): ModelOutput {
    const { hidden, cache } = this.body(inputs);
    if (this.finalSoftcap) {
      // Gemma 2: the loss is taken on the soft-capped logits, so the fused head+loss cannot be used.
      const logits = softcap(lin(this, 'lm_head', keptPositions(hidden, inputs.logitsToKeep, inputs.labels)), this.finalSoftcap);
      return { logits, loss: inputs.labels ? causalLmLoss(logits, inputs.labels) : undefined, pastKeyValues: cache };
    }
    const { logits, loss } = causalLmHead(this, hidden, inputs.labels, inputs.returnLogits, inputs.logitsToKeep);
    return { logits, loss, pastKeyValues: cache };
  }
}

/** LlamaForSequenceClassification (and Mistral / Qwen2): score on the last non-pad token. */
export class LlamaForSequenceClassification extends DecoderBase {
  readonly task = 'SEQ_CLS' as const;
  readonly architecture: string;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(withNumLabels(asModelConfig(config), opts.numLabels), opts);
    // Gemma 3's text-only classifier is Gemma3TextForSequenceClassification (Gemma3For... is the multimodal one).
    const stem = this.config.modelType === 'gemma3_text' ? 'Gemma3Text' : ARCH_NAMES[this.config.modelType];
    this.architecture = `${stem}ForSequenceClassification`;
    this.registerModule('score', new Linear(this.config.hiddenSize, this.numLabels, false, this.rng));
    this.initRandom();
  }

  override classifierModuleNames(): string[] { return ['classifier', 'score']; }
  override outputHeadNames(): string[] { return ['score']; }

  forward(inputs: ModelInputs): ModelOutput {
    const { hidden, cache } = this.body(inputs);
    const { logits, loss } = lastTokenClassifierHead(this, hidden, inputs.inputIds, inputs.labels,
      { padTokenId: this.padTokenId, numLabels: this.numLabels, problemType: this.config.raw.problem_type });
    return { logits, loss, pastKeyValues: cache };
  }
}

export { LlamaForCausalLM as MistralForCausalLM, LlamaForCausalLM as Qwen2ForCausalLM };
export { LlamaForSequenceClassification as MistralForSequenceClassification, LlamaForSequenceClassification as Qwen2ForSequenceClassification };

