// OPT (transformers' OPTForCausalLM / OPTForSequenceClassification), same parameter names: model.decoder.{embed_tokens,
// embed_positions, project_in, project_out, layers.N.{self_attn.{q,k,v,out}_proj,
// self_attn_layer_norm, fc1, fc2, final_layer_norm}, final_layer_norm}, lm_head (tied).
// Learned positions offset by 2 and counted over the attention mask; pre-norm blocks
// (do_layer_norm_before) or post-norm ones (OPT-350m, which also projects 512 <-> 1024).
import type { Tensor } from '../tensor/tensor.js';
import { empty } from '../tensor/tensor.js';
import { add, reshape } from '../tensor/ops/basic.js';
import { dropout } from '../tensor/ops/nn.js';
import { ModuleList } from '../nn/module.js';
import { Embedding, LayerNorm, Linear, activation } from '../nn/layers.js';
import type { KVCache, ModelConfig, ModelInputs, ModelOutput } from './types.js';
import { HFModel, withNumLabels, type ModelInitOptions } from './base.js';
import {
  Container, appendKv, attentionBias, asModelConfig, bool, cacheLength, causalLmHead, lastTokenClassifierHead, emb, kvCapacity, lin, maybeCheckpoint,
  mergeHeads, norm, num, optNum, splitHeads, str, type RawConfig,
} from './common.js';
import { attend } from './attention.js';

/** OPTLearnedPositionalEmbedding's offset: rows 0 and 1 of embed_positions are never a position. */
const OFFSET = 2;

abstract class OPTBase extends HFModel {
  readonly baseModelPrefix = 'model';
  readonly layersPrefix = 'model.decoder.layers';
  readonly config: ModelConfig;
  /** word_embed_proj_dim: the width of the embeddings and of the heads. */
  protected readonly wordDim: number;
  private readonly preNorm: boolean;
  private readonly proj: boolean;
  private readonly finalNorm: boolean;
  private readonly act: (x: Tensor) => Tensor;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(opts);
    this.config = asModelConfig(config);
    const c = this.config, raw = c.raw, hs = c.hiddenSize, nh = c.numHeads;
    if (hs % nh !== 0) throw new Error(`hidden_size ${hs} is not a multiple of num_attention_heads ${nh}`);
    const wdim = this.wordDim = optNum(raw, 'word_embed_proj_dim') ?? hs;
    const ffn = num(raw, ['ffn_dim'], 3072);
    const bias = bool(raw, 'enable_bias', true), affine = bool(raw, 'layer_norm_elementwise_affine', true);
    this.preNorm = bool(raw, 'do_layer_norm_before', true);
    this.proj = wdim !== hs;
    this.finalNorm = this.preNorm && !bool(raw, '_remove_final_layer_norm', false);
    this.act = activation(str(raw, ['activation_function'], 'relu'));
    const model = this.registerModule('model', new Container());
    const dec = model.registerModule('decoder', new Container());
    dec.registerModule('embed_tokens', new Embedding(c.vocabSize, wdim, this.rng));
    dec.registerModule('embed_positions', new Embedding(c.maxPositions + OFFSET, hs, this.rng));
    if (this.proj) {
      dec.registerModule('project_out', new Linear(hs, wdim, false, this.rng));
      dec.registerModule('project_in', new Linear(wdim, hs, false, this.rng));
    }
    if (this.finalNorm) dec.registerModule('final_layer_norm', new LayerNorm(hs, 1e-5, affine));
    const layers: Container[] = [];
    for (let i = 0; i < c.numLayers; i++) {
      const blk = new Container();
      const at = blk.registerModule('self_attn', new Container());
      for (const n of ['k_proj', 'v_proj', 'q_proj', 'out_proj']) at.registerModule(n, new Linear(hs, hs, bias, this.rng));
      blk.registerModule('self_attn_layer_norm', new LayerNorm(hs, 1e-5, affine));
      blk.registerModule('fc1', new Linear(hs, ffn, bias, this.rng));
      blk.registerModule('fc2', new Linear(ffn, hs, bias, this.rng));
      blk.registerModule('final_layer_norm', new LayerNorm(hs, 1e-5, affine));
      layers.push(blk);
    }
    dec.registerModule('layers', new ModuleList(layers));
  }

  protected init(): void {
    this.initRandom((name) => (name === 'model.decoder.embed_tokens' ? optNum(this.config.raw, 'pad_token_id') : null));
  }

  defaultLoraTargets(): string[] { return ['q_proj', 'v_proj']; }

  /**
   * Rows of embed_positions: given position ids + 2, else OPT's own count over the mask,
   * (cumsum(mask) * mask - 1) + 2, so pads sit at row 1 and real tokens count from row 2.
   */
  private positionRows(b: number, t: number, past: number, attentionMask: Tensor | null | undefined, positionIds: Tensor | null | undefined): Tensor {
    const rows = empty([b, t], 'int32', false);
    const max = this.config.maxPositions;
    if (positionIds) {
      if (positionIds.dtype !== 'int32' || (positionIds.size !== t && positionIds.size !== b * t)) throw new Error(`positionIds must be int32 [${b}, ${t}]`);
      for (let i = 0; i < b * t; i++) rows.ints[i] = positionIds.ints[positionIds.size === t ? i % t : i] + OFFSET;
    } else {
      const s = past + t;
      const am = attentionMask ? (attentionMask.dtype === 'int32' ? attentionMask.ints : attentionMask.data) : null;
      for (let bi = 0; bi < b; bi++) {
        let c = 0;
        for (let j = 0; j < s; j++) {
          const m = am ? (am[bi * s + j] ? 1 : 0) : 1;
          c += m;
          if (j >= past) rows.ints[bi * t + j - past] = c * m - 1 + OFFSET;
        }
      }
    }
    for (const r of rows.ints) if (r < 0 || r >= max + OFFSET) throw new Error(`position ${r - OFFSET} is outside OPT's ${max} positions (max_position_embeddings)`);
    return rows;
  }

  /** The decoder's output [B, T, word_embed_proj_dim] and the new cache. */
  protected body(inputs: ModelInputs): { hidden: Tensor; cache?: KVCache } {
    const { inputIds, attentionMask, positionIds, pastKeyValues, useCache } = inputs;
    if (inputIds.dtype !== 'int32' || inputIds.ndim !== 2) throw new Error('inputIds must be an int32 [B, T] tensor');
    const c = this.config, raw = c.raw, nh = c.numHeads, hd = c.hiddenSize / nh;
    const kvCap = kvCapacity(pastKeyValues, inputIds.shape[1], inputs.maxCacheLength);
    const [b, t] = inputIds.shape;
    const past = cacheLength(pastKeyValues);
    const dec = this.getSubmodule('model.decoder');
    let h = emb(dec, 'embed_tokens', inputIds);
    if (this.proj) h = lin(dec, 'project_in', h);
    const pe = reshape(emb(dec, 'embed_positions', this.positionRows(b, t, past, attentionMask, positionIds)), [b, t, c.hiddenSize]);
    const train = this.training;
    const p = num(raw, ['dropout'], 0.1), attnP = num(raw, ['attention_dropout'], 0);
    h = dropout(add(h, pe), p, train, this.rng);
    const mask = attentionBias(b, t, past, attentionMask, { causal: true, capacity: kvCap });
    const cache: KVCache | null = useCache ? { layers: [], length: past + t } : null;
    const ckpt = this.gradientCheckpointing && train && !useCache;
    const pre = this.preNorm;
    let i = 0;
    for (const blk of dec.getSubmodule('layers') as ModuleList<Container>) {
      const li = i++;
      const run = (x: Tensor): Tensor => {
        const a = pre ? norm(blk, 'self_attn_layer_norm', x) : x;
        const q = splitHeads(lin(blk, 'self_attn.q_proj', a), nh, hd);
        const k = splitHeads(lin(blk, 'self_attn.k_proj', a), nh, hd);
        const v = splitHeads(lin(blk, 'self_attn.v_proj', a), nh, hd);
        const kv = appendKv(pastKeyValues, cache, li, k, v, kvCap);
        const o = attend(q, kv.k, kv.v, { mask, scale: 1 / Math.sqrt(hd), dropout: attnP, training: train, rng: this.rng });
        let x2 = add(x, dropout(lin(blk, 'self_attn.out_proj', mergeHeads(o)), p, train, this.rng));
        if (!pre) x2 = norm(blk, 'self_attn_layer_norm', x2);
        const m = pre ? norm(blk, 'final_layer_norm', x2) : x2;
        let y = add(x2, dropout(lin(blk, 'fc2', this.act(lin(blk, 'fc1', m))), p, train, this.rng));
        if (!pre) y = norm(blk, 'final_layer_norm', y);
        return y;
      };
      h = maybeCheckpoint(ckpt, run, h, this.rng);
    }
    if (this.finalNorm) h = norm(dec, 'final_layer_norm', h);
    if (this.proj) h = lin(dec, 'project_out', h);
    return { hidden: h, cache: cache ?? undefined };
  }
}

export class OPTForCausalLM extends OPTBase {
  readonly task = 'CAUSAL_LM' as const;
  readonly architecture = 'OPTForCausalLM';
  readonly tied: boolean;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(config, opts);
    this.tied = bool(this.config.raw, 'tie_word_embeddings', true);
    const head = this.registerModule('lm_head', new Linear(this.wordDim, this.config.vocabSize, false, this.rng));
    this.init();
    if (this.tied) head.registerParameter('weight', (this.getSubmodule('model.decoder.embed_tokens') as Embedding).weight);
  }

  override tiedWeightKeys(): string[] { return this.tied ? ['lm_head.weight'] : []; }
  override outputHeadNames(): string[] { return ['lm_head']; }

  forward(inputs: ModelInputs): ModelOutput {
    const { hidden, cache } = this.body(inputs);
    const { logits, loss } = causalLmHead(this, hidden, inputs.labels, inputs.returnLogits, inputs.logitsToKeep);
    return { logits, loss, pastKeyValues: cache };
  }
}

/** OPTForSequenceClassification: score (no bias) on the last non-pad token. */
export class OPTForSequenceClassification extends OPTBase {
  readonly task = 'SEQ_CLS' as const;
  readonly architecture = 'OPTForSequenceClassification';

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(withNumLabels(asModelConfig(config), opts.numLabels), opts);
    this.registerModule('score', new Linear(this.wordDim, this.numLabels, false, this.rng));
    this.init();
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
