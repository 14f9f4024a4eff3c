// Decoders with LayerNorm and attention + MLP side by side: Phi (1/1.5/2), GPT-NeoX (Pythia),
// GPT-J and Falcon (old and new decoder architecture, RoPE or ALiBi), with their transformers
// parameter names. One block covers them: a layer normalises x once (Phi, GPT-J, Falcon 7B),
// twice in parallel (GPT-NeoX, Falcon new architecture: ln_attn / ln_mlp) or in sequence
// (use_parallel_residual / parallel_attn false); q/k/v come from separate projections (Phi,
// GPT-J) or one fused query_key_value in the model's own layout; RoPE covers part of the head.
import type { Tensor } from '../tensor/tensor.js';
import { add, permute, reshape, slice, split } from '../tensor/ops/basic.js';
import { dropout } from '../tensor/ops/nn.js';
import { ModuleList } from '../nn/module.js';
import { Embedding, LayerNorm, Linear, activation } from '../nn/layers.js';
import type { KVCache, ModelConfig, ModelInputs, ModelOutput } from './types.js';
import { HFModel, withNumLabels, type ModelInitOptions } from './base.js';
import {
  Container, appendKv, attentionBias, asModelConfig, bool, cacheLength, causalLmHead, lastTokenClassifierHead, emb, kvCapacity, lin, maybeCheckpoint,
  mergeHeads, norm, num, optNum, positionsFor, splitHeads, str, type RawConfig,
} from './common.js';
import { RopeCache } from './rope.js';
import { alibiBias, attend, deinterleave, partialRope } from './attention.js';

export const PARALLEL_TYPES = ['phi', 'gpt_neox', 'gptj', 'falcon'] as const;

type QkvLayout = 'separate' | 'neox' | 'falcon-new' | 'falcon-mq' | 'falcon-mha';

/** Everything a model type decides, read once from config.json. */
interface Spec {
  /** transformers' class name stem (PhiForCausalLM -> Phi). */
  arch: string;
  prefix: string; layers: string; embed: string; finalNorm: string;
  attn: string; out: string; fc: [string, string];
  /** One norm shared by attention and MLP, two over the same input, or two in sequence. */
  norms: string[]; parallel: boolean;
  qkv: QkvLayout; qkvBias: boolean; outBias: boolean; mlpBias: boolean; headBias: boolean;
  kvHeads: number; inter: number; eps: number; act: string; tie: boolean;
  qkLayerNorm: boolean; interleaved: boolean; alibi: boolean;
  /** The config the RoPE tables are read from and the head dim they rotate (null: ALiBi). */
  rope: { raw: RawConfig; dim: number } | null;
  embP: number; residP: number; attnP: number;
  renames: [string, string][];
}

function specFor(c: ModelConfig): Spec {
  const raw = c.raw, mt = c.modelType, hs = c.hiddenSize, nh = c.numHeads;
  const hd = hs / nh;
  if (!Number.isInteger(hd)) throw new Error(`hidden_size ${hs} is not a multiple of num_attention_heads ${nh}`);
  const ropeParams = (raw.rope_parameters && typeof raw.rope_parameters === 'object' ? raw.rope_parameters : {}) as RawConfig;
  // transformers 5 keeps rope_theta / partial_rotary_factor in rope_parameters; older configs
  // name them per model (rotary_pct, rotary_emb_base) or at the top level.
  const rope = (partialDefault: number, theta: unknown = raw.rope_theta): { raw: RawConfig; dim: number } => ({
    raw: {
      ...raw,
      rope_parameters: {
        rope_type: 'default', rope_theta: theta ?? 10000, partial_rotary_factor: raw.partial_rotary_factor ?? partialDefault,
        ...(raw.rope_scaling && typeof raw.rope_scaling === 'object' ? raw.rope_scaling as RawConfig : {}), ...ropeParams,
      },
    },
    dim: hd,
  });
  if (mt === 'phi') {
    return {
      arch: 'Phi', prefix: 'model', layers: 'layers', embed: 'embed_tokens', finalNorm: 'final_layernorm',
      attn: 'self_attn', out: 'dense', fc: ['fc1', 'fc2'], norms: ['input_layernorm'], parallel: true,
      qkv: 'separate', qkvBias: true, outBias: true, mlpBias: true, headBias: true,
      kvHeads: num(raw, ['num_key_value_heads'], nh) || nh, inter: num(raw, ['intermediate_size']),
      eps: num(raw, ['layer_norm_eps'], 1e-5), act: str(raw, ['hidden_act'], 'gelu_new'), tie: bool(raw, 'tie_word_embeddings', false),
      qkLayerNorm: bool(raw, 'qk_layernorm', false), interleaved: false, alibi: false, rope: rope(0.5),
      embP: num(raw, ['embd_pdrop'], 0), residP: num(raw, ['resid_pdrop'], 0), attnP: num(raw, ['attention_dropout'], 0), renames: [],
    };
  }
  if (mt === 'gpt_neox') {
    const par = bool(raw, 'use_parallel_residual', true), bias = bool(raw, 'attention_bias', true);
    const neoxRope = rope(num(raw, ['rotary_pct'], 0.25), raw.rotary_emb_base ?? raw.rope_theta);
    return {
      arch: 'GPTNeoX', prefix: 'gpt_neox', layers: 'layers', embed: 'embed_in', finalNorm: 'final_layer_norm',
      attn: 'attention', out: 'dense', fc: ['dense_h_to_4h', 'dense_4h_to_h'], norms: ['input_layernorm', 'post_attention_layernorm'], parallel: par,
      qkv: 'neox', qkvBias: bias, outBias: bias, mlpBias: true, headBias: false, kvHeads: nh, inter: num(raw, ['intermediate_size']),
      eps: num(raw, ['layer_norm_eps'], 1e-5), act: str(raw, ['hidden_act'], 'gelu'), tie: bool(raw, 'tie_word_embeddings', false),
      qkLayerNorm: false, interleaved: false, alibi: false, rope: neoxRope,
      embP: num(raw, ['hidden_dropout'], 0), residP: num(raw, ['hidden_dropout'], 0), attnP: num(raw, ['attention_dropout'], 0),
      renames: [['embed_out.', 'lm_head.']],
    };
  }
  if (mt === 'gptj') {
    const rot = optNum(raw, 'rotary_dim') ?? hd;
    return {
      arch: 'GPTJ', prefix: 'transformer', layers: 'h', embed: 'wte', finalNorm: 'ln_f',
      attn: 'attn', out: 'out_proj', fc: ['fc_in', 'fc_out'], norms: ['ln_1'], parallel: true,
      qkv: 'separate', qkvBias: false, outBias: false, mlpBias: true, headBias: true, kvHeads: nh, inter: num(raw, ['n_inner'], 4 * hs) || 4 * hs,
      eps: num(raw, ['layer_norm_epsilon'], 1e-5), act: str(raw, ['activation_function'], 'gelu_new'), tie: bool(raw, 'tie_word_embeddings', false),
      // GPT-J's create_sinusoidal_positions: base 10000 over rotary_dim, whatever the config says.
      qkLayerNorm: false, interleaved: true, alibi: false, rope: { raw: { rope_parameters: { rope_type: 'default', rope_theta: 10000 } }, dim: rot },
      embP: num(raw, ['embd_pdrop'], 0), residP: num(raw, ['resid_pdrop'], 0), attnP: num(raw, ['attn_pdrop'], 0), renames: [],
    };
  }
  if (mt === 'falcon') {
    const newArch = bool(raw, 'new_decoder_architecture', false), mq = bool(raw, 'multi_query', true);
    const par = bool(raw, 'parallel_attn', true), alibi = bool(raw, 'alibi', false), bias = bool(raw, 'bias', false);
    const nkv = optNum(raw, 'num_kv_heads') ?? nh;
    const nln = optNum(raw, 'num_ln_in_parallel_attn') ?? (newArch ? 2 : null);
    let norms: string[];
    if (newArch && !par) throw new Error('falcon: new_decoder_architecture without parallel_attn is not a working transformers configuration');
    if (!par) norms = ['input_layernorm', 'post_attention_layernorm'];
    else if (newArch && nln === 2) norms = ['ln_attn', 'ln_mlp'];
    else if (!newArch && nln === 2) throw new Error('falcon: num_ln_in_parallel_attn 2 needs new_decoder_architecture');
    else norms = ['input_layernorm'];
    if (newArch && nh % nkv !== 0) throw new Error(`falcon: num_attention_heads ${nh} is not a multiple of num_kv_heads ${nkv}`);
    return {
      arch: 'Falcon', prefix: 'transformer', layers: 'h', embed: 'word_embeddings', finalNorm: 'ln_f',
      attn: 'self_attention', out: 'dense', fc: ['dense_h_to_4h', 'dense_4h_to_h'], norms, parallel: par || newArch,
      qkv: newArch ? 'falcon-new' : mq ? 'falcon-mq' : 'falcon-mha', qkvBias: bias, outBias: bias, mlpBias: bias, headBias: false,
      kvHeads: newArch ? nkv : mq ? 1 : nh, inter: optNum(raw, 'ffn_hidden_size') ?? 4 * hs,
      eps: num(raw, ['layer_norm_epsilon'], 1e-5), act: str(raw, ['activation'], 'gelu'), tie: bool(raw, 'tie_word_embeddings', true),
      qkLayerNorm: false, interleaved: false, alibi, rope: alibi ? null : rope(1),
      embP: 0, residP: num(raw, ['hidden_dropout'], 0), attnP: num(raw, ['attention_dropout'], 0), renames: [],
    };
  }
  throw new Error(`model_type '${mt}' is not one of ${PARALLEL_TYPES.join(', ')}`);
}

abstract class ParallelDecoderBase extends HFModel {
  readonly config: ModelConfig;
  readonly baseModelPrefix: string;
  readonly layersPrefix: string;
  readonly headDim: number;
  protected readonly spec: Spec;
  private readonly act: (x: Tensor) => Tensor;
  private readonly ropeCache: RopeCache | null;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(opts);
    this.config = asModelConfig(config);
    const c = this.config, sp = this.spec = specFor(c);
    this.baseModelPrefix = sp.prefix;
    this.layersPrefix = `${sp.prefix}.${sp.layers}`;
    const hs = c.hiddenSize, nh = c.numHeads, hd = this.headDim = hs / nh;
    this.act = activation(sp.act);
    this.ropeCache = sp.rope ? new RopeCache(sp.rope.raw, sp.rope.dim, c.maxPositions, Math.min(c.maxPositions, 4096)) : null;
    const base = this.registerModule(sp.prefix, new Container());
    base.registerModule(sp.embed, new Embedding(c.vocabSize, hs, this.rng));
    const layers: Container[] = [];
    const qkvOut = sp.qkv === 'separate' ? 0 : sp.qkv === 'falcon-mq' ? hs + 2 * hd : (nh + 2 * sp.kvHeads) * hd;
    for (let i = 0; i < c.numLayers; i++) {
      const blk = new Container();
      for (const n of sp.norms) blk.registerModule(n, new LayerNorm(hs, sp.eps));
      const at = blk.registerModule(sp.attn, new Container());
      if (sp.qkv === 'separate') {
        at.registerModule('q_proj', new Linear(hs, nh * hd, sp.qkvBias, this.rng));
        at.registerModule('k_proj', new Linear(hs, sp.kvHeads * hd, sp.qkvBias, this.rng));
        at.registerModule('v_proj', new Linear(hs, sp.kvHeads * hd, sp.qkvBias, this.rng));
      } else {
        at.registerModule('query_key_value', new Linear(hs, qkvOut, sp.qkvBias, this.rng));
      }
      at.registerModule(sp.out, new Linear(nh * hd, hs, sp.outBias, this.rng));
      if (sp.qkLayerNorm) {
        at.registerModule('q_layernorm', new LayerNorm(hd, sp.eps));
        at.registerModule('k_layernorm', new LayerNorm(hd, sp.eps));
      }
      const mlp = blk.registerModule('mlp', new Container());
      mlp.registerModule(sp.fc[0], new Linear(hs, sp.inter, sp.mlpBias, this.rng));
      mlp.registerModule(sp.fc[1], new Linear(sp.inter, hs, sp.mlpBias, this.rng));
      layers.push(blk);
    }
    base.registerModule(sp.layers, new ModuleList(layers));
    base.registerModule(sp.finalNorm, new LayerNorm(hs, sp.eps));
  }

  /** peft's mapping is by model_type (src/peft/targets-default.ts); this is the model's own guess when it has none. */
  defaultLoraTargets(): string[] {
    return this.spec.qkv === 'separate' ? ['q_proj', 'v_proj'] : ['query_key_value'];
  }
  override checkpointKeyRenames(): [string, string][] { return this.spec.renames; }
  protected override disposeBuffers(): void { this.ropeCache?.dispose(); }
  override ignoredUnexpectedKeys(): RegExp[] {
    return [/rotary_emb\.inv_freq$/, /\.attention\.(masked_)?bias$/, /\.attn\.(masked_)?bias$/, /embed_positions$/];
  }

  /** q [B, H, T, D] and k, v [B, Hkv, T, D] in transformers' head order. */
  private qkv(at: Container, a: Tensor): [Tensor, Tensor, Tensor] {
    const sp = this.spec, nh = this.config.numHeads, hd = this.headDim, nkv = sp.kvHeads;
    const [b, t] = a.shape;
    if (sp.qkv === 'separate') {
      return [splitHeads(lin(at, 'q_proj', a), nh, hd), splitHeads(lin(at, 'k_proj', a), nkv, hd), splitHeads(lin(at, 'v_proj', a), nkv, hd)];
    }
    const f = lin(at, 'query_key_value', a);
    const heads = (x: Tensor, h: number) => permute(reshape(x, [b, t, h, hd]), [0, 2, 1, 3]);
    if (sp.qkv === 'neox') {
      // [B, T, H, (q k v) * D]: each head's q, k and v side by side.
      return split(reshape(f, [b, t, nh, 3 * hd]), [hd, hd, hd], -1).map((x) => permute(x, [0, 2, 1, 3])) as [Tensor, Tensor, Tensor];
    }
    if (sp.qkv === 'falcon-mha') {
      const x = reshape(f, [b, t, nh, 3, hd]);
      return [0, 1, 2].map((j) => heads(slice(x, 3, j, j + 1), nh)) as [Tensor, Tensor, Tensor];
    }
    if (sp.qkv === 'falcon-mq') {
      const x = reshape(f, [b, t, nh + 2, hd]);
      return [heads(slice(x, 2, 0, nh), nh), heads(slice(x, 2, nh, nh + 1), 1), heads(slice(x, 2, nh + 1, nh + 2), 1)];
    }
    // new decoder architecture: per kv group, its g query heads then one k and one v.
    const g = nh / nkv;
    const x = reshape(f, [b, t, nkv, g + 2, hd]);
    return [heads(slice(x, 3, 0, g), nh), heads(slice(x, 3, g, g + 1), nkv), heads(slice(x, 3, g + 1, g + 2), nkv)];
  }

  protected body(inputs: ModelInputs): { hidden: Tensor; cache?: KVCache } {
    const { inputIds, attentionMask, positionIds, pastKeyValues, useCache } = inputs;
    if (inputIds.dtype !== 'int32' || inputIds.ndim !== 2) throw new Error('inputIds must be an int32 [B, T] tensor');
    const sp = this.spec, nh = this.config.numHeads, hd = this.headDim;
    const kvCap = kvCapacity(pastKeyValues, inputIds.shape[1], inputs.maxCacheLength);
    const [b, t] = inputIds.shape;
    const past = cacheLength(pastKeyValues);
    const pos = positionsFor(b, t, past, positionIds);
    let maxPos = 0;
    for (const p of pos.ints) { if (p < 0) throw new Error(`negative position id ${p}`); if (p > maxPos) maxPos = p; }
    const tables = this.ropeCache ? this.ropeCache.tables(maxPos) : null;
    let mask = attentionBias(b, t, past, attentionMask, { causal: true, capacity: kvCap });
    if (sp.alibi) mask = alibiBias(mask, attentionMask, b, nh, t, past + t, Math.max(kvCap, past + t), Math.sqrt(hd));
    const base = this.getSubmodule(sp.prefix);
    const train = this.training;
    let h = dropout(emb(base, sp.embed, inputIds), sp.embP, train, this.rng);
    const cache: KVCache | null = useCache ? { layers: [], length: past + t } : null;
    const ckpt = this.gradientCheckpointing && train && !useCache;
    const layers = base.getSubmodule(sp.layers) as ModuleList<Container>;
    const rot = sp.rope?.dim ?? 0;
    const posRope = (x: Tensor): Tensor => {
      if (!tables) return x;
      return partialRope(sp.interleaved ? deinterleave(x, rot) : x, tables.cos, tables.sin, pos);
    };
    let i = 0;
    for (const blk of layers) {
      const li = i++;
      const at = blk.getSubmodule(sp.attn) as Container;
      const run = (x: Tensor): Tensor => {
        const a = norm(blk, sp.norms[0], x);
        let [q, k, v] = this.qkv(at, a);
        if (sp.qkLayerNorm) { q = norm(at, 'q_layernorm', q); k = norm(at, 'k_layernorm', k); }
        q = posRope(q); k = posRope(k);
        const kv = appendKv(pastKeyValues, cache, li, k, v, kvCap);
        const o = attend(q, kv.k, kv.v, { mask, scale: 1 / Math.sqrt(hd), dropout: sp.attnP, training: train, rng: this.rng });
        const ao = dropout(lin(at, sp.out, mergeHeads(o)), sp.residP, train, this.rng);
        const mlp = (m: Tensor) => dropout(lin(blk, `mlp.${sp.fc[1]}`, this.act(lin(blk, `mlp.${sp.fc[0]}`, m))), sp.residP, train, this.rng);
        if (sp.parallel) {
          const m = sp.norms.length === 2 ? norm(blk, sp.norms[1], x) : a;
          return add(add(mlp(m), ao), x);
        }
        const x2 = add(x, ao);
        return add(x2, mlp(norm(blk, sp.norms[1], x2)));
      };
      h = maybeCheckpoint(ckpt, run, h, this.rng);
    }
    return { hidden: norm(base, sp.finalNorm, h), cache: cache ?? undefined };
  }
}

/** PhiForCausalLM / GPTNeoXForCausalLM / GPTJForCausalLM / FalconForCausalLM. */
export class ParallelDecoderForCausalLM extends ParallelDecoderBase {
  readonly task = 'CAUSAL_LM' as const;
  readonly architecture: string;
  readonly tied: boolean;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(config, opts);
    const sp = this.spec;
    this.architecture = `${sp.arch}ForCausalLM`;
    this.tied = sp.tie;
    const head = this.registerModule('lm_head', new Linear(this.config.hiddenSize, this.config.vocabSize, sp.headBias, this.rng));
    this.initRandom();
    if (this.tied) head.registerParameter('weight', (this.getSubmodule(`${sp.prefix}.${sp.embed}`) as Embedding).weight);
  }

  override tiedWeightKeys(): string[] { return this.tied ? ['lm_head.weight'] : []; }
  override outputHeadNames(): string[] { return ['lm_head']; }

  forward(inputs: ModelInputs): ModelOutput {
    const { hidden, cache } = this.body(inputs);
    const { logits, loss } = causalLmHead(this, hidden, inputs.labels, inputs.returnLogits, inputs.logitsToKeep);
    return { logits, loss, pastKeyValues: cache };
  }
}

/** Phi / GPTNeoX / GPTJ / Falcon ForSequenceClassification: score (no bias) on the last non-pad token. */
export class ParallelDecoderForSequenceClassification extends ParallelDecoderBase {
  readonly task = 'SEQ_CLS' as const;
  readonly architecture: string;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(withNumLabels(asModelConfig(config), opts.numLabels), opts);
    this.architecture = `${this.spec.arch}ForSequenceClassification`;
    this.registerModule('score', new Linear(this.config.hiddenSize, this.numLabels, false, this.rng));
    this.initRandom();
  }

  override classifierModuleNames(): string[] { return ['classifier', 'score']; }
  override outputHeadNames(): string[] { return ['score']; }
  // The causal LM head a checkpoint may carry is not used (transformers reports it unexpected).

  forward(inputs: ModelInputs): ModelOutput {
    const { hidden, cache } = this.body(inputs);
    const { logits, loss } = lastTokenClassifierHead(this, hidden, inputs.inputIds, inputs.labels,
      { padTokenId: this.padTokenId, numLabels: this.numLabels, problemType: this.config.raw.problem_type });
    return { logits, loss, pastKeyValues: cache };
  }
}

export {
  ParallelDecoderForSequenceClassification as PhiForSequenceClassification, ParallelDecoderForSequenceClassification as GPTNeoXForSequenceClassification,
  ParallelDecoderForSequenceClassification as GPTJForSequenceClassification, ParallelDecoderForSequenceClassification as FalconForSequenceClassification,
};
export {
  ParallelDecoderForCausalLM as PhiForCausalLM, ParallelDecoderForCausalLM as GPTNeoXForCausalLM,
  ParallelDecoderForCausalLM as GPTJForCausalLM, ParallelDecoderForCausalLM as FalconForCausalLM,
};
