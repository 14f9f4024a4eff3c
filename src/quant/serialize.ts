// bitsandbytes' state-dict layout for a Linear4bit weight (QuantState.as_dict(packed=True)):
//   <w>                                   uint8 [ceil(n/2), 1]  packed codes
//   <w>.absmax                            uint8 (nested) or float32 [blocks]
//   <w>.quant_map                         float32 [16]
//   <w>.nested_absmax, <w>.nested_quant_map   float32 (nested only)
//   <w>.quant_state.bitsandbytes__nf4     uint8: UTF-8 JSON of the non-tensor fields
// where <w> is "<module path>.weight". Byte tensors travel as int32 Tensors (values 0..255)
// because Tensor has no uint8 dtype; isUint8Key() tells a writer which names bnb stores as U8.
import { Tensor } from '../tensor/tensor.js';
import { tensor } from '../tensor/ops/basic.js';
import type { Quantized4bit, QuantState } from './nf4.js';

const QS_SUFFIX = '.quant_state.bitsandbytes__';

/** Python's repr(float): shortest round-trip digits, exponent form below 1e-4 or from 1e16. */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN'; // json.dumps writes NaN / Infinity
  if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mant, expStr] = x.toExponential().split('e');
  const exp = Number(expStr);
  const neg = mant.startsWith('-');
  const digits = mant.replace('-', '').replace('.', '');
  const sign = neg ? '-' : '';
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  const intLen = exp + 1;
  if (digits.length <= intLen) return `${sign}${digits}${'0'.repeat(intLen - digits.length)}.0`;
  return `${sign}${digits.slice(0, intLen)}.${digits.slice(intLen)}`;
}

/** The JSON bnb packs into quant_state.bitsandbytes__nf4 (json.dumps, default separators). */
export function quantStateJson(qs: QuantState): string {
  const parts = [
    `"quant_type": "${qs.quantType}"`, `"blocksize": ${qs.blocksize}`, `"dtype": "${qs.dtype}"`,
    `"shape": [${qs.shape.join(', ')}]`,
  ];
  if (qs.nested) {
    parts.push(`"nested_blocksize": ${qs.nested.blocksize}`, `"nested_dtype": "${qs.nested.dtype}"`,
      `"nested_offset": ${pythonFloatRepr(qs.nested.offset)}`);
  }
  return `{${parts.join(', ')}}`;
}

function bytesTensor(b: Uint8Array, shape: number[]): Tensor {
  return tensor(Int32Array.from(b), shape, { dtype: 'int32' });
}

/**
 * For an int32 Tensor produced here: true when bitsandbytes stores that name as uint8 (U8 in
 * safetensors): the packed "<path>.weight", a nested "<...>.absmax" and the quant_state blob.
 */
export function isUint8Key(name: string): boolean {
  return name.includes(QS_SUFFIX) || name.endsWith('.weight') || (name.endsWith('.absmax') && !name.endsWith('.nested_absmax'));
}

/** The state tensors of one 4-bit weight under prefix "<path>.weight" (the packed weight excluded). */
export function quantStateToTensors(prefix: string, qs: QuantState): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  const nb = qs.absmax.length;
  out.set(`${prefix}.absmax`, qs.absmax instanceof Uint8Array ? bytesTensor(qs.absmax, [nb]) : tensor(new Float32Array(qs.absmax), [nb]));
  out.set(`${prefix}.quant_map`, tensor(new Float32Array(qs.code), [qs.code.length]));
  if (qs.nested) {
    out.set(`${prefix}.nested_absmax`, tensor(new Float32Array(qs.nested.absmax), [qs.nested.absmax.length]));
    out.set(`${prefix}.nested_quant_map`, tensor(new Float32Array(qs.nested.code), [qs.nested.code.length]));
  }
  const json = new TextEncoder().encode(quantStateJson(qs));
  out.set(`${prefix}${QS_SUFFIX}${qs.quantType}`, bytesTensor(json, [json.length]));
  return out;
}

/** Packed weight plus its state: everything bnb's Linear4bit writes for "<prefix>" = "<path>.weight". */
export function quantizedToTensors(prefix: string, q: Quantized4bit): Map<string, Tensor> {
  const out = new Map<string, Tensor>([[prefix, bytesTensor(q.packed, [q.packed.length, 1])]]);
  for (const [k, v] of quantStateToTensors(prefix, q.state)) out.set(k, v);
  return out;
}

/** A tensor as it comes from a reader: a Tensor (uint8 widened to int32) or raw bytes. */
export type StoredTensor = Tensor | Uint8Array;

function toBytes(t: StoredTensor, name: string): Uint8Array {
  if (t instanceof Uint8Array) return t;
  if (t.dtype !== 'int32') throw new Error(`${name}: expected uint8 data (read as int32), got ${t.dtype}`);
  const v = t.ints, out = new Uint8Array(v.length);
  for (let i = 0; i < v.length; i++) {
    if (v[i] < 0 || v[i] > 255) throw new Error(`${name}: value ${v[i]} at ${i} is not a byte`);
    out[i] = v[i];
  }
  return out;
}

function toF32(t: StoredTensor, name: string): Float32Array {
  if (t instanceof Uint8Array) throw new Error(`${name}: expected float32 data, got raw bytes`);
  return t.dtype === 'float32' ? new Float32Array(t.data) : t.toFloat32Array();
}

/** Names of the quant-state entries of "<prefix>" present in a map (to find what belongs to a weight). */
export function quantStateKeys(prefix: string, names: Iterable<string>): string[] {
  const out: string[] = [];
  for (const n of names) if (n.startsWith(prefix + '.')) {
    const rest = n.slice(prefix.length + 1);
    if (['absmax', 'quant_map', 'nested_absmax', 'nested_quant_map'].includes(rest) || rest.startsWith('quant_state.')) out.push(n);
  }
  return out;
}

/** Rebuilds a QuantState from the entries bnb (or quantStateToTensors) wrote under prefix "<path>.weight". */
export function quantStateFromTensors(prefix: string, map: Map<string, StoredTensor>): QuantState {
  const qsKeys = [...map.keys()].filter((k) => k.startsWith(prefix + QS_SUFFIX));
  if (qsKeys.length !== 1) {
    throw new Error(`${prefix}: expected one '${prefix}${QS_SUFFIX}<type>' entry, found ${qsKeys.length}${qsKeys.length ? ': ' + qsKeys.join(', ') : ''}`);
  }
  const qsName = qsKeys[0];
  const quantType = qsName.slice(prefix.length + QS_SUFFIX.length);
  if (quantType !== 'nf4') throw new Error(`${prefix}: quant_type '${quantType}' is not supported (only nf4)`);
  let meta: Record<string, unknown>;
  try { meta = JSON.parse(new TextDecoder().decode(toBytes(map.get(qsName)!, qsName))); }
  catch (e) { throw new Error(`${qsName}: not valid JSON (${(e as Error).message})`); }
  const need = (k: string): StoredTensor => {
    const t = map.get(`${prefix}.${k}`);
    if (!t) throw new Error(`${prefix}: missing '${prefix}.${k}' for the 4-bit quant state`);
    return t;
  };
  const shape = meta.shape as number[];
  if (!Array.isArray(shape) || !shape.every((s) => Number.isInteger(s) && s >= 0)) throw new Error(`${qsName}: bad shape ${JSON.stringify(meta.shape)}`);
  const blocksize = meta.blocksize as number;
  if (!Number.isInteger(blocksize) || blocksize <= 0) throw new Error(`${qsName}: bad blocksize ${JSON.stringify(meta.blocksize)}`);
  const nestedMeta = meta.nested_blocksize !== undefined;
  const nestedTensors = map.has(`${prefix}.nested_absmax`);
  if (nestedMeta !== nestedTensors) throw new Error(`${prefix}: nested_* metadata and nested_absmax must come together`);
  const code = toF32(need('quant_map'), `${prefix}.quant_map`);
  if (code.length !== 16) throw new Error(`${prefix}.quant_map: expected 16 values, got ${code.length}`);
  const qs: QuantState = {
    quantType: 'nf4', blocksize, dtype: String(meta.dtype ?? 'float32'), shape,
    absmax: nestedMeta ? toBytes(need('absmax'), `${prefix}.absmax`) : toF32(need('absmax'), `${prefix}.absmax`),
    code, nested: null,
  };
  if (nestedMeta) {
    const ncode = toF32(need('nested_quant_map'), `${prefix}.nested_quant_map`);
    if (ncode.length !== 256) throw new Error(`${prefix}.nested_quant_map: expected 256 values, got ${ncode.length}`);
    qs.nested = {
      absmax: toF32(need('nested_absmax'), `${prefix}.nested_absmax`), code: ncode,
      blocksize: meta.nested_blocksize as number, offset: Math.fround(Number(meta.nested_offset)),
      dtype: String(meta.nested_dtype ?? 'float32'),
    };
  }
  const nb = Math.ceil(shape.reduce((a, b) => a * b, 1) / blocksize);
  if (qs.absmax.length !== nb) throw new Error(`${prefix}.absmax: ${qs.absmax.length} values, shape [${shape}] with blocksize ${blocksize} needs ${nb}`);
  if (qs.nested && qs.nested.absmax.length !== Math.ceil(nb / qs.nested.blocksize)) {
    throw new Error(`${prefix}.nested_absmax: ${qs.nested.absmax.length} values, needs ${Math.ceil(nb / qs.nested.blocksize)}`);
  }
  return qs;
}

/** Packed weight + state from a map holding "<prefix>" and its state entries. */
export function quantizedFromTensors(prefix: string, map: Map<string, StoredTensor>): Quantized4bit {
  const w = map.get(prefix);
  if (!w) throw new Error(`missing packed 4-bit weight '${prefix}'`);
  const state = quantStateFromTensors(prefix, map);
  const packed = toBytes(w, prefix);
  const n = state.shape.reduce((a, b) => a * b, 1);
  if (packed.length !== Math.ceil(n / 2)) throw new Error(`${prefix}: ${packed.length} packed bytes, shape [${state.shape}] needs ${Math.ceil(n / 2)}`);
  return { packed, state };
}
