// The reference backend: plain loops a reader can check line by line. Slow on purpose;
// every faster kernel is tested against these.
import type { Backend, BinaryOp, F32, I32, UnaryOp } from '../backend.js';
import { dropoutHash, dropoutThreshold, erf } from './math.js';
import { attentionBackward, attentionForward } from './attention.js';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const INV_SQRT2 = 1 / Math.SQRT2;

export function unaryF(op: UnaryOp, x: number): number {
  switch (op) {
    case 'neg': return -x;
    case 'exp': return Math.exp(x);
    case 'log': return Math.log(x);
    case 'sqrt': return Math.sqrt(x);
    case 'rsqrt': return 1 / Math.sqrt(x);
    case 'tanh': return Math.tanh(x);
    case 'relu': return x > 0 ? x : 0;
    case 'sigmoid': return 1 / (1 + Math.exp(-x));
    case 'silu': return x / (1 + Math.exp(-x));
    case 'gelu': return 0.5 * x * (1 + erf(x * INV_SQRT2));
    case 'gelu_tanh': return 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)));
    case 'abs': return Math.abs(x);
    case 'square': return x * x;
    case 'recip': return 1 / x;
  }
}

export function unaryGrad(op: UnaryOp, x: number): number {
  switch (op) {
    case 'neg': return -1;
    case 'exp': return Math.exp(x);
    case 'log': return 1 / x;
    case 'sqrt': return 0.5 / Math.sqrt(x);
    case 'rsqrt': return -0.5 / (x * Math.sqrt(x));
    case 'tanh': { const t = Math.tanh(x); return 1 - t * t; }
    case 'relu': return x > 0 ? 1 : 0;
    case 'sigmoid': { const s = 1 / (1 + Math.exp(-x)); return s * (1 - s); }
    case 'silu': { const s = 1 / (1 + Math.exp(-x)); return s * (1 + x * (1 - s)); }
    case 'gelu': {
      const cdf = 0.5 * (1 + erf(x * INV_SQRT2));
      const pdf = Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
      return cdf + x * pdf;
    }
    case 'gelu_tanh': {
      const u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
      const t = Math.tanh(u);
      const du = SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x);
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du;
    }
    case 'abs': return x > 0 ? 1 : x < 0 ? -1 : 0;
    case 'square': return 2 * x;
    case 'recip': return -1 / (x * x);
  }
}

function binaryF(op: BinaryOp, a: number, b: number): number {
  switch (op) {
    case 'add': return a + b;
    case 'sub': return a - b;
    case 'mul': return a * b;
    case 'div': return a / b;
    case 'max': return a > b ? a : b;
    case 'min': return a < b ? a : b;
    case 'pow': return Math.pow(a, b);
  }
}

/** Calls fn(outIndex, offsetA, offsetB) for every element of outShape in row-major order. */
function forEachBroadcast(outShape: number[], sa: number[], sb: number[],
  fn: (i: number, oa: number, ob: number) => void): void {
  const nd = outShape.length;
  const idx = new Array<number>(nd).fill(0);
  let total = 1;
  for (const s of outShape) total *= s;
  let oa = 0, ob = 0;
  for (let i = 0; i < total; i++) {
    fn(i, oa, ob);
    for (let d = nd - 1; d >= 0; d--) {
      idx[d]++;
      oa += sa[d]; ob += sb[d];
      if (idx[d] < outShape[d]) break;
      oa -= sa[d] * outShape[d]; ob -= sb[d] * outShape[d];
      idx[d] = 0;
    }
  }
}

export const referenceBackend: Backend = {
  name: 'reference',

  matmul(a, b, c, batch, m, n, k, transA, transB, strideA, strideB, alpha, beta) {
    for (let bi = 0; bi < batch; bi++) {
      const ao = bi * strideA, bo = bi * strideB, co = bi * m * n;
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let p = 0; p < k; p++) {
            const av = transA ? a[ao + p * m + i] : a[ao + i * k + p];
            const bv = transB ? b[bo + j * k + p] : b[bo + p * n + j];
            s += av * bv;
          }
          const prev = beta === 0 ? 0 : beta * c[co + i * n + j];
          c[co + i * n + j] = alpha * s + prev;
        }
      }
    }
  },

  unary(op, x, out) {
    for (let i = 0; i < x.length; i++) out[i] = unaryF(op, x[i]);
  },

  unaryBackward(op, x, gy, gx) {
    for (let i = 0; i < x.length; i++) gx[i] = gy[i] * unaryGrad(op, x[i]);
  },

  binary(op, a, aStrides, b, bStrides, out, outShape) {
    forEachBroadcast(outShape, aStrides, bStrides, (i, oa, ob) => { out[i] = binaryF(op, a[oa], b[ob]); });
  },

  dropoutMask(out, p, seed) {
    const thr = dropoutThreshold(p), scale = 1 / (1 - p);
    for (let i = 0; i < out.length; i++) out[i] = dropoutHash(seed >>> 0, i) >= thr ? scale : 0;
  },

  dropoutApply(x, out, p, seed) {
    const thr = dropoutThreshold(p), scale = Math.fround(1 / (1 - p));
    for (let i = 0; i < x.length; i++) out[i] = x[i] * (dropoutHash(seed >>> 0, i) >= thr ? scale : 0);
  },

  affine(x, s, t, out) {
    for (let i = 0; i < x.length; i++) out[i] = x[i] * s + t;
  },

  axpy(alpha, x, y) {
    for (let i = 0; i < x.length; i++) y[i] += alpha * x[i];
  },

  sumMid(x, outer, mid, inner, out) {
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        let s = 0;
        for (let j = 0; j < mid; j++) s += x[(o * mid + j) * inner + i];
        out[o * inner + i] = s;
      }
    }
  },

  maxMid(x, outer, mid, inner, out) {
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        let s = -Infinity;
        for (let j = 0; j < mid; j++) s = Math.max(s, x[(o * mid + j) * inner + i]);
        out[o * inner + i] = s;
      }
    }
  },

  permute(x, shape, perm, out) {
    const nd = shape.length;
    const inStrides = new Array<number>(nd);
    let s = 1;
    for (let d = nd - 1; d >= 0; d--) { inStrides[d] = s; s *= shape[d]; }
    const outShape = perm.map((p) => shape[p]);
    const strides = perm.map((p) => inStrides[p]);
    this.stridedCopy(x, 0, strides, outShape, out);
  },

  stridedCopy(x, offset, strides, outShape, out) {
    const zeros = new Array<number>(outShape.length).fill(0);
    forEachBroadcast(outShape, strides, zeros, (i, ox) => { out[i] = x[offset + ox]; });
  },

  stridedAdd(gOut, outShape, gx, offset, strides) {
    const zeros = new Array<number>(outShape.length).fill(0);
    forEachBroadcast(outShape, strides, zeros, (i, ox) => { gx[offset + ox] += gOut[i]; });
  },

  softmax(x, rows, cols, out) {
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let mx = -Infinity;
      for (let j = 0; j < cols; j++) mx = Math.max(mx, x[o + j]);
      let s = 0;
      for (let j = 0; j < cols; j++) { const e = mx === -Infinity ? 0 : Math.exp(x[o + j] - mx); out[o + j] = e; s += e; }
      for (let j = 0; j < cols; j++) out[o + j] = s > 0 ? out[o + j] / s : 0;
    }
  },

  softmaxBackward(y, gy, rows, cols, gx) {
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let dot = 0;
      for (let j = 0; j < cols; j++) dot += y[o + j] * gy[o + j];
      for (let j = 0; j < cols; j++) gx[o + j] = y[o + j] * (gy[o + j] - dot);
    }
  },

  logSoftmax(x, rows, cols, out) {
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let mx = -Infinity;
      for (let j = 0; j < cols; j++) mx = Math.max(mx, x[o + j]);
      let s = 0;
      for (let j = 0; j < cols; j++) s += Math.exp(x[o + j] - mx);
      const lse = mx + Math.log(s);
      for (let j = 0; j < cols; j++) out[o + j] = x[o + j] - lse;
    }
  },

  logSoftmaxBackward(y, gy, rows, cols, gx) {
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let s = 0;
      for (let j = 0; j < cols; j++) s += gy[o + j];
      for (let j = 0; j < cols; j++) gx[o + j] = gy[o + j] - Math.exp(y[o + j]) * s;
    }
  },

  crossEntropy(x, targets, rows, cols, ignoreIndex, loss, lse) {
    let count = 0;
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let mx = -Infinity;
      for (let j = 0; j < cols; j++) mx = Math.max(mx, x[o + j]);
      let s = 0;
      for (let j = 0; j < cols; j++) s += Math.exp(x[o + j] - mx);
      lse[r] = mx + Math.log(s);
      const t = targets[r];
      if (t === ignoreIndex) { loss[r] = 0; continue; }
      if (t < 0 || t >= cols) throw new RangeError(`cross-entropy target ${t} out of range [0, ${cols}) at row ${r}`);
      loss[r] = lse[r] - x[o + t];
      count++;
    }
    return count;
  },

  crossEntropyBackward(x, targets, lse, gLoss, rows, cols, ignoreIndex, gx) {
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const t = targets[r];
      if (t === ignoreIndex) { for (let j = 0; j < cols; j++) gx[o + j] = 0; continue; }
      const g = gLoss[r];
      for (let j = 0; j < cols; j++) gx[o + j] = Math.exp(x[o + j] - lse[r]) * g;
      gx[o + t] -= g;
    }
  },

  layerNorm(x, w, b, rows, cols, eps, out, mean, rstd) {
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let m = 0;
      for (let j = 0; j < cols; j++) m += x[o + j];
      m /= cols;
      let v = 0;
      for (let j = 0; j < cols; j++) { const d = x[o + j] - m; v += d * d; }
      v /= cols;
      const rs = 1 / Math.sqrt(v + eps);
      mean[r] = m; rstd[r] = rs;
      for (let j = 0; j < cols; j++) {
        let y = (x[o + j] - m) * rs;
        if (w) y *= w[j];
        if (b) y += b[j];
        out[o + j] = y;
      }
    }
  },

  layerNormBackward(x, w, mean, rstd, gy, rows, cols, gx, gw, gb) {
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const m = mean[r], rs = rstd[r];
      // dxhat = gy * w; gx = rs * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
      let sumD = 0, sumDX = 0;
      for (let j = 0; j < cols; j++) {
        const xh = (x[o + j] - m) * rs;
        const d = gy[o + j] * (w ? w[j] : 1);
        sumD += d; sumDX += d * xh;
        if (gw) gw[j] += gy[o + j] * xh;
        if (gb) gb[j] += gy[o + j];
      }
      sumD /= cols; sumDX /= cols;
      for (let j = 0; j < cols; j++) {
        const xh = (x[o + j] - m) * rs;
        const d = gy[o + j] * (w ? w[j] : 1);
        gx[o + j] = rs * (d - sumD - xh * sumDX);
      }
    }
  },

  rmsNorm(x, w, rows, cols, eps, out, rstd) {
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let ss = 0;
      for (let j = 0; j < cols; j++) ss += x[o + j] * x[o + j];
      const rs = 1 / Math.sqrt(ss / cols + eps);
      rstd[r] = rs;
      for (let j = 0; j < cols; j++) out[o + j] = x[o + j] * rs * (w ? w[j] : 1);
    }
  },

  rmsNormBackward(x, w, rstd, gy, rows, cols, gx, gw) {
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const rs = rstd[r];
      let dot = 0;
      for (let j = 0; j < cols; j++) {
        const d = gy[o + j] * (w ? w[j] : 1);
        dot += d * x[o + j];
        if (gw) gw[j] += gy[o + j] * x[o + j] * rs;
      }
      const c = dot * rs * rs * rs / cols;
      for (let j = 0; j < cols; j++) {
        const d = gy[o + j] * (w ? w[j] : 1);
        gx[o + j] = d * rs - x[o + j] * c;
      }
    }
  },

  embedding(table, ids, dim, out) {
    const rows = table.length / dim;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id < 0 || id >= rows) throw new RangeError(`embedding id ${id} out of range [0, ${rows}) at position ${i}`);
      for (let j = 0; j < dim; j++) out[i * dim + j] = table[id * dim + j];
    }
  },

  embeddingBf16(table, ids, dim, out) {
    const rows = table.length / dim;
    const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id < 0 || id >= rows) throw new RangeError(`embedding id ${id} out of range [0, ${rows}) at position ${i}`);
      for (let j = 0; j < dim; j++) o[i * dim + j] = table[id * dim + j] << 16;
    }
  },

  // The oracle of a bf16-weight GEMM: widen W exactly, then the float32 GEMM above.
  // roundA (autocast): the activation rounded to bf16 first.
  matmulBf16(a, w, c, m, n, k, transB, alpha, beta, roundA = false) {
    if (w.length < n * k) throw new RangeError(`matmulBf16: w has ${w.length} elements, needs ${n * k}`);
    const wf = new Float32Array(n * k);
    this.bf16ToF32(w.subarray(0, n * k), wf);
    this.matmul(roundA ? roundedBf16(this, a, m * k) : a, wf, c, 1, m, n, k, false, transB, 0, 0, alpha, beta);
  },

  // The oracle of autocast GEMMs: both operands rounded to bf16 values, then float32 matmul.
  matmulAutocast(a, b, c, batch, m, n, k, transA, transB, strideA, strideB, alpha, beta) {
    if (batch === 0) return;
    const ra = roundedBf16(this, a, (batch - 1) * strideA + m * k);
    const rb = roundedBf16(this, b, (batch - 1) * strideB + k * n);
    this.matmul(ra, rb, c, batch, m, n, k, transA, transB, strideA, strideB, alpha, beta);
  },

  embeddingBackward(gy, ids, dim, gTable) {
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      for (let j = 0; j < dim; j++) gTable[id * dim + j] += gy[i * dim + j];
    }
  },

  rope(x, cos, sin, pos, b, h, t, d, inverse, out) {
    const half = d / 2;
    const sgn = inverse ? -1 : 1;
    for (let bi = 0; bi < b; bi++) {
      for (let hi = 0; hi < h; hi++) {
        for (let ti = 0; ti < t; ti++) {
          const p = pos.length === t ? pos[ti] : pos[bi * t + ti];
          const o = ((bi * h + hi) * t + ti) * d;
          for (let i = 0; i < half; i++) {
            const c = cos[p * half + i], s = sgn * sin[p * half + i];
            const x1 = x[o + i], x2 = x[o + i + half];
            out[o + i] = x1 * c - x2 * s;
            out[o + i + half] = x2 * c + x1 * s;
          }
        }
      }
    }
  },

  adamw(p, g, m, v, lr, beta1, beta2, eps, weightDecay, step) {
    const bc1 = 1 - Math.pow(beta1, step);
    const bc2 = 1 - Math.pow(beta2, step);
    for (let i = 0; i < p.length; i++) {
      m[i] = beta1 * m[i] + (1 - beta1) * g[i];
      v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
      const mh = m[i] / bc1, vh = v[i] / bc2;
      p[i] = p[i] - lr * weightDecay * p[i] - lr * mh / (Math.sqrt(vh) + eps);
    }
  },

  attention: attentionForward,
  attentionBackward,

  dequantizeNF4(packed, absmax, blocksize, code, start, count, out) {
    const b0 = Math.floor(start / blocksize);
    for (let i = 0; i < count; i++) {
      const j = start + i, byte = packed[Math.floor(j / 2)];
      const nibble = j % 2 === 0 ? byte >> 4 : byte & 15; // even elements in the high nibble
      // Both factors are float32, so the double product is exact and the store rounds it
      // once: the float32 multiply.
      out[i] = code[nibble] * absmax[Math.floor(j / blocksize) - b0];
    }
  },

  dequantizeAbsmax(q, absmax, blocksize, code, offset, n, out) {
    const f = Math.fround;
    for (let i = 0; i < n; i++) out[i] = f(f(code[q[i]] * absmax[Math.floor(i / blocksize)]) + offset);
  },

  bf16ToF32(x, out) {
    const u = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let i = 0; i < x.length; i++) u[i] = x[i] << 16;
  },

  f32ToBf16(x, out) {
    const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
    for (let i = 0; i < x.length; i++) {
      const bits = u[i];
      if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) { out[i] = (bits >>> 16) | 0x40; continue; }
      const rounding = 0x7fff + ((bits >>> 16) & 1);
      out[i] = ((bits + rounding) >>> 16) & 0xffff;
    }
  },
};

/** A new float32 copy of x[0, n) with every element rounded to its nearest-even bf16 value. */
function roundedBf16(be: Backend, x: F32, n: number): F32 {
  const h = new Uint16Array(n), out = new Float32Array(n);
  be.f32ToBf16(x.subarray(0, n), h);
  be.bf16ToF32(h, out);
  return out;
}

export type { F32, I32 };
