// Where checkpoint tensors go when a model loads in 4 bit: a float weight of a Linear4bit
// placeholder is quantized as it is read (piece by piece for [out, in] weights), and the
// bitsandbytes entries of an already-quantized weight ("<path>.weight" uint8 plus
// "<path>.weight.absmax", ".quant_map", ".nested_*", ".quant_state.bitsandbytes__nf4") are
// gathered until complete, then installed. Shared by loadModelIn4bit (tensors from an
// iterable) and the from-folder loader (tensors read from safetensors files on demand).
import { Tensor } from '../tensor/tensor.js';
import type { Linear4bit } from './linear4bit.js';
import { StoredTensor, quantizedFromTensors } from './serialize.js';

/** How the source layer stored its weight: Linear [out, in] or GPT-2's Conv1D [in, out]. */
export type WeightLayout = 'linear' | 'conv1d';

const STATE_PARTS = ['absmax', 'quant_map', 'nested_absmax', 'nested_quant_map'];

function release(t: StoredTensor): void { if (t instanceof Tensor) t.dispose(); }

export class Load4bitSink {
  /** Layers quantized from float weights. */
  readonly quantized: string[] = [];
  /** Layers installed from bitsandbytes entries. */
  readonly prequantized: string[] = [];
  private readonly pending = new Map<string, Map<string, StoredTensor>>();

  constructor(private readonly layers: Map<string, { mod: Linear4bit; layout: WeightLayout }>) {}

  /** Paths of the 4-bit layers this sink fills. */
  get paths(): string[] { return [...this.layers.keys()]; }

  /** The 4-bit layer a model key belongs to ("<p>.weight" or one of its state entries), else null. */
  layerOf(key: string): string | null {
    if (key.endsWith('.weight') && this.layers.has(key.slice(0, -7))) return key.slice(0, -7);
    for (let i = key.indexOf('.weight.'); i >= 0; i = key.indexOf('.weight.', i + 1)) {
      const p = key.slice(0, i), rest = key.slice(i + 8);
      if (this.layers.has(p) && (STATE_PARTS.includes(rest) || rest.startsWith('quant_state.'))) return p;
    }
    return null;
  }

  /**
   * A float weight for layer p, stored with `shape` as `dtype` ('float32', 'bfloat16', ...):
   * read(start, out) gives its elements [start, start + out.length) as float32.
   */
  floatWeight(p: string, shape: number[], dtype: string, read: (start: number, out: Float32Array) => void): void {
    const { mod, layout } = this.layers.get(p)!;
    const inF = mod.inFeatures, outF = mod.outFeatures;
    const want = layout === 'conv1d' ? [inF, outF] : [outF, inF];
    if (shape.length !== 2 || shape[0] !== want[0] || shape[1] !== want[1]) {
      throw new Error(`${p}.weight: checkpoint shape [${shape.join(', ')}] vs model shape [${want.join(', ')}]`);
    }
    if (layout === 'linear') mod.quantizeStreaming(read, dtype);
    else {
      // [in, out] rows are columns of bnb's [out, in]: transpose whole (GPT-2-sized layers).
      const w = new Float32Array(inF * outF), t = new Float32Array(inF * outF);
      read(0, w);
      for (let i = 0; i < inF; i++) for (let o = 0; o < outF; o++) t[o * inF + i] = w[i * outF + o];
      mod.quantizeWeight(t, dtype);
    }
    this.quantized.push(p);
  }

  /** One bitsandbytes entry (packed weight or state) of layer p; installs the layer once complete. */
  stateEntry(p: string, key: string, t: StoredTensor): void {
    let parts = this.pending.get(p);
    if (!parts) { parts = new Map(); this.pending.set(p, parts); }
    parts.set(key, t);
    const w = p + '.weight';
    const qsKey = [...parts.keys()].find((k) => k.startsWith(w + '.quant_state.'));
    if (!parts.has(w) || !qsKey || !parts.has(w + '.absmax') || !parts.has(w + '.quant_map')) return;
    const meta = parts.get(qsKey)!;
    const bytes = meta instanceof Tensor ? Uint8Array.from(meta.ints) : meta;
    let nested: boolean;
    try { nested = 'nested_blocksize' in JSON.parse(new TextDecoder().decode(bytes)); }
    catch (e) { throw new Error(`${qsKey}: not valid JSON (${(e as Error).message})`); }
    if (nested && !(parts.has(w + '.nested_absmax') && parts.has(w + '.nested_quant_map'))) return;
    this.layers.get(p)!.mod.loadQuantized(quantizedFromTensors(w, parts));
    for (const v of parts.values()) release(v);
    this.pending.delete(p);
    this.prequantized.push(p);
  }

  /** Layers whose bitsandbytes state is incomplete (their tensors are released), described. */
  incomplete(): string[] {
    const out: string[] = [];
    for (const [p, parts] of this.pending) {
      out.push(`${p}.weight (incomplete 4-bit state: have ${[...parts.keys()].join(', ')})`);
      for (const t of parts.values()) release(t);
    }
    this.pending.clear();
    return out;
  }

  /** Layers still without a weight (nothing of theirs arrived). */
  unloaded(): string[] {
    return [...this.layers].filter(([p, l]) => !l.mod.isLoaded && !this.pending.has(p)).map(([p]) => p);
  }
}
