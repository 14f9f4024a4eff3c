// DeBERTa-v2 / v3 as transformers' DebertaV2For{Sequence,Token}Classification, with its
// names: deberta.embeddings.{word_embeddings, position_embeddings (position_biased_input),
// token_type_embeddings (type_vocab_size > 0), LayerNorm}, deberta.encoder.layer.N.attention.
// self.{query_proj,key_proj,value_proj, pos_key_proj / pos_query_proj (unless share_att_key)},
// attention.output.{dense,LayerNorm}, intermediate.dense, output.{dense,LayerNorm},
// deberta.encoder.{rel_embeddings, LayerNorm (norm_rel_ebd)}, pooler.dense, classifier.
// Disentangled attention: content-to-content plus content-to-position (c2p) and
// position-to-content (p2c) scores over log-spaced relative-position buckets, all scaled by
// sqrt(head_dim * (1 + #position terms)).
import type { Tensor } from '../tensor/tensor.js';
import { empty } from '../tensor/tensor.js';
import { add, affine, mul, permute, reshape, tensor, toFloat32 } from '../tensor/ops/basic.js';
import { dropout, indexSelect, matmul, softmax } from '../tensor/ops/nn.js';
import { ModuleList } from '../nn/module.js';
import { Embedding, LayerNorm, Linear, activation } from '../nn/layers.js';
import type { ModelConfig, ModelInputs, ModelOutput } from './types.js';
import { HFModel, withNumLabels, type ModelInitOptions } from './base.js';
import {
  Container, MASK_MIN, asModelConfig, bool, emb, lin, maybeCheckpoint, mergeHeads, norm, num, optNum, poolFirst,
  positionsFor, seqClsLoss, splitHeads, str, tokenClsLoss, type RawConfig,
} from './common.js';

/** transformers' make_log_bucket_position for one relative position, in float32 as torch does. */
export function logBucketPosition(rel: number, bucketSize: number, maxPosition: number): number {
  const f = Math.fround;
  const mid = Math.floor(bucketSize / 2);
  const abs = rel < mid && rel > -mid ? mid - 1 : Math.abs(rel);
  if (abs <= mid) return rel;
  const logPos = Math.ceil(f(f(f(Math.log(f(abs / mid))) / f(Math.log(f((maxPosition - 1) / mid)))) * (mid - 1))) + mid;
  return logPos * Math.sign(rel);
}

/** x [N, T, R] -> out[n, i, j] = x[n, i, idx[i * T2 + j]] ([N, T, T2]), differentiable (torch.gather on the last dim). */
function gatherLast(x: Tensor, idx: Int32Array, t2: number): Tensor {
  const [n, t, r] = x.shape;
  const flat = empty([n * t * t2], 'int32', false);
  for (let a = 0; a < n; a++) {
    for (let i = 0; i < t; i++) {
      for (let j = 0; j < t2; j++) flat.ints[(a * t + i) * t2 + j] = (a * t + i) * r + idx[i * t2 + j];
    }
  }
  return reshape(indexSelect(reshape(x, [n * t * r, 1]), flat), [n, t, t2]);
}

abstract class DebertaV2Base extends HFModel {
  readonly config: ModelConfig;
  readonly baseModelPrefix = 'deberta';
  readonly layersPrefix = 'deberta.encoder.layer';
  protected readonly hidden: number;
  private readonly act: (x: Tensor) => Tensor;
  private readonly relative: boolean;
  private readonly posTypes: string[];
  private readonly shareKey: boolean;
  private readonly buckets: number;
  private readonly maxRel: number;
  /** Rows of rel_embeddings used: att_span = buckets (or max_relative_positions). */
  private readonly span: number;
  private readonly posBiased: boolean;
  private readonly typeVocab: number;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions) {
    super(opts);
    this.config = asModelConfig(config);
    const raw = this.config.raw, c = this.config;
    if (c.modelType !== 'deberta-v2') throw new Error(`model_type '${c.modelType}' is not deberta-v2`);
    const d = this.hidden = c.hiddenSize, nh = c.numHeads;
    if (d % nh !== 0) throw new Error(`hidden_size ${d} is not a multiple of num_attention_heads ${nh}`);
    if (optNum(raw, 'attention_head_size') !== null && optNum(raw, 'attention_head_size') !== d / nh) throw new Error('attention_head_size other than hidden_size / heads is not supported');
    if (num(raw, ['conv_kernel_size'], 0) > 0) throw new Error('DeBERTa-v2 with a convolution layer (conv_kernel_size > 0) is not supported');
    const es = num(raw, ['embedding_size'], d);
    if (es !== d) throw new Error('DeBERTa-v2 with embedding_size other than hidden_size (embed_proj) is not supported');
    const eps = num(raw, ['layer_norm_eps'], 1e-7), inter = num(raw, ['intermediate_size'], 4 * d);
    this.act = activation(str(raw, ['hidden_act'], 'gelu'));
    this.relative = bool(raw, 'relative_attention', false);
    const pat = raw.pos_att_type;
    this.posTypes = (Array.isArray(pat) ? pat.map(String) : typeof pat === 'string' ? pat.toLowerCase().split('|') : []).map((s) => s.trim());
    for (const p of this.posTypes) if (p !== 'c2p' && p !== 'p2c') throw new Error(`pos_att_type '${p}' is not supported (c2p, p2c)`);
    this.shareKey = bool(raw, 'share_att_key', false);
    this.buckets = num(raw, ['position_buckets'], -1);
    const mr = num(raw, ['max_relative_positions'], -1);
    this.maxRel = mr < 1 ? c.maxPositions : mr;
    this.span = this.buckets > 0 ? this.buckets : this.maxRel;
    this.posBiased = bool(raw, 'position_biased_input', true);
    this.typeVocab = num(raw, ['type_vocab_size'], 0);

    const base = this.registerModule('deberta', new Container());
    const e = base.registerModule('embeddings', new Container());
    e.registerModule('word_embeddings', new Embedding(c.vocabSize, d, this.rng));
    if (this.posBiased) e.registerModule('position_embeddings', new Embedding(c.maxPositions, d, this.rng));
    if (this.typeVocab > 0) e.registerModule('token_type_embeddings', new Embedding(this.typeVocab, d, this.rng));
    e.registerModule('LayerNorm', new LayerNorm(d, eps));
    const enc = base.registerModule('encoder', new Container());
    const layers: Container[] = [];
    for (let i = 0; i < c.numLayers; i++) {
      const l = new Container();
      const at = l.registerModule('attention', new Container());
      const self = at.registerModule('self', new Container());
      for (const n of ['query_proj', 'key_proj', 'value_proj']) self.registerModule(n, new Linear(d, d, true, this.rng));
      if (this.relative && !this.shareKey) {
        if (this.posTypes.includes('c2p')) self.registerModule('pos_key_proj', new Linear(d, d, true, this.rng));
        if (this.posTypes.includes('p2c')) self.registerModule('pos_query_proj', new Linear(d, d, true, this.rng));
      }
      const ao = at.registerModule('output', new Container());
      ao.registerModule('dense', new Linear(d, d, true, this.rng));
      ao.registerModule('LayerNorm', new LayerNorm(d, eps));
      l.registerModule('intermediate', new Container()).registerModule('dense', new Linear(d, inter, true, this.rng));
      const out = l.registerModule('output', new Container());
      out.registerModule('dense', new Linear(inter, d, true, this.rng));
      out.registerModule('LayerNorm', new LayerNorm(d, eps));
      layers.push(l);
    }
    enc.registerModule('layer', new ModuleList(layers));
    if (this.relative) enc.registerModule('rel_embeddings', new Embedding(2 * this.span, d, this.rng));
    if (this.normRelEmbedding) enc.registerModule('LayerNorm', new LayerNorm(d, eps));
  }

  private get normRelEmbedding(): boolean {
    return str(this.config.raw, ['norm_rel_ebd'], 'none').toLowerCase().split('|').map((s) => s.trim()).includes('layer_norm');
  }

  // peft 0.21's default for deberta-v2.
  defaultLoraTargets(): string[] { return ['query_proj', 'value_proj']; }
  override classifierModuleNames(): string[] { return ['classifier', 'score']; }
  override outputHeadNames(): string[] { return ['classifier']; }
  override ignoredUnexpectedKeys(): RegExp[] { return [/embeddings\.position_ids$/, ...(this.posBiased ? [] : [/embeddings\.position_embeddings\./])]; }

  protected get hiddenDropout(): number { return num(this.config.raw, ['hidden_dropout_prob'], 0.1); }

  /** Relative positions q - k (log-bucketed when position_buckets > 0), [T * T]. */
  private relativePositions(t: number): Int32Array {
    const r = new Int32Array(t * t);
    for (let i = 0; i < t; i++) {
      for (let j = 0; j < t; j++) r[i * t + j] = this.buckets > 0 && this.maxRel > 0 ? logBucketPosition(i - j, this.buckets, this.maxRel) : i - j;
    }
    return r;
  }

  /** Last hidden states [B, T, H]. */
  protected encode(inputs: ModelInputs): Tensor {
    const { inputIds, attentionMask, tokenTypeIds, positionIds } = inputs;
    if (inputs.pastKeyValues) throw new Error(`${this.architecture} is an encoder and has no KV cache`);
    if (inputIds.dtype !== 'int32' || inputIds.ndim !== 2) throw new Error('inputIds must be an int32 [B, T] tensor');
    const [b, t] = inputIds.shape;
    const c = this.config, d = this.hidden, nh = c.numHeads, hd = d / nh;
    const train = this.training, hp = this.hiddenDropout;
    const base = this.getSubmodule('deberta') as Container;
    // 0/1 mask [B, T] (ones when absent).
    const m = new Float32Array(b * t).fill(1);
    if (attentionMask) {
      if (attentionMask.size !== b * t) throw new Error(`attentionMask must be [${b}, ${t}]`);
      const v = attentionMask.dtype === 'int32' ? attentionMask.ints : attentionMask.data;
      for (let i = 0; i < m.length; i++) m[i] = v[i] ? 1 : 0;
    }
    let h = emb(base, 'embeddings.word_embeddings', inputIds);
    if (this.posBiased) {
      const pos = positionsFor(b, t, 0, positionIds);
      for (const p of pos.ints) if (p < 0 || p >= c.maxPositions) throw new Error(`position ${p} is outside max_position_embeddings ${c.maxPositions}`);
      let pe = emb(base, 'embeddings.position_embeddings', pos);
      if (pos.size !== t) pe = reshape(pe, [b, t, d]);
      h = add(h, pe);
    }
    if (this.typeVocab > 0) {
      const tt = tokenTypeIds ?? empty([b, t], 'int32', true);
      if (tt.size !== b * t) throw new Error(`tokenTypeIds must be [${b}, ${t}]`);
      h = add(h, emb(base, 'embeddings.token_type_embeddings', tt));
    }
    h = dropout(mul(norm(base, 'embeddings.LayerNorm', h), tensor(m, [b, t, 1])), hp, train, this.rng);
    // transformers' mask is mask[q] * mask[k]: a padded query sees nothing (uniform after masked_fill).
    const biasData = new Float32Array(b * t * t);
    for (let bi = 0; bi < b; bi++) {
      for (let i = 0; i < t; i++) for (let j = 0; j < t; j++) biasData[(bi * t + i) * t + j] = m[bi * t + i] && m[bi * t + j] ? 0 : MASK_MIN;
    }
    const bias = tensor(biasData, [b, 1, t, t]);
    const factor = 1 + this.posTypes.length;
    const scale = Math.fround(Math.sqrt(Math.fround(hd * factor)));
    const enc = base.getSubmodule('encoder') as Container;
    let rel: Tensor | null = null, c2pIdx: Int32Array | null = null, p2cIdx: Int32Array | null = null;
    if (this.relative) {
      let r = (enc.getSubmodule('rel_embeddings') as Embedding).weight;
      if (r.dtype !== 'float32') r = toFloat32(r); // a bf16 table (dtype 'bfloat16') is read as a matrix here
      if (this.normRelEmbedding) r = norm(enc, 'LayerNorm', r);
      rel = reshape(r, [1, 2 * this.span, d]); // the table has exactly 2 * att_span rows
      const rp = this.relativePositions(t), span = this.span;
      const clamp = (x: number) => Math.min(Math.max(x, 0), 2 * span - 1);
      c2pIdx = Int32Array.from(rp, (x) => clamp(x + span));
      p2cIdx = Int32Array.from(rp, (x) => clamp(-x + span));
    }
    const attnP = num(c.raw, ['attention_probs_dropout_prob'], 0.1);
    const ckpt = this.gradientCheckpointing && train;
    for (const l of enc.getSubmodule('layer') as ModuleList<Container>) {
      const run = (x: Tensor): Tensor => {
        const q = splitHeads(lin(l, 'attention.self.query_proj', x), nh, hd);
        const k = splitHeads(lin(l, 'attention.self.key_proj', x), nh, hd);
        const v = splitHeads(lin(l, 'attention.self.value_proj', x), nh, hd);
        let scores = matmul(q, affine(k, 1 / scale, 0), false, true); // [B, H, T, T]
        if (rel) {
          const re = dropout(rel, hp, train, this.rng);
          const R = 2 * this.span;
          if (this.posTypes.includes('c2p')) {
            const pk = splitHeads(lin(l, this.shareKey ? 'attention.self.key_proj' : 'attention.self.pos_key_proj', re), nh, hd); // [1, H, R, D]
            const att = matmul(q, pk, false, true); // [B, H, T, R]
            const g = gatherLast(reshape(att, [b * nh, t, R]), c2pIdx!, t);
            scores = add(scores, affine(reshape(g, [b, nh, t, t]), 1 / scale, 0));
          }
          if (this.posTypes.includes('p2c')) {
            const pq = splitHeads(lin(l, this.shareKey ? 'attention.self.query_proj' : 'attention.self.pos_query_proj', re), nh, hd);
            const att = matmul(k, pq, false, true); // [B, H, Tk, R]
            const g = gatherLast(reshape(att, [b * nh, t, R]), p2cIdx!, t); // [BH, k, q]
            scores = add(scores, affine(permute(reshape(g, [b, nh, t, t]), [0, 1, 3, 2]), 1 / scale, 0));
          }
        }
        const probs = dropout(softmax(add(scores, bias)), attnP, train, this.rng);
        const o = mergeHeads(matmul(probs, v));
        const x2 = norm(l, 'attention.output.LayerNorm', add(dropout(lin(l, 'attention.output.dense', o), hp, train, this.rng), x));
        const f = dropout(lin(l, 'output.dense', this.act(lin(l, 'intermediate.dense', x2))), hp, train, this.rng);
        return norm(l, 'output.LayerNorm', add(f, x2));
      };
      h = maybeCheckpoint(ckpt, run, h, this.rng);
    }
    return h;
  }
}

/** DebertaV2ForSequenceClassification: ContextPooler (first token, dense, act) then the classifier. */
export class DebertaV2ForSequenceClassification extends DebertaV2Base {
  readonly task = 'SEQ_CLS' as const;
  readonly architecture = 'DebertaV2ForSequenceClassification';
  private readonly poolerAct: (x: Tensor) => Tensor;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(withNumLabels(asModelConfig(config), opts.numLabels), opts);
    const ph = num(this.config.raw, ['pooler_hidden_size'], this.hidden);
    if (ph !== this.hidden) throw new Error('pooler_hidden_size other than hidden_size is not supported');
    this.poolerAct = activation(str(this.config.raw, ['pooler_hidden_act'], 'gelu'));
    this.registerModule('pooler', new Container()).registerModule('dense', new Linear(ph, ph, true, this.rng));
    this.registerModule('classifier', new Linear(ph, this.numLabels, true, this.rng));
    this.initRandom((name) => (name === 'deberta.embeddings.word_embeddings' ? this.padTokenId ?? 0 : null));
  }

  forward(inputs: ModelInputs): ModelOutput {
    const h = this.encode(inputs);
    const train = this.training, raw = this.config.raw;
    const ctx = dropout(poolFirst(h), num(raw, ['pooler_dropout'], 0), train, this.rng);
    const pooled = this.poolerAct(lin(this, 'pooler.dense', ctx));
    const p = optNum(raw, 'cls_dropout') ?? this.hiddenDropout;
    const logits = lin(this, 'classifier', dropout(pooled, p, train, this.rng));
    const loss = inputs.labels ? seqClsLoss(logits, inputs.labels, this.numLabels, raw.problem_type as string | undefined) : undefined;
    return { logits, loss };
  }
}

/** DebertaV2ForTokenClassification: dropout and the classifier on every token. */
export class DebertaV2ForTokenClassification extends DebertaV2Base {
  readonly task = 'TOKEN_CLS' as const;
  readonly architecture = 'DebertaV2ForTokenClassification';

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(withNumLabels(asModelConfig(config), opts.numLabels), opts);
    this.registerModule('classifier', new Linear(this.hidden, this.numLabels, true, this.rng));
    this.initRandom((name) => (name === 'deberta.embeddings.word_embeddings' ? this.padTokenId ?? 0 : null));
  }

  forward(inputs: ModelInputs): ModelOutput {
    const h = this.encode(inputs);
    const logits = lin(this, 'classifier', dropout(h, this.hiddenDropout, this.training, this.rng));
    const loss = inputs.labels ? tokenClsLoss(logits, inputs.labels) : undefined;
    return { logits, loss };
  }
}
