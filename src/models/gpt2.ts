// GPT-2 (transformers' GPT2LMHeadModel / GPT2ForSequenceClassification), same parameter
// names: transformer.wte/wpe/h.N.{ln_1,attn.c_attn,attn.c_proj,ln_2,mlp.c_fc,mlp.c_proj}/ln_f.
import type { Tensor } from '../tensor/tensor.js';
import { add, reshape, split } from '../tensor/ops/basic.js';
import { dropout, scaledDotProductAttention } from '../tensor/ops/nn.js';
import { ModuleList } from '../nn/module.js';
import { Conv1D, Embedding, LayerNorm, Linear, activation } from '../nn/layers.js';
import type { KVCache, ModelConfig, ModelInputs, ModelOutput } from './types.js';
import { HFModel, withNumLabels, type ModelInitOptions } from './base.js';
import {
  Container, appendKv, attentionBias, asModelConfig, bool, cacheLength, kvCapacity, causalLmHead, lastTokenClassifierHead, emb, lin, maybeCheckpoint,
  mergeHeads, norm, num, positionsFor, splitHeads, str, type RawConfig,
} from './common.js';

abstract class GPT2Base extends HFModel {
  readonly config: ModelConfig;
  readonly baseModelPrefix = 'transformer';
  readonly layersPrefix = 'transformer.h';
  protected readonly nEmbd: number;
  protected readonly nHead: number;
  protected readonly act: (x: Tensor) => Tensor;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(opts);
    this.config = asModelConfig(config);
    const raw = this.config.raw;
    const e = this.nEmbd = this.config.hiddenSize;
    this.nHead = this.config.numHeads;
    if (e % this.nHead !== 0) throw new Error(`n_embd ${e} is not a multiple of n_head ${this.nHead}`);
    const inner = num(raw, ['n_inner'], 4 * e) || 4 * e;
    const eps = num(raw, ['layer_norm_epsilon'], 1e-5);
    this.act = activation(str(raw, ['activation_function'], 'gelu_new'));
    const tr = this.registerModule('transformer', new Container());
    tr.registerModule('wte', new Embedding(this.config.vocabSize, e, this.rng));
    tr.registerModule('wpe', new Embedding(this.config.maxPositions, e, this.rng));
    const layers: Container[] = [];
    for (let i = 0; i < this.config.numLayers; i++) {
      const blk = new Container();
      blk.registerModule('ln_1', new LayerNorm(e, eps));
      const attn = blk.registerModule('attn', new Container());
      attn.registerModule('c_attn', new Conv1D(e, 3 * e, this.rng));
      attn.registerModule('c_proj', new Conv1D(e, e, this.rng));
      blk.registerModule('ln_2', new LayerNorm(e, eps));
      const mlp = blk.registerModule('mlp', new Container());
      mlp.registerModule('c_fc', new Conv1D(e, inner, this.rng));
      mlp.registerModule('c_proj', new Conv1D(inner, e, this.rng));
      layers.push(blk);
    }
    tr.registerModule('h', new ModuleList(layers));
    tr.registerModule('ln_f', new LayerNorm(e, eps));
  }

  defaultLoraTargets(): string[] { return ['c_attn']; }
  override ignoredUnexpectedKeys(): RegExp[] { return [/\.attn\.(masked_)?bias$/]; }

  /** Runs the transformer stack; returns final hidden states [B, T, E] and the new cache. */
  protected body(inputs: ModelInputs): { hidden: Tensor; cache?: KVCache } {
    const { inputIds, attentionMask, positionIds, pastKeyValues, useCache } = inputs;
    const kvCap = kvCapacity(pastKeyValues, inputIds.shape[1], inputs.maxCacheLength);
    if (inputIds.dtype !== 'int32' || inputIds.ndim !== 2) throw new Error('inputIds must be an int32 [B, T] tensor');
    const [b, t] = inputIds.shape;
    const raw = this.config.raw;
    const past = cacheLength(pastKeyValues);
    const pos = positionsFor(b, t, past, positionIds);
    for (const p of pos.ints) {
      if (p < 0 || p >= this.config.maxPositions) throw new Error(`position ${p} is outside GPT-2's ${this.config.maxPositions} positions (n_positions)`);
    }
    const tr = this.getSubmodule('transformer');
    let pe = emb(tr, 'wpe', pos);
    if (pos.size !== t) pe = reshape(pe, [b, t, this.nEmbd]); // per-row positions
    let h = add(emb(tr, 'wte', inputIds), pe);
    const train = this.training;
    h = dropout(h, num(raw, ['embd_pdrop'], 0.1), train, this.rng);
    const mask = attentionBias(b, t, past, attentionMask, { causal: true, capacity: kvCap });
    const cache: KVCache | null = useCache ? { layers: [], length: past + t } : null;
    const nh = this.nHead, hd = this.nEmbd / nh;
    const scaleW = bool(raw, 'scale_attn_weights', true), byLayer = bool(raw, 'scale_attn_by_inverse_layer_idx', false);
    const attnP = num(raw, ['attn_pdrop'], 0.1), residP = num(raw, ['resid_pdrop'], 0.1);
    const layers = tr.getSubmodule('h') as ModuleList<Container>;
    const ckpt = this.gradientCheckpointing && train && !useCache;
    let i = 0;
    for (const blk of layers) {
      const li = i++;
      const run = (x: Tensor): Tensor => {
        const a = norm(blk, 'ln_1', x);
        const [q, k, v] = split(lin(blk, 'attn.c_attn', a), [this.nEmbd, this.nEmbd, this.nEmbd], -1)
          .map((z) => splitHeads(z, nh, hd));
        const kv = appendKv(pastKeyValues, cache, li, k, v, kvCap);
        let scale = scaleW ? 1 / Math.sqrt(hd) : 1;
        if (byLayer) scale /= li + 1;
        const o = scaledDotProductAttention(q, kv.k, kv.v, { mask, scale, dropout: attnP, training: train, rng: this.rng });
        const ao = dropout(lin(blk, 'attn.c_proj', mergeHeads(o)), residP, train, this.rng);
        const x2 = add(x, ao);
        const m = lin(blk, 'mlp.c_proj', this.act(lin(blk, 'mlp.c_fc', norm(blk, 'ln_2', x2))));
        return add(x2, dropout(m, residP, train, this.rng));
      };
      h = maybeCheckpoint(ckpt, run, h, this.rng);
    }
    h = norm(tr, 'ln_f', h);
    return { hidden: h, cache: cache ?? undefined };
  }
}

/** GPT2LMHeadModel: lm_head tied to transformer.wte (unless tie_word_embeddings is false). */
export class GPT2LMHeadModel extends GPT2Base {
  readonly task = 'CAUSAL_LM' as const;
  readonly architecture = 'GPT2LMHeadModel';
  readonly tied: boolean;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(config, opts);
    this.tied = bool(this.config.raw, 'tie_word_embeddings', true);
    const head = this.registerModule('lm_head', new Linear(this.nEmbd, this.config.vocabSize, false, this.rng));
    this.initRandom();
    if (this.tied) head.registerParameter('weight', (this.getSubmodule('transformer.wte') as Embedding).weight);
  }

  override tiedWeightKeys(): string[] { return this.tied ? ['lm_head.weight'] : []; }
  override outputHeadNames(): string[] { return ['lm_head']; }

  forward(inputs: ModelInputs): ModelOutput {
    const { hidden, cache } = this.body(inputs);
    const { logits, loss } = causalLmHead(this, hidden, inputs.labels, inputs.returnLogits, inputs.logitsToKeep);
    return { logits, loss, pastKeyValues: cache };
  }
}

/** GPT2ForSequenceClassification: score (no bias) on the last non-pad token. */
export class GPT2ForSequenceClassification extends GPT2Base {
  readonly task = 'SEQ_CLS' as const;
  readonly architecture = 'GPT2ForSequenceClassification';

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(withNumLabels(asModelConfig(config), opts.numLabels), opts);
    this.registerModule('score', new Linear(this.nEmbd, this.numLabels, false, this.rng));
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
