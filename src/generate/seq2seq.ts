// generate() for encoder-decoder models, as transformers does it: the encoder runs once on
// the inputs; the decoder starts from decoder_start_token_id and is driven by the same
// greedy / sampling / beam loops as a causal LM, through a decoder-only view of the model
// whose forward adds the encoder output (expanded to the beams' or samples' rows). The
// cross-attention k/v live in the KV cache (computed by the first step).
import { Tensor, noGrad } from '../tensor/tensor.js';
import { keep, tidy } from '../tensor/memory.js';
import { tensor } from '../tensor/ops/basic.js';
import { indexSelect } from '../tensor/ops/nn.js';
import type { ModelInputs, ModelOutput } from '../models/types.js';
import type { CausalLM, GenerateOptions } from './generate.js';

interface EncoderDecoder {
  forward(inputs: ModelInputs): ModelOutput;
  encode(inputIds: Tensor, attentionMask?: Tensor | null): Tensor;
  config: { raw: Record<string, unknown> };
  decoderMaxPositions: number | null;
}

/** A model of task SEQ_2_SEQ_LM (a PeftModel over one included). */
export function isEncoderDecoder(model: unknown): boolean {
  return (model as { task?: string }).task === 'SEQ_2_SEQ_LM';
}

/** The model whose encode() to call: the model itself, or the one under a PeftModel. */
function encoderOf(model: CausalLM): EncoderDecoder {
  const m = model as unknown as Partial<EncoderDecoder> & { getBaseModel?: () => unknown };
  if (typeof m.encode === 'function') return m as EncoderDecoder;
  const base = m.getBaseModel?.() as Partial<EncoderDecoder> | undefined;
  if (base && typeof base.encode === 'function') return base as EncoderDecoder;
  throw new Error('generate: an encoder-decoder model must have encode(inputIds, attentionMask)');
}

type Generate = (model: CausalLM, inputIds: Tensor, opts: GenerateOptions) => Tensor;

/**
 * Returns the decoder's ids int32 [B * numReturnSequences, 1 + n], starting with the decoder
 * start token (transformers' output for encoder-decoders). eosTokenId / padTokenId default
 * to config.json's, as transformers' generation config does.
 */
export function generateSeq2Seq(model: CausalLM, inputIds: Tensor, opts: GenerateOptions, gen: Generate): Tensor {
  const core = encoderOf(model);
  const raw = core.config.raw;
  const start = opts.decoderStartTokenId ?? raw.decoder_start_token_id;
  if (typeof start !== 'number') throw new Error('generate: the model config has no decoder_start_token_id; pass decoderStartTokenId');
  const num = (v: unknown): number | null => (typeof v === 'number' ? v : Array.isArray(v) && typeof v[0] === 'number' ? v[0] : null);
  const eos = opts.eosTokenId !== undefined ? opts.eosTokenId : Array.isArray(raw.eos_token_id) ? raw.eos_token_id as number[] : num(raw.eos_token_id);
  const pad = opts.padTokenId !== undefined ? opts.padTokenId : num(raw.pad_token_id);
  const [b, s] = inputIds.shape;
  const mask = opts.attentionMask ?? null;
  if (mask && (mask.ndim !== 2 || mask.shape[0] !== b || mask.shape[1] !== s)) {
    throw new Error(`generate: attentionMask ${mask.label()} must have the shape of inputIds [${b}, ${s}]`);
  }
  const wasTraining = model.training === true && typeof model.train === 'function';
  if (wasTraining) model.train!(false);
  const owned: Tensor[] = [];
  try {
    const enc = noGrad(() => tidy(() => keep(core.encode(inputIds, mask))));
    owned.push(enc);
    // Encoder rows for n decoder rows: each prompt's row repeated n / B times, consecutively
    // (beams b*K..b*K+K-1, or a prompt's samples), as transformers' repeat_interleave.
    const expanded = new Map<number, { ids: Tensor; h: Tensor; m: Tensor | null }>();
    const expand = (n: number) => {
      let e = expanded.get(n);
      if (!e) {
        if (n % b !== 0) throw new Error(`generate: ${n} decoder rows for ${b} encoder rows`);
        const f = n / b;
        const rows = Int32Array.from({ length: n }, (_, i) => Math.floor(i / f));
        const pick = (src: ArrayLike<number>) => Int32Array.from({ length: n * s }, (_, i) => Number(src[rows[Math.floor(i / s)] * s + (i % s)]));
        e = noGrad(() => ({
          ids: keep(tensor(pick(inputIds.ints), [n, s], { dtype: 'int32' })),
          h: f === 1 ? enc : keep(indexSelect(enc, tensor(rows, [n], { dtype: 'int32' }))),
          m: mask ? keep(tensor(pick(mask.dtype === 'int32' ? mask.ints : mask.toFloat32Array()), [n, s], { dtype: 'int32' })) : null,
        }));
        owned.push(e.ids, ...(e.h === enc ? [] : [e.h]), ...(e.m ? [e.m] : []));
        expanded.set(n, e);
      }
      return e;
    };
    const decoder: CausalLM = {
      config: { maxPositions: core.decoderMaxPositions ?? undefined },
      forward: (i: ModelInputs) => {
        const e = expand(i.inputIds.shape[0]);
        return model.forward({
          inputIds: e.ids, attentionMask: e.m, encoderOutputs: e.h, decoderInputIds: i.inputIds,
          decoderAttentionMask: i.attentionMask ?? null, pastKeyValues: i.pastKeyValues ?? null, useCache: i.useCache,
        });
      },
    };
    const prompt = tensor(new Int32Array(b).fill(start), [b, 1], { dtype: 'int32' });
    owned.push(prompt);
    return gen(decoder, prompt, { ...opts, attentionMask: null, eosTokenId: eos, padTokenId: pad });
  } finally {
    for (const t of owned) t.dispose();
    if (wasTraining) model.train!(true);
  }
}
