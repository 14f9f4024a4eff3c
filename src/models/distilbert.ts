// DistilBERT with transformers' names: distilbert.embeddings.{word,position}_embeddings/
// LayerNorm, distilbert.transformer.layer.N.{attention.{q,k,v,out}_lin, sa_layer_norm,
// ffn.lin1, ffn.lin2, output_layer_norm}; heads pre_classifier + classifier / classifier.
import type { Tensor } from '../tensor/tensor.js';
import { add, relu, reshape } from '../tensor/ops/basic.js';
import { dropout, scaledDotProductAttention } from '../tensor/ops/nn.js';
import { ModuleList } from '../nn/module.js';
import { Embedding, LayerNorm, Linear, activation } from '../nn/layers.js';
import type { ModelConfig, ModelInputs, ModelOutput } from './types.js';
import { HFModel, withNumLabels, type ModelInitOptions } from './base.js';
import {
  Container, attentionBias, asModelConfig, emb, lin, maybeCheckpoint, mergeHeads, norm, num, poolFirst,
  positionsFor, seqClsLoss, splitHeads, str, tokenClsLoss, type RawConfig,
} from './common.js';

abstract class DistilBertBase extends HFModel {
  readonly config: ModelConfig;
  readonly baseModelPrefix = 'distilbert';
  readonly layersPrefix = 'distilbert.transformer.layer';
  protected readonly dim: number;
  protected readonly act: (x: Tensor) => Tensor;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions) {
    super(opts);
    this.config = asModelConfig(config);
    const raw = this.config.raw, c = this.config;
    if (c.modelType !== 'distilbert') throw new Error(`model_type '${c.modelType}' is not distilbert`);
    const d = this.dim = c.hiddenSize;
    if (d % c.numHeads !== 0) throw new Error(`dim ${d} is not a multiple of n_heads ${c.numHeads}`);
    const hidden = num(raw, ['hidden_dim'], 4 * d);
    this.act = activation(str(raw, ['activation'], 'gelu'));
    const base = this.registerModule('distilbert', new Container());
    const e = base.registerModule('embeddings', new Container());
    e.registerModule('word_embeddings', new Embedding(c.vocabSize, d, this.rng));
    e.registerModule('position_embeddings', new Embedding(c.maxPositions, d, this.rng));
    e.registerModule('LayerNorm', new LayerNorm(d, 1e-12));
    const layers: Container[] = [];
    for (let i = 0; i < c.numLayers; i++) {
      const l = new Container();
      const at = l.registerModule('attention', new Container());
      for (const n of ['q_lin', 'k_lin', 'v_lin', 'out_lin']) at.registerModule(n, new Linear(d, d, true, this.rng));
      l.registerModule('sa_layer_norm', new LayerNorm(d, 1e-12));
      const ffn = l.registerModule('ffn', new Container());
      ffn.registerModule('lin1', new Linear(d, hidden, true, this.rng));
      ffn.registerModule('lin2', new Linear(hidden, d, true, this.rng));
      l.registerModule('output_layer_norm', new LayerNorm(d, 1e-12));
      layers.push(l);
    }
    base.registerModule('transformer', new Container()).registerModule('layer', new ModuleList(layers));
  }

  defaultLoraTargets(): string[] { return ['q_lin', 'v_lin']; }
  override ignoredUnexpectedKeys(): RegExp[] { return [/embeddings\.position_ids$/]; }
  override classifierModuleNames(): string[] { return ['classifier', 'score']; }
  override outputHeadNames(): string[] { return ['classifier']; }
  protected readonly paddingIdxOf = (name: string): number | null => (name.endsWith('word_embeddings') ? this.padTokenId : null);

  protected encode(inputs: ModelInputs): Tensor {
    const { inputIds, attentionMask, positionIds } = inputs;
    if (inputs.pastKeyValues) throw new Error('DistilBERT is an encoder and has no KV cache');
    if (inputIds.dtype !== 'int32' || inputIds.ndim !== 2) throw new Error('inputIds must be an int32 [B, T] tensor');
    const [b, t] = inputIds.shape;
    const c = this.config, d = this.dim;
    const pos = positionsFor(b, t, 0, positionIds);
    for (const p of pos.ints) if (p < 0 || p >= c.maxPositions) throw new Error(`position ${p} is outside max_position_embeddings ${c.maxPositions}`);
    const base = this.getSubmodule('distilbert');
    let pe = emb(base, 'embeddings.position_embeddings', pos);
    if (pos.size !== t) pe = reshape(pe, [b, t, d]);
    const train = this.training, p = num(c.raw, ['dropout'], 0.1);
    let h = dropout(norm(base, 'embeddings.LayerNorm', add(emb(base, 'embeddings.word_embeddings', inputIds), pe)), p, train, this.rng);
    const mask = attentionBias(b, t, 0, attentionMask, { causal: false });
    const nh = c.numHeads, hd = d / nh;
    const attnP = num(c.raw, ['attention_dropout'], 0.1);
    const ckpt = this.gradientCheckpointing && train;
    for (const l of base.getSubmodule('transformer.layer') as ModuleList<Container>) {
      const run = (x: Tensor): Tensor => {
        const q = splitHeads(lin(l, 'attention.q_lin', x), nh, hd);
        const k = splitHeads(lin(l, 'attention.k_lin', x), nh, hd);
        const v = splitHeads(lin(l, 'attention.v_lin', x), nh, hd);
        const o = scaledDotProductAttention(q, k, v, { mask, dropout: attnP, training: train, rng: this.rng });
        const sa = norm(l, 'sa_layer_norm', add(lin(l, 'attention.out_lin', mergeHeads(o)), x));
        const f = dropout(lin(l, 'ffn.lin2', this.act(lin(l, 'ffn.lin1', sa))), p, train, this.rng);
        return norm(l, 'output_layer_norm', add(f, sa));
      };
      h = maybeCheckpoint(ckpt, run, h, this.rng);
    }
    return h;
  }
}

/** DistilBertForSequenceClassification: [CLS] -> pre_classifier -> ReLU -> dropout -> classifier. */
export class DistilBertForSequenceClassification extends DistilBertBase {
  readonly task = 'SEQ_CLS' as const;
  readonly architecture = 'DistilBertForSequenceClassification';

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(withNumLabels(asModelConfig(config), opts.numLabels), opts);
    this.registerModule('pre_classifier', new Linear(this.dim, this.dim, true, this.rng));
    this.registerModule('classifier', new Linear(this.dim, this.numLabels, true, this.rng));
    this.initRandom(this.paddingIdxOf);
  }

  override outputHeadNames(): string[] { return ['classifier']; }

  forward(inputs: ModelInputs): ModelOutput {
    const h = this.encode(inputs);
    const pooled = relu(lin(this, 'pre_classifier', poolFirst(h)));
    const p = num(this.config.raw, ['seq_classif_dropout'], 0.2);
    const logits = lin(this, 'classifier', dropout(pooled, p, this.training, this.rng));
    const loss = inputs.labels ? seqClsLoss(logits, inputs.labels, this.numLabels, this.config.raw.problem_type as string | undefined) : undefined;
    return { logits, loss };
  }
}

/** DistilBertForTokenClassification: dropout -> classifier on every token. */
export class DistilBertForTokenClassification extends DistilBertBase {
  readonly task = 'TOKEN_CLS' as const;
  readonly architecture = 'DistilBertForTokenClassification';

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(withNumLabels(asModelConfig(config), opts.numLabels), opts);
    this.registerModule('classifier', new Linear(this.dim, this.numLabels, true, this.rng));
    this.initRandom(this.paddingIdxOf);
  }

  forward(inputs: ModelInputs): ModelOutput {
    const h = this.encode(inputs);
    const logits = lin(this, 'classifier', dropout(h, num(this.config.raw, ['dropout'], 0.1), this.training, this.rng));
    const loss = inputs.labels ? tokenClsLoss(logits, inputs.labels) : undefined;
    return { logits, loss };
  }
}
