// erf to near float64 precision, so float64 finite-difference checks of GELU hold:
// a Maclaurin series for small |x| and the erfc continued fraction (Lentz) beyond.
export function erf(x: number): number {
  if (x === Infinity || x === -Infinity) return Math.sign(x); // the continued fraction gives NaN there
  const ax = Math.abs(x);
  if (ax < 2.5) {
    // Maclaurin series: erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
    let term = ax, sum = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 80; n++) {
      term *= -x2 / n;
      const t = term / (2 * n + 1);
      sum += t;
      if (Math.abs(t) < 1e-17 * Math.abs(sum)) break;
    }
    const r = (2 / Math.sqrt(Math.PI)) * sum;
    return x < 0 ? -r : r;
  }
  // Continued fraction for erfc (Lentz), converges fast for |x| >= 2.5.
  const tiny = 1e-300;
  let f = ax, C = ax, D = 0;
  for (let n = 1; n < 200; n++) {
    const an = n / 2;
    D = ax + an * D; D = D === 0 ? tiny : 1 / D;
    C = ax + an / C; if (C === 0) C = tiny;
    const delta = C * D;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-ax * ax) / (f * Math.sqrt(Math.PI));
  const r = 1 - erfc;
  return x < 0 ? -r : r;
}

/**
 * Counter-based hash for dropout masks: element i of a mask with this seed. Every backend
 * (TypeScript, C++, CUDA) computes the same 32-bit integer, so masks agree bit for bit and
 * a device can make them without a host random stream. Two rounds of murmur3's finalizer.
 */
export function dropoutHash(seed: number, i: number): number {
  let z = (seed ^ Math.imul(i + 1, 0x9e3779b9)) >>> 0;
  z = fmix32(z);
  z = fmix32((z + seed) >>> 0);
  return z;
}

function fmix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Elements with hash below this are dropped: floor(p * 2^32). */
export function dropoutThreshold(p: number): number { return Math.floor(p * 4294967296); }
