// ModernBERT as transformers' ModernBertFor{Sequence,Token}Classification, with its names:
// model.embeddings.{tok_embeddings,norm}, model.layers.N.{attn_norm (N > 0), attn.{Wqkv,Wo},
// mlp_norm, mlp.{Wi,Wo}}, model.final_norm, head.{dense,norm}, classifier.
// Pre-norm layers (LayerNorm without bias unless norm_bias), a fused qkv, a GLU MLP (Wi gives
// input and gate), rotary positions with one theta for global and one for local layers, and
// local layers seeing keys within local_attention / 2 positions either side. transformers'
// unpadded (flash) path and this padded one compute the same outputs at the real tokens.
import type { Tensor } from '../tensor/tensor.js';
import { add, div, mul, split, sum } from '../tensor/ops/basic.js';
import { dropout, rope, scaledDotProductAttention } from '../tensor/ops/nn.js';
import { tensor } from '../tensor/ops/basic.js';
import { ModuleList } from '../nn/module.js';
import { Embedding, LayerNorm, Linear, activation } from '../nn/layers.js';
import type { ModelConfig, ModelInputs, ModelOutput } from './types.js';
import { HFModel, withNumLabels, type ModelInitOptions } from './base.js';
import {
  Container, MASK_MIN, asModelConfig, attentionBias, bool, emb, lin, maybeCheckpoint, mergeHeads, norm, num, poolFirst,
  positionsFor, seqClsLoss, splitHeads, str, tokenClsLoss, type RawConfig,
} from './common.js';
import { RopeCache } from './rope.js';

type LayerType = 'full_attention' | 'sliding_attention';

/** Per layer: global ('full_attention') or local ('sliding_attention'), as transformers 5 reads the config. */
export function modernBertLayerTypes(raw: RawConfig, n: number): LayerType[] {
  if (Array.isArray(raw.layer_types)) {
    const t = raw.layer_types as string[];
    if (t.length !== n || t.some((x) => x !== 'full_attention' && x !== 'sliding_attention')) {
      throw new Error(`layer_types must list ${n} of 'full_attention' / 'sliding_attention'`);
    }
    return t as LayerType[];
  }
  const every = num(raw, ['global_attn_every_n_layers'], 3);
  return Array.from({ length: n }, (_, i) => (i % every ? 'sliding_attention' : 'full_attention'));
}

/** LayerNorm with or without bias (norm_bias). */
function layerNorm(d: number, eps: number, bias: boolean): LayerNorm {
  const ln = new LayerNorm(d, eps);
  if (!bias) ln.registerParameter('bias', null);
  return ln;
}

abstract class ModernBertBase extends HFModel {
  readonly config: ModelConfig;
  readonly baseModelPrefix = 'model';
  readonly layersPrefix = 'model.layers';
  protected readonly hidden: number;
  protected readonly types: LayerType[];
  private readonly act: (x: Tensor) => Tensor;
  protected readonly headAct: (x: Tensor) => Tensor;
  private readonly ropes: Record<LayerType, RopeCache>;
  private readonly inter: number;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions) {
    super(opts);
    this.config = asModelConfig(config);
    const raw = this.config.raw, c = this.config;
    if (c.modelType !== 'modernbert') throw new Error(`model_type '${c.modelType}' is not modernbert`);
    const d = this.hidden = c.hiddenSize, nh = c.numHeads;
    if (d % nh !== 0) throw new Error(`hidden_size ${d} is not a multiple of num_attention_heads ${nh}`);
    const hd = d / nh;
    this.inter = num(raw, ['intermediate_size'], 1152);
    const eps = num(raw, ['norm_eps'], 1e-5), nb = bool(raw, 'norm_bias', false);
    const attnBias = bool(raw, 'attention_bias', false), mlpBias = bool(raw, 'mlp_bias', false);
    this.act = activation(str(raw, ['hidden_activation'], 'gelu'));
    this.headAct = activation(str(raw, ['classifier_activation'], 'gelu'));
    this.types = modernBertLayerTypes(raw, c.numLayers);
    const rp = (raw.rope_parameters && typeof raw.rope_parameters === 'object' ? raw.rope_parameters : {}) as Record<string, Record<string, unknown> | undefined>;
    const ropeOf = (t: LayerType, theta: number) => new RopeCache(
      { rope_parameters: { rope_type: 'default', rope_theta: theta, ...(rp[t] ?? {}) } }, hd, c.maxPositions, Math.min(c.maxPositions, 4096));
    this.ropes = {
      full_attention: ropeOf('full_attention', num(raw, ['global_rope_theta'], 160000)),
      sliding_attention: ropeOf('sliding_attention', num(raw, ['local_rope_theta'], 10000)),
    };
    const model = this.registerModule('model', new Container());
    const e = model.registerModule('embeddings', new Container());
    e.registerModule('tok_embeddings', new Embedding(c.vocabSize, d, this.rng));
    e.registerModule('norm', layerNorm(d, eps, nb));
    const layers: Container[] = [];
    for (let i = 0; i < c.numLayers; i++) {
      const l = new Container();
      if (i > 0) l.registerModule('attn_norm', layerNorm(d, eps, nb)); // an Identity in layer 0
      const at = l.registerModule('attn', new Container());
      at.registerModule('Wqkv', new Linear(d, 3 * d, attnBias, this.rng));
      at.registerModule('Wo', new Linear(d, d, attnBias, this.rng));
      l.registerModule('mlp_norm', layerNorm(d, eps, nb));
      const mlp = l.registerModule('mlp', new Container());
      mlp.registerModule('Wi', new Linear(d, 2 * this.inter, mlpBias, this.rng));
      mlp.registerModule('Wo', new Linear(this.inter, d, mlpBias, this.rng));
      layers.push(l);
    }
    model.registerModule('layers', new ModuleList(layers));
    model.registerModule('final_norm', layerNorm(d, eps, nb));
    const head = this.registerModule('head', new Container());
    head.registerModule('dense', new Linear(d, d, bool(raw, 'classifier_bias', false), this.rng));
    head.registerModule('norm', layerNorm(d, eps, nb));
  }

  protected override disposeBuffers(): void { this.ropes.full_attention.dispose(); this.ropes.sliding_attention.dispose(); }

  // peft 0.21 has no default LoRA targets for modernbert: targetModules must be given.
  defaultLoraTargets(): string[] { return []; }
  override classifierModuleNames(): string[] { return ['classifier', 'score']; }
  override outputHeadNames(): string[] { return ['classifier']; }

  protected get classifierDropout(): number { return num(this.config.raw, ['classifier_dropout'], 0); }

  /** Local layers: keys with |query - key| > local_attention / 2 masked, on top of the padding. */
  private slidingBias(b: number, t: number, padBias: Tensor | null): Tensor | null {
    const w = Math.floor(num(this.config.raw, ['local_attention'], 128) / 2);
    if (t - 1 <= w) return padBias;
    const bb = padBias ? b : 1;
    const out = new Float32Array(bb * t * t);
    const pb = padBias ? padBias.toFloat32Array() : null;
    for (let bi = 0; bi < bb; bi++) {
      for (let i = 0; i < t; i++) {
        for (let j = 0; j < t; j++) {
          const masked = Math.abs(i - j) > w || (pb !== null && pb[bi * t + j] !== 0);
          out[(bi * t + i) * t + j] = masked ? MASK_MIN : 0;
        }
      }
    }
    return tensor(out, [bb, 1, t, t]);
  }

  /** Last hidden states [B, T, H] (after final_norm). */
  protected encode(inputs: ModelInputs): Tensor {
    const { inputIds, attentionMask, positionIds } = inputs;
    if (inputs.pastKeyValues) throw new Error(`${this.architecture} is an encoder and has no KV cache`);
    if (inputIds.dtype !== 'int32' || inputIds.ndim !== 2) throw new Error('inputIds must be an int32 [B, T] tensor');
    const [b, t] = inputIds.shape;
    const c = this.config, raw = c.raw, nh = c.numHeads, hd = this.hidden / nh;
    const pos = positionsFor(b, t, 0, positionIds);
    let maxPos = 0;
    for (const p of pos.ints) { if (p < 0) throw new Error(`negative position id ${p}`); if (p > maxPos) maxPos = p; }
    const train = this.training;
    const model = this.getSubmodule('model') as Container;
    let h = dropout(norm(model, 'embeddings.norm', emb(model, 'embeddings.tok_embeddings', inputIds)), num(raw, ['embedding_dropout'], 0), train, this.rng);
    const full = attentionBias(b, t, 0, attentionMask, { causal: false });
    const masks: Record<LayerType, Tensor | null> = { full_attention: full, sliding_attention: this.slidingBias(b, t, full) };
    const tables = { full_attention: this.ropes.full_attention.tables(maxPos), sliding_attention: this.ropes.sliding_attention.tables(maxPos) };
    const attnP = num(raw, ['attention_dropout'], 0), mlpP = num(raw, ['mlp_dropout'], 0);
    const ckpt = this.gradientCheckpointing && train;
    let i = 0;
    for (const l of model.getSubmodule('layers') as ModuleList<Container>) {
      const type = this.types[i++];
      const { cos, sin } = tables[type];
      const run = (x: Tensor): Tensor => {
        const a = l.getChild('attn_norm') ? norm(l, 'attn_norm', x) : x;
        const [q, k, v] = split(lin(l, 'attn.Wqkv', a), [this.hidden, this.hidden, this.hidden], -1).map((z) => splitHeads(z, nh, hd));
        const o = scaledDotProductAttention(rope(q, cos, sin, pos), rope(k, cos, sin, pos), v,
          { mask: masks[type], dropout: attnP, training: train, rng: this.rng });
        const x2 = add(x, dropout(lin(l, 'attn.Wo', mergeHeads(o)), attnP, train, this.rng));
        const [inp, gate] = split(lin(l, 'mlp.Wi', norm(l, 'mlp_norm', x2)), [this.inter, this.inter], -1);
        return add(x2, lin(l, 'mlp.Wo', dropout(mul(this.act(inp), gate), mlpP, train, this.rng)));
      };
      h = maybeCheckpoint(ckpt, run, h, this.rng);
    }
    return norm(model, 'final_norm', h);
  }

  protected headOut(x: Tensor): Tensor {
    return dropout(norm(this, 'head.norm', this.headAct(lin(this, 'head.dense', x))), this.classifierDropout, this.training, this.rng);
  }
}

/** ModernBertForSequenceClassification: 'cls' (first token) or 'mean' (masked mean) pooling, head, classifier. */
export class ModernBertForSequenceClassification extends ModernBertBase {
  readonly task = 'SEQ_CLS' as const;
  readonly architecture = 'ModernBertForSequenceClassification';

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(withNumLabels(asModelConfig(config), opts.numLabels), opts);
    this.registerModule('classifier', new Linear(this.hidden, this.numLabels, true, this.rng));
    this.initRandom((name) => (name === 'model.embeddings.tok_embeddings' ? this.padTokenId : null));
  }

  forward(inputs: ModelInputs): ModelOutput {
    const h = this.encode(inputs);
    const pooling = str(this.config.raw, ['classifier_pooling'], 'cls');
    let pooled: Tensor;
    if (pooling === 'cls') pooled = poolFirst(h);
    else if (pooling === 'mean') {
      const [b, t] = inputs.inputIds.shape;
      const am = inputs.attentionMask;
      const m = new Float32Array(b * t).fill(1);
      if (am) { const v = am.dtype === 'int32' ? am.ints : am.data; for (let i = 0; i < m.length; i++) m[i] = v[i] ? 1 : 0; }
      const mt = tensor(m, [b, t, 1]);
      pooled = div(sum(mul(h, mt), 1), sum(mt, 1));
    } else throw new Error(`classifier_pooling '${pooling}' is not 'cls' or 'mean'`);
    const logits = lin(this, 'classifier', this.headOut(pooled));
    const loss = inputs.labels ? seqClsLoss(logits, inputs.labels, this.numLabels, this.config.raw.problem_type as string | undefined) : undefined;
    return { logits, loss };
  }
}

/** ModernBertForTokenClassification: head and classifier on every token. */
export class ModernBertForTokenClassification extends ModernBertBase {
  readonly task = 'TOKEN_CLS' as const;
  readonly architecture = 'ModernBertForTokenClassification';

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(withNumLabels(asModelConfig(config), opts.numLabels), opts);
    this.registerModule('classifier', new Linear(this.hidden, this.numLabels, true, this.rng));
    this.initRandom((name) => (name === 'model.embeddings.tok_embeddings' ? this.padTokenId : null));
  }

  forward(inputs: ModelInputs): ModelOutput {
    const logits = lin(this, 'classifier', this.headOut(this.encode(inputs)));
    const loss = inputs.labels ? tokenClsLoss(logits, inputs.labels) : undefined;
    return { logits, loss };
  }
}
