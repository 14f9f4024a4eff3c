// BART as transformers' BartForConditionalGeneration, with its parameter names:
// model.shared, model.{encoder,decoder}.embed_positions (learned, offset 2),
// layernorm_embedding, layers.N.{self_attn.{q,k,v,out}_proj, self_attn_layer_norm,
// (decoder) encoder_attn.{q,k,v,out}_proj, encoder_attn_layer_norm, fc1, fc2,
// final_layer_norm}, lm_head (tied to model.shared) + the final_logits_bias buffer.
// Post-norm layers; token embeddings times sqrt(d_model) when scale_embedding.
import type { Tensor } from '../tensor/tensor.js';
import { empty } from '../tensor/tensor.js';
import { add, affine, reshape, zeros } from '../tensor/ops/basic.js';
import { dropout, scaledDotProductAttention } from '../tensor/ops/nn.js';
import { ModuleList } from '../nn/module.js';
import { Embedding, LayerNorm, Linear, activation } from '../nn/layers.js';
import type { KVCache, ModelConfig } from './types.js';
import type { ModelInitOptions } from './base.js';
import {
  Container, appendKv, asModelConfig, attentionBias, bool, cacheLength, emb, lin, maybeCheckpoint, mergeHeads, norm, num,
  splitHeads, str, type RawConfig,
} from './common.js';
import { Seq2SeqLMBase, checkEncoderInputs, crossKv, type DecodeInputs } from './seq2seq.js';

/** BartLearnedPositionalEmbedding's offset: its table has max_position_embeddings + 2 rows. */
const POSITION_OFFSET = 2;

export class BartForConditionalGeneration extends Seq2SeqLMBase {
  readonly architecture = 'BartForConditionalGeneration';
  readonly config: ModelConfig;
  readonly baseModelPrefix = 'model';
  readonly layersPrefix = 'model.encoder.layers';
  readonly decoderMaxPositions: number;
  readonly tied: boolean;
  private readonly dModel: number;
  private readonly embedScale: number;
  private readonly act: (x: Tensor) => Tensor;

  constructor(config: ModelConfig | RawConfig, opts: ModelInitOptions = {}) {
    super(opts);
    this.config = asModelConfig(config);
    const raw = this.config.raw, c = this.config;
    if (c.modelType !== 'bart') throw new Error(`model_type '${c.modelType}' is not bart`);
    const d = this.dModel = c.hiddenSize;
    this.decoderMaxPositions = c.maxPositions;
    this.embedScale = bool(raw, 'scale_embedding', false) ? Math.sqrt(d) : 1;
    this.act = activation(str(raw, ['activation_function'], 'gelu'));
    this.tied = raw.tie_word_embeddings !== false;
    const eps = 1e-5;
    const model = this.registerModule('model', new Container());
    const shared = model.registerModule('shared', new Embedding(c.vocabSize, d, this.rng));
    const attn = () => {
      const a = new Container();
      for (const n of ['k_proj', 'v_proj', 'q_proj', 'out_proj']) a.registerModule(n, new Linear(d, d, true, this.rng));
      return a;
    };
    for (const stack of ['encoder', 'decoder'] as const) {
      const isDec = stack === 'decoder';
      const n = num(raw, [`${stack}_layers`], c.numLayers);
      const heads = num(raw, [`${stack}_attention_heads`], c.numHeads);
      if (d % heads !== 0) throw new Error(`d_model ${d} is not a multiple of ${stack}_attention_heads ${heads}`);
      const ffn = num(raw, [`${stack}_ffn_dim`], 4 * d);
      const st = model.registerModule(stack, new Container());
      st.registerModule('embed_positions', new Embedding(c.maxPositions + POSITION_OFFSET, d, this.rng));
      const layers: Container[] = [];
      for (let i = 0; i < n; i++) {
        const l = new Container();
        l.registerModule('self_attn', attn());
        l.registerModule('self_attn_layer_norm', new LayerNorm(d, eps));
        if (isDec) {
          l.registerModule('encoder_attn', attn());
          l.registerModule('encoder_attn_layer_norm', new LayerNorm(d, eps));
        }
        l.registerModule('fc1', new Linear(d, ffn, true, this.rng));
        l.registerModule('fc2', new Linear(ffn, d, true, this.rng));
        l.registerModule('final_layer_norm', new LayerNorm(d, eps));
        layers.push(l);
      }
      st.registerModule('layers', new ModuleList(layers));
      st.registerModule('layernorm_embedding', new LayerNorm(d, eps));
    }
    const head = this.registerModule('lm_head', new Linear(d, c.vocabSize, false, this.rng));
    // A buffer in transformers: saved and loaded, never trained.
    this.registerParameter('final_logits_bias', zeros([1, c.vocabSize]));
    this.initRandom((name) => (name === 'model.shared' ? this.padTokenId : null));
    if (this.tied) head.registerParameter('weight', shared.weight);
  }

  defaultLoraTargets(): string[] { return ['q_proj', 'v_proj']; }
  override tiedWeightKeys(): string[] { return this.tied ? ['lm_head.weight'] : []; }
  override outputHeadNames(): string[] { return ['lm_head']; }
  override bufferNames(): string[] { return ['final_logits_bias']; }
  override ignoredUnexpectedKeys(): RegExp[] { return [/^model\.(encoder|decoder)\.embed_tokens\.weight$/]; }

  private heads(stack: 'encoder' | 'decoder'): number { return num(this.config.raw, [`${stack}_attention_heads`], this.config.numHeads); }
  private get p(): number { return num(this.config.raw, ['dropout'], 0.1); }
  private get attnP(): number { return num(this.config.raw, ['attention_dropout'], 0); }
  private get actP(): number { return num(this.config.raw, ['activation_dropout'], 0); }

  /** Scaled token embeddings + learned positions past..past+t-1 (+ offset), then layernorm_embedding and dropout. */
  private embed(stack: Container, ids: Tensor, past: number): Tensor {
    const t = ids.shape[1];
    if (past + t > this.config.maxPositions) throw new Error(`position ${past + t - 1} is outside BART's ${this.config.maxPositions} positions (max_position_embeddings)`);
    const pos = empty([t], 'int32', false);
    for (let i = 0; i < t; i++) pos.ints[i] = past + i + POSITION_OFFSET;
    let tok = emb(this, 'model.shared', ids);
    if (this.embedScale !== 1) tok = affine(tok, this.embedScale, 0);
    const h = add(tok, reshape(emb(stack, 'embed_positions', pos), [1, t, this.dModel]));
    return dropout(norm(stack, 'layernorm_embedding', h), this.p, this.training, this.rng);
  }

  private ffn(l: Container, x: Tensor): Tensor {
    const train = this.training;
    const f = dropout(this.act(lin(l, 'fc1', x)), this.actP, train, this.rng);
    return norm(l, 'final_layer_norm', add(x, dropout(lin(l, 'fc2', f), this.p, train, this.rng)));
  }

  encode(inputIds: Tensor, attentionMask?: Tensor | null): Tensor {
    const [b, s] = checkEncoderInputs(inputIds, attentionMask);
    const enc = this.getSubmodule('model.encoder') as Container;
    const train = this.training, nh = this.heads('encoder'), hd = this.dModel / nh;
    let h = this.embed(enc, inputIds, 0);
    const mask = attentionBias(b, s, 0, attentionMask, { causal: false });
    const ckpt = this.gradientCheckpointing && train;
    for (const l of enc.getSubmodule('layers') as ModuleList<Container>) {
      const run = (x: Tensor): Tensor => {
        const q = splitHeads(lin(l, 'self_attn.q_proj', x), nh, hd);
        const k = splitHeads(lin(l, 'self_attn.k_proj', x), nh, hd);
        const v = splitHeads(lin(l, 'self_attn.v_proj', x), nh, hd);
        const o = scaledDotProductAttention(q, k, v, { mask, dropout: this.attnP, training: train, rng: this.rng });
        const x2 = norm(l, 'self_attn_layer_norm', add(x, dropout(lin(l, 'self_attn.out_proj', mergeHeads(o)), this.p, train, this.rng)));
        return this.ffn(l, x2);
      };
      h = maybeCheckpoint(ckpt, run, h, this.rng);
    }
    return h;
  }

  protected decode(d: DecodeInputs): { hidden: Tensor; cache?: KVCache } {
    const { decoderInputIds: ids, pastKeyValues: pastKv, encoderHidden } = d;
    const [b, t] = ids.shape;
    const past = cacheLength(pastKv);
    const s = encoderHidden.shape[1];
    const dec = this.getSubmodule('model.decoder') as Container;
    const train = this.training, nh = this.heads('decoder'), hd = this.dModel / nh;
    const cnh = nh;
    let h = this.embed(dec, ids, past);
    const selfMask = attentionBias(b, t, past, d.decoderAttentionMask, { causal: true });
    const crossMask = attentionBias(b, s, 0, d.encoderAttentionMask, { causal: false });
    const cache: KVCache | null = d.useCache ? { layers: [], length: past + t } : null;
    const ckpt = this.gradientCheckpointing && train && !d.useCache;
    let i = 0;
    for (const l of dec.getSubmodule('layers') as ModuleList<Container>) {
      const li = i++;
      const run = (x: Tensor): Tensor => {
        const q = splitHeads(lin(l, 'self_attn.q_proj', x), nh, hd);
        const kv = appendKv(pastKv, cache, li, splitHeads(lin(l, 'self_attn.k_proj', x), nh, hd),
          splitHeads(lin(l, 'self_attn.v_proj', x), nh, hd), past + t);
        const o = scaledDotProductAttention(q, kv.k, kv.v, { mask: selfMask, dropout: this.attnP, training: train, rng: this.rng });
        const x2 = norm(l, 'self_attn_layer_norm', add(x, dropout(lin(l, 'self_attn.out_proj', mergeHeads(o)), this.p, train, this.rng)));
        const cq = splitHeads(lin(l, 'encoder_attn.q_proj', x2), cnh, hd);
        const ckv = crossKv(pastKv, cache, li, cnh, hd, () => ({ k: lin(l, 'encoder_attn.k_proj', encoderHidden), v: lin(l, 'encoder_attn.v_proj', encoderHidden) }));
        const co = scaledDotProductAttention(cq, ckv.k, ckv.v, { mask: crossMask, dropout: this.attnP, training: train, rng: this.rng });
        const x3 = norm(l, 'encoder_attn_layer_norm', add(x2, dropout(lin(l, 'encoder_attn.out_proj', mergeHeads(co)), this.p, train, this.rng)));
        return this.ffn(l, x3);
      };
      h = maybeCheckpoint(ckpt, run, h, this.rng);
    }
    return { hidden: h, cache: cache ?? undefined };
  }

  protected lmLogits(hidden: Tensor): Tensor {
    return add(lin(this, 'lm_head', hidden), this.getParameter('final_logits_bias')!);
  }
}
