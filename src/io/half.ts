// float32 <-> float16 / bfloat16 bit conversions used when reading and writing checkpoints.
// Rounding is to nearest even, as torch's .half() / .bfloat16() do, so files we write match
// the ones PyTorch writes for the same float32 values.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function f32ToF16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | (mant ? 0x7e00 : 0x7c00); // NaN (quiet, as torch) / inf
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    // Subnormal half (or zero): shift the implicit-1 mantissa into place, then round.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // may carry into the exponent: correct
  return sign | h;
}

export function f32ToF16(x: Float32Array, out: Uint16Array): void {
  for (let i = 0; i < x.length; i++) out[i] = f32ToF16Bits(x[i]);
}

export function f32ToBf16(x: Float32Array, out: Uint16Array): void {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  for (let i = 0; i < u.length; i++) {
    const b = u[i];
    if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff)) { out[i] = 0x7fc0; continue; } // NaN -> canonical NaN, as torch
    out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
}

export function bf16ToF32(x: Uint16Array, out: Float32Array): void {
  const u = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < x.length; i++) u[i] = x[i] << 16;
}
