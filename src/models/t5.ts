// T5 (v1.0, v1.1 / flan: gated-gelu) as transformers' T5ForConditionalGeneration, with its
// parameter names: shared, {encoder,decoder}.block.N.layer.0.SelfAttention.{q,k,v,o,
// relative_attention_bias (block 0)}, layer.0.layer_norm, decoder layer.1.EncDecAttention.
// {q,k,v,o} + layer_norm, the feed-forward (layer.1 / layer.2).DenseReluDense.{wi | wi_0,
// wi_1, wo} + layer_norm, {encoder,decoder}.final_layer_norm, lm_head.
// T5's ways: RMS norms without bias (pre-norm), attention without 1/sqrt(d) scaling, a
// learned bias per relative-position bucket (computed by the first block, shared by all),
// and decoder outputs scaled by d_model^-0.5 before a tied lm head.
import type { Tensor } from '../tensor/tensor.js';
import { empty } from '../tensor/tensor.js';
import { add, affine, mul, permute, reshape } from '../tensor/ops/basic.js';
import { dropout, scaledDotProductAttention } from '../tensor/ops/nn.js';
import { ModuleList } from '../nn/module.js';
import { Embedding, Linear, RMSNorm, activation } from '../nn/layers.js';
import type { KVCache, ModelConfig } from './types.js';
import type { ModelInitOptions } from './base.js';
import {
  Container, appendKv, asModelConfig, attentionBias, cacheLength, emb, lin, maybeCheckpoint, mergeHeads, norm, num, optNum,
  splitHeads, str, type RawConfig,
} from './common.js';
import { Seq2SeqLMBase, checkEncoderInputs, crossKv, type DecodeInputs } from './seq2seq.js';

/**
 * transformers' T5Attention._relative_position_bucket for one relative position (key -
 * query), in float32 as torch computes the log-spaced buckets.
 */
export function relativePositionBucket(rel: number, bidirectional: boolean, numBuckets: number, maxDistance: number): number {
  const f = Math.fround;
  let bucket = 0, nb = numBuckets, rp = rel;
  if (bidirectional) {
    nb = Math.floor(nb / 2);
    if (rp > 0) bucket += nb;
    rp = Math.abs(rp);
  } else {
    rp = -Math.min(rp, 0);
  }
  const maxExact = Math.floor(nb / 2);
  if (rp < maxExact) return bucket + rp;
  const large = maxExact + Math.trunc(f(f(f(Math.log(f(rp / maxExact))) / f(Math.log(maxDistance / maxExact))) * (nb - maxExact)));
  return bucket + Math.min(large, nb - 1);
}

export class T5ForConditionalGeneration extends Seq2SeqLMBase {
  readonly architecture = 'T5ForConditionalGeneration';
  readonly config: ModelConfig;
  // T5PreTrainedModel.base_model_prefix; its checkpoints carry no prefix.
  readonly baseModelPrefix = 'transformer';
  readonly layersPrefix = 'encoder.block';
  readonly decoderMaxPositions = null;
  readonly tied: boolean;
  /** Decoder outputs times d_model^-0.5 before the lm head (T5 v1.0; not v1.1 / flan). */
  readonly scaleDecoderOutputs: boolean;
  private readonly dModel: number;
  private readonly nHeads: number;
  private readonly dKv: number;
  private readonly gated: boolean;
  private readonly act: (x: Tensor) => Tensor;
  private readonly numBuckets: number;
  private readonly maxDistance: number;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(opts);
    this.config = asModelConfig(config);
    const raw = this.config.raw, c = this.config;
    if (c.modelType !== 't5') throw new Error(`model_type '${c.modelType}' is not t5`);
    const d = this.dModel = c.hiddenSize;
    this.nHeads = c.numHeads;
    this.dKv = num(raw, ['d_kv'], Math.floor(d / this.nHeads));
    const ff = num(raw, ['d_ff'], 4 * d);
    const eps = num(raw, ['layer_norm_epsilon'], 1e-6);
    const proj = str(raw, ['feed_forward_proj'], 'relu');
    const parts = proj.split('-');
    if (parts.length > 2 || (parts.length === 2 && parts[0] !== 'gated')) {
      throw new Error(`feed_forward_proj '${proj}' is not '{ACT}' or 'gated-{ACT}' (e.g. 'relu', 'gated-gelu')`);
    }
    this.gated = parts[0] === 'gated' && parts.length === 2;
    // transformers: 'gated-gelu' means the tanh approximation (gelu_new), for backwards compatibility.
    this.act = activation(proj === 'gated-gelu' ? 'gelu_new' : parts[parts.length - 1]);
    this.numBuckets = num(raw, ['relative_attention_num_buckets'], 32);
    this.maxDistance = num(raw, ['relative_attention_max_distance'], 128);
    // transformers 5 ties lm_head to shared unless the checkpoint says tie_word_embeddings
    // false (v1.1 / flan, which have their own lm_head); v1.0 scales the decoder output.
    this.tied = raw.tie_word_embeddings !== false;
    this.scaleDecoderOutputs = typeof raw.scale_decoder_outputs === 'boolean' ? raw.scale_decoder_outputs : raw.tie_word_embeddings !== false;
    const nDec = optNum(raw, 'num_decoder_layers') ?? c.numLayers;
    const inner = this.nHeads * this.dKv;

    const shared = this.registerModule('shared', new Embedding(c.vocabSize, d, this.rng));
    const attn = (bias: boolean) => {
      const a = new Container();
      for (const n of ['q', 'k', 'v']) a.registerModule(n, new Linear(d, inner, false, this.rng));
      a.registerModule('o', new Linear(inner, d, false, this.rng));
      if (bias) a.registerModule('relative_attention_bias', new Embedding(this.numBuckets, this.nHeads, this.rng));
      return a;
    };
    const ffLayer = () => {
      const l = new Container();
      const m = l.registerModule('DenseReluDense', new Container());
      if (this.gated) {
        m.registerModule('wi_0', new Linear(d, ff, false, this.rng));
        m.registerModule('wi_1', new Linear(d, ff, false, this.rng));
      } else {
        m.registerModule('wi', new Linear(d, ff, false, this.rng));
      }
      m.registerModule('wo', new Linear(ff, d, false, this.rng));
      l.registerModule('layer_norm', new RMSNorm(d, eps));
      return l;
    };
    for (const [stack, n, isDec] of [['encoder', c.numLayers, false], ['decoder', nDec, true]] as const) {
      const st = this.registerModule(stack, new Container());
      const blocks: Container[] = [];
      for (let i = 0; i < n; i++) {
        const blk = new Container();
        const layers: Container[] = [];
        const sa = new Container();
        sa.registerModule('SelfAttention', attn(i === 0));
        sa.registerModule('layer_norm', new RMSNorm(d, eps));
        layers.push(sa);
        if (isDec) {
          const ca = new Container();
          ca.registerModule('EncDecAttention', attn(false));
          ca.registerModule('layer_norm', new RMSNorm(d, eps));
          layers.push(ca);
        }
        layers.push(ffLayer());
        blk.registerModule('layer', new ModuleList(layers));
        blocks.push(blk);
      }
      st.registerModule('block', new ModuleList(blocks));
      st.registerModule('final_layer_norm', new RMSNorm(d, eps));
    }
    const head = this.registerModule('lm_head', new Linear(d, c.vocabSize, false, this.rng));
    this.initRandom();
    if (opts.initWeights ?? true) this.t5Init(null);
    if (this.tied) head.registerParameter('weight', shared.weight);
  }

  /**
   * transformers' T5 _init_weights: normal with a std per weight (initializer_factor times
   * 1 for the embeddings and lm head, d_model^-0.5 for inputs of width d_model, and so on)
   * instead of one initializer_range. Only the modules in `only` when given.
   */
  private t5Init(only: Set<string> | null): void {
    const f = num(this.config.raw, ['initializer_factor'], 1), d = this.dModel, kv = this.dKv, nh = this.nHeads;
    const ff = num(this.config.raw, ['d_ff'], 4 * d);
    const stdOf = (name: string): number => {
      const leaf = name.slice(name.lastIndexOf('.') + 1);
      if (name === 'shared' || name === 'lm_head') return f;
      if (leaf === 'q') return f * (d * kv) ** -0.5;
      if (leaf === 'k' || leaf === 'v' || leaf === 'relative_attention_bias' || leaf.startsWith('wi')) return f * d ** -0.5;
      if (leaf === 'o') return f * (nh * kv) ** -0.5;
      if (leaf === 'wo') return f * ff ** -0.5;
      return 0.02;
    };
    for (const [name, m] of this.namedModules()) {
      if (only && !only.has(name)) continue;
      if (!(m instanceof Linear || m instanceof Embedding)) continue;
      const w = m.weight, std = stdOf(name);
      if (w.dtype !== 'float32') continue;
      for (let i = 0; i < w.data.length; i++) w.data[i] = this.rng.normal() * std;
    }
  }

  override initParameters(paramNames: string[]): void {
    this.t5Init(new Set(paramNames.map((k) => k.slice(0, Math.max(0, k.lastIndexOf('.'))))));
  }

  defaultLoraTargets(): string[] { return ['q', 'v']; }
  override tiedWeightKeys(): string[] { return this.tied ? ['lm_head.weight'] : []; }
  override outputHeadNames(): string[] { return ['lm_head']; }
  // The stacks' embed_tokens are the shared table (tied in transformers, saved by older versions).
  override ignoredUnexpectedKeys(): RegExp[] { return [/^(encoder|decoder)\.embed_tokens\.weight$/]; }

  private get dropoutRate(): number { return num(this.config.raw, ['dropout_rate'], 0.1); }

  /** Relative-position bias [1, H, T, S] for queries past..past+t-1 over keys 0..s-1 (grad flows to the bucket table). */
  private positionBias(stack: Container, t: number, s: number, past: number, bidirectional: boolean): Tensor {
    const ids = empty([t * s], 'int32', false);
    for (let i = 0; i < t; i++) {
      for (let j = 0; j < s; j++) ids.ints[i * s + j] = relativePositionBucket(j - (past + i), bidirectional, this.numBuckets, this.maxDistance);
    }
    const vals = emb(stack, 'block.0.layer.0.SelfAttention.relative_attention_bias', ids); // [t*s, H]
    return reshape(permute(reshape(vals, [t, s, this.nHeads]), [2, 0, 1]), [1, this.nHeads, t, s]);
  }

  private feedForward(l: Container, x: Tensor): Tensor {
    const train = this.training, p = this.dropoutRate;
    const h = norm(l, 'layer_norm', x);
    const a = this.gated
      ? mul(this.act(lin(l, 'DenseReluDense.wi_0', h)), lin(l, 'DenseReluDense.wi_1', h))
      : this.act(lin(l, 'DenseReluDense.wi', h));
    const y = lin(l, 'DenseReluDense.wo', dropout(a, p, train, this.rng));
    return add(x, dropout(y, p, train, this.rng));
  }

  encode(inputIds: Tensor, attentionMask?: Tensor | null): Tensor {
    const [b, s] = checkEncoderInputs(inputIds, attentionMask);
    const enc = this.getSubmodule('encoder') as Container;
    const train = this.training, p = this.dropoutRate, nh = this.nHeads, hd = this.dKv;
    let h = dropout(emb(this, 'shared', inputIds), p, train, this.rng);
    const pad = attentionBias(b, s, 0, attentionMask, { causal: false });
    const rel = this.positionBias(enc, s, s, 0, true);
    const bias = pad ? add(rel, pad) : rel;
    const ckpt = this.gradientCheckpointing && train;
    for (const blk of enc.getSubmodule('block') as ModuleList<Container>) {
      const run = (x: Tensor): Tensor => {
        const sa = blk.getSubmodule('layer.0') as Container;
        const a = norm(sa, 'layer_norm', x);
        const q = splitHeads(lin(sa, 'SelfAttention.q', a), nh, hd);
        const k = splitHeads(lin(sa, 'SelfAttention.k', a), nh, hd);
        const v = splitHeads(lin(sa, 'SelfAttention.v', a), nh, hd);
        const o = scaledDotProductAttention(q, k, v, { mask: bias, scale: 1, dropout: p, training: train, rng: this.rng });
        const x2 = add(x, dropout(lin(sa, 'SelfAttention.o', mergeHeads(o)), p, train, this.rng));
        return this.feedForward(blk.getSubmodule('layer.1') as Container, x2);
      };
      h = maybeCheckpoint(ckpt, run, h, this.rng);
    }
    return dropout(norm(enc, 'final_layer_norm', h), p, train, this.rng);
  }

  protected decode(d: DecodeInputs): { hidden: Tensor; cache?: KVCache } {
    const { decoderInputIds: ids, pastKeyValues: pastKv, encoderHidden } = d;
    const [b, t] = ids.shape;
    const past = cacheLength(pastKv);
    const s = encoderHidden.shape[1];
    const dec = this.getSubmodule('decoder') as Container;
    const train = this.training, p = this.dropoutRate, nh = this.nHeads, hd = this.dKv;
    let h = dropout(emb(this, 'shared', ids), p, train, this.rng);
    const causal = attentionBias(b, t, past, d.decoderAttentionMask, { causal: true });
    const rel = this.positionBias(dec, t, past + t, past, false);
    const selfBias = causal ? add(rel, causal) : rel;
    const crossBias = attentionBias(b, s, 0, d.encoderAttentionMask, { causal: false });
    const cache: KVCache | null = d.useCache ? { layers: [], length: past + t } : null;
    const ckpt = this.gradientCheckpointing && train && !d.useCache;
    let i = 0;
    for (const blk of dec.getSubmodule('block') as ModuleList<Container>) {
      const li = i++;
      const run = (x: Tensor): Tensor => {
        const sa = blk.getSubmodule('layer.0') as Container;
        const a = norm(sa, 'layer_norm', x);
        const q = splitHeads(lin(sa, 'SelfAttention.q', a), nh, hd);
        const kv = appendKv(pastKv, cache, li, splitHeads(lin(sa, 'SelfAttention.k', a), nh, hd),
          splitHeads(lin(sa, 'SelfAttention.v', a), nh, hd), past + t);
        const o = scaledDotProductAttention(q, kv.k, kv.v, { mask: selfBias, scale: 1, dropout: p, training: train, rng: this.rng });
        const x2 = add(x, dropout(lin(sa, 'SelfAttention.o', mergeHeads(o)), p, train, this.rng));
        const ca = blk.getSubmodule('layer.1') as Container;
        const c = norm(ca, 'layer_norm', x2);
        const cq = splitHeads(lin(ca, 'EncDecAttention.q', c), nh, hd);
        const ckv = crossKv(pastKv, cache, li, nh, hd, () => ({ k: lin(ca, 'EncDecAttention.k', encoderHidden), v: lin(ca, 'EncDecAttention.v', encoderHidden) }));
        const co = scaledDotProductAttention(cq, ckv.k, ckv.v, { mask: crossBias, scale: 1, dropout: p, training: train, rng: this.rng });
        const x3 = add(x2, dropout(lin(ca, 'EncDecAttention.o', mergeHeads(co)), p, train, this.rng));
        return this.feedForward(blk.getSubmodule('layer.2') as Container, x3);
      };
      h = maybeCheckpoint(ckpt, run, h, this.rng);
    }
    return { hidden: dropout(norm(dec, 'final_layer_norm', h), p, train, this.rng), cache: cache ?? undefined };
  }

  protected lmLogits(hidden: Tensor): Tensor {
    return lin(this, 'lm_head', this.scaleDecoderOutputs ? affine(hidden, this.dModel ** -0.5, 0) : hidden);
  }
}
