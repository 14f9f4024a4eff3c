// BERT and RoBERTa encoders with transformers' names: {bert,roberta}.embeddings.
// {word,position,token_type}_embeddings/LayerNorm, encoder.layer.N.attention.self.
// {query,key,value}, attention.output.{dense,LayerNorm}, intermediate.dense,
// output.{dense,LayerNorm}, bert.pooler.dense; heads "classifier" (RoBERTa's sequence head
// is classifier.dense + classifier.out_proj).
import type { Tensor } from '../tensor/tensor.js';
import { empty } from '../tensor/tensor.js';
import { add, reshape, tanh } from '../tensor/ops/basic.js';
import { dropout, scaledDotProductAttention } from '../tensor/ops/nn.js';
import { ModuleList } from '../nn/module.js';
import { Embedding, LayerNorm, Linear, activation } from '../nn/layers.js';
import type { ModelConfig, ModelInputs, ModelOutput } from './types.js';
import { HFModel, withNumLabels, type ModelInitOptions } from './base.js';
import {
  Container, attentionBias, asModelConfig, emb, lin, maybeCheckpoint, mergeHeads, norm, num, optNum,
  poolFirst, positionsFor, seqClsLoss, splitHeads, str, tokenClsLoss, type RawConfig,
} from './common.js';

export const ENCODER_TYPES = ['bert', 'roberta', 'xlm-roberta'] as const;

function prefixOf(modelType: string): 'bert' | 'roberta' {
  if (modelType === 'bert') return 'bert';
  if (modelType === 'roberta' || modelType === 'xlm-roberta') return 'roberta';
  throw new Error(`model_type '${modelType}' is not BERT or RoBERTa`);
}

const ARCH: Record<string, string> = { bert: 'Bert', roberta: 'Roberta', 'xlm-roberta': 'XLMRoberta' };

abstract class EncoderBase extends HFModel {
  readonly config: ModelConfig;
  readonly baseModelPrefix: 'bert' | 'roberta';
  readonly layersPrefix: string;
  protected readonly hidden: number;
  protected readonly act: (x: Tensor) => Tensor;
  protected readonly isRoberta: boolean;

  constructor(config: ModelConfig | RawConfig, withPooler: boolean, opts: ModelInitOptions) {
    super(opts);
    this.config = asModelConfig(config);
    const raw = this.config.raw, c = this.config;
    this.baseModelPrefix = prefixOf(c.modelType);
    this.isRoberta = this.baseModelPrefix === 'roberta';
    this.layersPrefix = `${this.baseModelPrefix}.encoder.layer`;
    const hs = this.hidden = c.hiddenSize;
    if (hs % c.numHeads !== 0) throw new Error(`hidden_size ${hs} is not a multiple of num_attention_heads ${c.numHeads}`);
    const inter = num(raw, ['intermediate_size'], 4 * hs);
    const eps = num(raw, ['layer_norm_eps'], 1e-12);
    this.act = activation(str(raw, ['hidden_act'], 'gelu'));
    const pet = str(raw, ['position_embedding_type'], 'absolute');
    if (pet !== 'absolute') throw new Error(`position_embedding_type '${pet}' is not supported (only 'absolute')`);

    const base = this.registerModule(this.baseModelPrefix, new Container());
    const e = base.registerModule('embeddings', new Container());
    e.registerModule('word_embeddings', new Embedding(c.vocabSize, hs, this.rng));
    e.registerModule('position_embeddings', new Embedding(c.maxPositions, hs, this.rng));
    e.registerModule('token_type_embeddings', new Embedding(num(raw, ['type_vocab_size'], 2), hs, this.rng));
    e.registerModule('LayerNorm', new LayerNorm(hs, eps));
    const layers: Container[] = [];
    for (let i = 0; i < c.numLayers; i++) {
      const l = new Container();
      const at = l.registerModule('attention', new Container());
      const self = at.registerModule('self', new Container());
      self.registerModule('query', new Linear(hs, hs, true, this.rng));
      self.registerModule('key', new Linear(hs, hs, true, this.rng));
      self.registerModule('value', new Linear(hs, hs, true, this.rng));
      const ao = at.registerModule('output', new Container());
      ao.registerModule('dense', new Linear(hs, hs, true, this.rng));
      ao.registerModule('LayerNorm', new LayerNorm(hs, eps));
      l.registerModule('intermediate', new Container()).registerModule('dense', new Linear(hs, inter, true, this.rng));
      const out = l.registerModule('output', new Container());
      out.registerModule('dense', new Linear(inter, hs, true, this.rng));
      out.registerModule('LayerNorm', new LayerNorm(hs, eps));
      layers.push(l);
    }
    base.registerModule('encoder', new Container()).registerModule('layer', new ModuleList(layers));
    if (withPooler) base.registerModule('pooler', new Container()).registerModule('dense', new Linear(hs, hs, true, this.rng));
  }

  defaultLoraTargets(): string[] { return ['query', 'value']; }

  /** Embeddings created with padding_idx (zero row at init). */
  protected readonly paddingIdxOf = (name: string): number | null =>
    name.endsWith('word_embeddings') || (this.isRoberta && name.endsWith('position_embeddings')) ? this.padTokenId : null;
  override ignoredUnexpectedKeys(): RegExp[] { return [/embeddings\.position_ids$/, /embeddings\.token_type_ids$/]; }
  override classifierModuleNames(): string[] { return ['classifier', 'score']; }
  override outputHeadNames(): string[] { return ['classifier']; }

  protected get hiddenDropout(): number { return num(this.config.raw, ['hidden_dropout_prob'], 0.1); }
  protected get classifierDropout(): number {
    return optNum(this.config.raw, 'classifier_dropout') ?? this.hiddenDropout;
  }

  /** RoBERTa: positions count non-pad tokens from padding_idx + 1; pads get padding_idx. */
  private robertaPositions(ids: Tensor): Tensor {
    const pad = this.padTokenId ?? 1;
    const [b, t] = ids.shape;
    const out = empty([b * t], 'int32', false);
    for (let bi = 0; bi < b; bi++) {
      let run = 0;
      for (let j = 0; j < t; j++) {
        const tok = ids.ints[bi * t + j];
        if (tok !== pad) run++;
        out.ints[bi * t + j] = tok !== pad ? run + pad : pad;
      }
    }
    return out;
  }

  /** Last hidden states [B, T, H]. */
  protected encode(inputs: ModelInputs): Tensor {
    const { inputIds, attentionMask, tokenTypeIds, positionIds } = inputs;
    if (inputs.pastKeyValues) throw new Error(`${this.architecture} is an encoder and has no KV cache`);
    if (inputIds.dtype !== 'int32' || inputIds.ndim !== 2) throw new Error('inputIds must be an int32 [B, T] tensor');
    const [b, t] = inputIds.shape;
    const c = this.config, hs = this.hidden;
    const pos = positionIds ? positionsFor(b, t, 0, positionIds) : this.isRoberta ? this.robertaPositions(inputIds) : positionsFor(b, t, 0, null);
    for (const p of pos.ints) if (p < 0 || p >= c.maxPositions) throw new Error(`position ${p} is outside max_position_embeddings ${c.maxPositions}`);
    const tt = tokenTypeIds ?? empty([b, t], 'int32', true);
    if (tt.size !== b * t) throw new Error(`tokenTypeIds must be [${b}, ${t}]`);
    const base = this.getSubmodule(this.baseModelPrefix);
    let pe = emb(base, 'embeddings.position_embeddings', pos);
    if (pos.size !== t) pe = reshape(pe, [b, t, hs]);
    let h = add(add(emb(base, 'embeddings.word_embeddings', inputIds), emb(base, 'embeddings.token_type_embeddings', tt)), pe);
    const train = this.training, hp = this.hiddenDropout;
    h = dropout(norm(base, 'embeddings.LayerNorm', h), hp, train, this.rng);
    const mask = attentionBias(b, t, 0, attentionMask, { causal: false });
    const nh = c.numHeads, hd = hs / nh;
    const attnP = num(c.raw, ['attention_probs_dropout_prob'], 0.1);
    const ckpt = this.gradientCheckpointing && train;
    for (const l of base.getSubmodule('encoder.layer') as ModuleList<Container>) {
      const run = (x: Tensor): Tensor => {
        const q = splitHeads(lin(l, 'attention.self.query', x), nh, hd);
        const k = splitHeads(lin(l, 'attention.self.key', x), nh, hd);
        const v = splitHeads(lin(l, 'attention.self.value', x), nh, hd);
        const o = scaledDotProductAttention(q, k, v, { mask, dropout: attnP, training: train, rng: this.rng });
        const ao = dropout(lin(l, 'attention.output.dense', mergeHeads(o)), hp, train, this.rng);
        const x2 = norm(l, 'attention.output.LayerNorm', add(ao, x));
        const f = dropout(lin(l, 'output.dense', this.act(lin(l, 'intermediate.dense', x2))), hp, train, this.rng);
        return norm(l, 'output.LayerNorm', add(f, x2));
      };
      h = maybeCheckpoint(ckpt, run, h, this.rng);
    }
    return h;
  }
}

/** BertForSequenceClassification / RobertaForSequenceClassification. */
export class BertForSequenceClassification extends EncoderBase {
  readonly task = 'SEQ_CLS' as const;
  readonly architecture: string;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    const cfg = withNumLabels(asModelConfig(config), opts.numLabels);
    const roberta = prefixOf(cfg.modelType) === 'roberta';
    super(cfg, !roberta, opts);
    this.architecture = `${ARCH[cfg.modelType]}ForSequenceClassification`;
    const hs = this.hidden, n = this.numLabels;
    if (roberta) {
      const head = this.registerModule('classifier', new Container());
      head.registerModule('dense', new Linear(hs, hs, true, this.rng));
      head.registerModule('out_proj', new Linear(hs, n, true, this.rng));
    } else {
      this.registerModule('classifier', new Linear(hs, n, true, this.rng));
    }
    this.initRandom(this.paddingIdxOf);
  }

  forward(inputs: ModelInputs): ModelOutput {
    const h = this.encode(inputs);
    const cls = poolFirst(h);
    const train = this.training, p = this.classifierDropout;
    let logits: Tensor;
    if (this.isRoberta) {
      const x = tanh(lin(this, 'classifier.dense', dropout(cls, p, train, this.rng)));
      logits = lin(this, 'classifier.out_proj', dropout(x, p, train, this.rng));
    } else {
      const pooled = tanh(lin(this, `${this.baseModelPrefix}.pooler.dense`, cls));
      logits = lin(this, 'classifier', dropout(pooled, p, train, this.rng));
    }
    const loss = inputs.labels ? seqClsLoss(logits, inputs.labels, this.numLabels, this.config.raw.problem_type as string | undefined) : undefined;
    return { logits, loss };
  }
}

/** BertForTokenClassification / RobertaForTokenClassification (no pooler). */
export class BertForTokenClassification extends EncoderBase {
  readonly task = 'TOKEN_CLS' as const;
  readonly architecture: string;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    const cfg = withNumLabels(asModelConfig(config), opts.numLabels);
    super(cfg, false, opts);
    this.architecture = `${ARCH[cfg.modelType]}ForTokenClassification`;
    this.registerModule('classifier', new Linear(this.hidden, this.numLabels, true, this.rng));
    this.initRandom(this.paddingIdxOf);
  }

  override ignoredUnexpectedKeys(): RegExp[] { return [...super.ignoredUnexpectedKeys(), /\.pooler\./]; }

  forward(inputs: ModelInputs): ModelOutput {
    const h = this.encode(inputs);
    const logits = lin(this, 'classifier', dropout(h, this.classifierDropout, this.training, this.rng));
    const loss = inputs.labels ? tokenClsLoss(logits, inputs.labels) : undefined;
    return { logits, loss };
  }
}

export {
  BertForSequenceClassification as RobertaForSequenceClassification,
  BertForTokenClassification as RobertaForTokenClassification,
};
